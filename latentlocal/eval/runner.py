"""Every method on every problem of a dataset, one model load, resumable (``latentlocal bench``).

Methods are given as ``NAME[:key=value;key=value]``, so variants of one method can sit side by
side (``sc:temperature=0.4``, ``soft-thinking:noise=gumbel``); the full spec is the method's
label in ``results.jsonl`` and in the report.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from latentlocal.answers import is_correct
from latentlocal.errors import LatentLocalError
from latentlocal.datasets import Problem
from latentlocal.eval.report import RESULTS_NAME, append_result, done_keys
from latentlocal.events import Summary
from latentlocal.progress import ProgressBar

# Summary extras worth keeping per problem (scalars, and dicts of scalars flattened one level:
# results.jsonl stays one short line each)
_KEEP_TYPES = (int, float, str, bool, type(None))


def parse_method_spec(spec: str, base: argparse.Namespace) -> tuple[str, str, dict[str, Any]]:
    """``name:key=value;...`` -> (label, canonical name, the method's options: those set on the
    command line, then the label's, each typed and checked by the method's settings)."""
    from latentlocal.methods.registry import canonical, options_from_args, parse_options

    label = spec.strip()
    name, _, rest = label.partition(":")
    method = canonical(name)
    overrides: dict[str, str] = {}
    for item in filter(None, (x.strip() for x in rest.split(";"))):
        key, eq, raw = item.partition("=")
        if not eq:
            raise LatentLocalError(f"method option {item!r} in {spec!r} needs the form key=value")
        overrides[key.strip()] = raw.strip()
    try:
        options = {**options_from_args(method, base), **parse_options(method, overrides)}
    except LatentLocalError as exc:
        raise LatentLocalError(f"in {spec!r}: {exc}") from None
    return label, method, options


def record_for(label: str, problem: Problem, summary: Summary, wall_s: float) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "method": label,
        "id": problem.id,
        "prediction": summary.answer,
        "gold": problem.gold,
        "correct": is_correct(summary.answer, problem.gold),
        "generated_tokens": summary.generated_tokens,
        "wall_s": round(wall_s, 4),
        "finish_reason": summary.finish_reason,
    }
    for key, val in summary.extra.items():
        if isinstance(val, _KEEP_TYPES) and key not in rec:
            rec[key] = val
        elif isinstance(val, dict):
            # One level of named counts (SEAL's thoughts per class) flattens to "thoughts.execution"
            for sub, v in val.items():
                if isinstance(v, _KEEP_TYPES) and f"{key}.{sub}" not in rec:
                    rec[f"{key}.{sub}"] = v
    if summary.settings:
        rec["settings"] = dict(summary.settings)  # the method's settings as run, one JSON object
    if "thoughts" not in summary.extra:
        # Methods that do not segment while decoding get SEAL's counts from their text, so a
        # report can put unsteered and steered thought counts side by side.
        from latentlocal.methods.seal.thoughts import count_labels, label_thought, text_thoughts

        for label, n in count_labels(label_thought(t) for t in text_thoughts(summary.text)).items():
            rec[f"thoughts.{label}"] = n
    return rec


def run_bench(
    engine: Any,
    problems: Sequence[Problem],
    methods: Sequence[tuple[str, Callable]],
    out_dir: Path,
    cancel: threading.Event | None = None,
    progress: ProgressBar | None = None,
) -> Path:
    """Run every (label, runner) on every problem not yet in ``out_dir/results.jsonl``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / RESULTS_NAME
    done = done_keys(results)
    # problem by problem, every method on each: a run stopped at any point leaves paired results
    todo = [(label, runner, p) for p in problems for label, runner in methods if (label, p.id) not in done]
    finished = len(methods) * len(problems) - len(todo)
    if progress is not None:
        progress.update(finished, "resuming" if finished else "", new=False,
                        total=len(methods) * len(problems))
    for label, runner, problem in todo:
        if cancel is not None and cancel.is_set():
            break
        t0 = time.perf_counter()
        summary = None
        for ev in runner(engine, problem.question, cancel):
            if isinstance(ev, Summary):
                summary = ev
        if summary is None or summary.finish_reason == "cancelled":
            break  # an unfinished problem is not a result
        append_result(results, record_for(label, problem, summary, time.perf_counter() - t0))
        finished += 1
        if progress is not None:
            progress.update(finished, f"{label} {problem.id}")
    return results
