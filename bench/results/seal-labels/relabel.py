"""Label the saved extraction traces with the old (bare-word) and the new (paper) rule.

usage (from the repository root): python bench/results/seal-labels/relabel.py vectors/X.seal.work
-> counts per rule, and the thoughts whose label changed. The rules are read from git: the old one
from 925b4bf~1, the new one from 925b4bf. Cue-forced thoughts keep their cue label under both
rules (as extraction does). The .txt files here are its output for the two shipped vectors.
"""
import json, subprocess, sys
from collections import Counter
from pathlib import Path

THOUGHTS = "latentlocal/methods/seal/thoughts.py"


def rule(rev):
    src = subprocess.run(["git", "show", f"{rev}:{THOUGHTS}"], check=True, capture_output=True,
                         text=True).stdout
    ns = {}
    exec(src[src.index("LABELS ="):src.index("def _bytes")], ns)
    return ns["label_thought"]

old = rule("925b4bf~1")
new = rule("925b4bf")
work = Path(sys.argv[1])
recs = [json.loads(l) for l in (work / "traces.jsonl").read_text().splitlines() if l.strip()]
recs = list({r["id"]: r for r in recs}.values())
cnt = {k: Counter() for k in ("old_all", "new_all", "old_used", "new_used", "saved_all")}
changed = []
n_all = n_used = 0
for r in recs:
    for t in r["thoughts"]:
        lo = t["cue"] or old(t["text"])
        ln = t["cue"] or new(t["text"])
        used = t["delimiter"] is not None
        cnt["old_all"][lo] += 1; cnt["new_all"][ln] += 1; cnt["saved_all"][t["label"]] += 1
        n_all += 1
        if used:
            cnt["old_used"][lo] += 1; cnt["new_used"][ln] += 1; n_used += 1
        if lo != ln:
            changed.append((r["id"], used, lo, ln, t["text"]))
print(f"traces {len(recs)}, thoughts {n_all} (with a delimiter: {n_used})")
for k, c in cnt.items():
    print(k, dict(sorted(c.items())))
print(f"changed label: {len(changed)} of {n_all} thoughts ({sum(u for _, u, *_ in changed)} of {n_used} used for the vector)")
for pid, used, lo, ln, text in changed:
    print(f"  {pid} {'used' if used else 'first'} {lo}->{ln}: {text[:110]!r}")
