"""Every method on every problem of a dataset, one model load, resumable (``latentlocal bench``).

Methods are given as ``NAME[:key=value;key=value]``, so variants of one method can sit side by
side (``sc:temperature=0.4``, ``soft-thinking:noise=gumbel``); the full spec is the method's
label in ``results.jsonl`` and in the report.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from latentlocal.answers import is_correct
from latentlocal.cpu_build import build_label
from latentlocal.errors import LatentLocalError
from latentlocal.datasets import Problem
from latentlocal.eval.report import RESULTS_NAME, append_result, done_keys, read_results
from latentlocal.events import Summary
from latentlocal.methods.chain import Chain, ChainBuilder
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


def check_resume(results: Path, settings: Mapping[str, Mapping[str, Any]],
                 problems: Sequence[Problem] = ()) -> None:
    """Refuse to resume a label whose finished results ran with other settings than
    ``settings[label]`` (a changed flag or a changed default): the report would pool both in one
    row. Rows that record no settings (older files) are not checked. A finished row whose
    problem (by id) now has another gold answer is refused too: the ids are the file's name and
    line, so another file of the same name, or an edited one, would keep the old rows."""
    if not results.exists():
        return
    want = {label: json.loads(json.dumps(dict(s))) for label, s in settings.items()}
    gold = {p.id: p.gold for p in problems}
    for rec in read_results(results):
        pid = str(rec["id"])
        if pid in gold and str(rec["gold"]) != str(gold[pid]):
            raise LatentLocalError(
                f"{results} holds a result for {pid} with gold answer {rec['gold']!r}, and the data "
                f"now gives {gold[pid]!r}: the file behind --data is another or has changed since. "
                "Use another --out (or delete the old rows to rerun them)")
        label, had = str(rec["method"]), rec.get("settings")
        if label not in want or not isinstance(had, dict) or had == want[label]:
            continue
        now = want[label]
        keys = [k for k in sorted(set(had) | set(now)) if had.get(k) != now.get(k)]
        diff = ", ".join(f"{k} {had.get(k)!r} there, {now.get(k)!r} now" for k in keys)
        name = label.partition(":")[0]
        raise LatentLocalError(
            f"{results} already holds {label!r} results made with other settings ({diff}); resuming "
            "would pool both in one row of the report. Use another --out, or give this run's method "
            f"a label of its own, e.g. '{name}:{keys[0]}={now.get(keys[0])}'")


def record_for(label: str, problem: Problem, summary: Summary, wall_s: float, batch: int = 1,
               threads: int | None = None, build: str | None = None,
               reasoning: str | None = None) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "method": label,
        "id": problem.id,
        "prediction": summary.answer,
        "gold": problem.gold,
        "correct": is_correct(summary.answer, problem.gold),
        "generated_tokens": summary.generated_tokens,
        # from the start of this problem to its end; with batch > 1 the problems overlap
        "wall_s": round(wall_s, 4),
        "finish_reason": summary.finish_reason,
        "batch": batch,  # problems decoded at once (bench --batch)
    }
    if threads is not None:
        # like the batch, the thread count moves llama.cpp's numerics and so single answers
        rec["threads"] = threads
    if build is not None:
        rec["build"] = build  # llama.cpp's backend and instruction sets (cpu_build.build_label)
    if reasoning is not None:
        rec["reasoning"] = reasoning  # EngineSettings.reasoning, on a model with think tokens
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


def _reasoning(engine: Any) -> str | None:
    """The engine's reasoning mode where it matters: on a model with think tokens."""
    model = getattr(engine, "model", None)
    if model is None or model.think_tokens() is None:
        return None
    return model.reasoning


def run_bench(
    engine: Any,
    problems: Sequence[Problem],
    methods: Sequence[tuple[str, Callable]],
    out_dir: Path,
    cancel: threading.Event | None = None,
    progress: ProgressBar | None = None,
    batch: int = 1,
    chains: Mapping[str, ChainBuilder] | None = None,
) -> Path:
    """Run every (label, runner) on every problem not yet in ``out_dir/results.jsonl``.

    ``batch`` > 1 decodes that many problems at once, each in its own sequence, through the
    chain builder ``chains[label]`` of every method (see :func:`batch_context`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / RESULTS_NAME
    done = done_keys(results)
    # problem by problem, every method on each: a run stopped at any point leaves paired results
    todo = [(label, runner, p) for p in problems for label, runner in methods if (label, p.id) not in done]
    finished = len(methods) * len(problems) - len(todo)
    if progress is not None:
        progress.update(finished, "resuming" if finished else "", new=False,
                        total=len(methods) * len(problems))
    conditions = {"threads": getattr(engine, "n_threads", None), "build": build_label(),
                  "reasoning": _reasoning(engine)}
    if batch > 1:
        if chains is None or any(label not in chains for label, _ in methods):
            raise ValueError("run_bench with batch > 1 needs a chain builder for every method")
        _run_batched(engine, [(label, p) for label, _, p in todo], chains, batch, results, cancel,
                     progress, finished, conditions)
        return results
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
        append_result(results, record_for(label, problem, summary, time.perf_counter() - t0,
                                          **conditions))
        finished += 1
        if progress is not None:
            progress.update(finished, f"{label} {problem.id}")
    return results


def batch_context(engine: Any, problems: Sequence[Problem], chains: Mapping[str, ChainBuilder],
                  batch: int) -> int:
    """KV cells ``batch`` problems may need at once: ``batch`` times the largest chain (prompt
    plus budget) of any method on any problem. Building a chain of each method here, before
    anything decodes, also runs the checks a method's first build makes (Soft Thinking's
    embedding-input parity check), so a refusal comes before any problem runs."""
    most = max((build(engine, p.question).cells for p in problems for build in chains.values()), default=0)
    return batch * most


def _run_batched(
    engine: Any,
    todo: Sequence[tuple[str, Problem]],
    chains: Mapping[str, ChainBuilder],
    batch: int,
    results: Path,
    cancel: threading.Event | None,
    progress: ProgressBar | None,
    finished: int,
    conditions: Mapping[str, Any],
) -> None:
    """``todo`` continuously batched: a problem starts in a sequence as soon as one is free and
    its KV cells fit; each finished problem's record is appended as it ends."""
    from latentlocal.batching import StepBatcher

    engine.clear()
    batcher = StepBatcher(engine, batch)
    items = iter(enumerate(todo))
    running: dict[int, tuple[str, Problem, float]] = {}

    def take() -> tuple[int, str, Problem, Chain] | None:
        nxt = next(items, None)
        if nxt is None:
            return None
        key, (label, problem) = nxt
        return key, label, problem, chains[label](engine, problem.question)

    waiting = take()
    try:
        while waiting is not None or batcher.active:
            stopping = cancel is not None and cancel.is_set()
            while not stopping and waiting is not None and (
                    batcher.fits_cells(waiting[3].cells) or not batcher.active):
                key, label, problem, chain = waiting
                running[key] = (label, problem, time.perf_counter())
                batcher.add_chain(key, chain, cancel)  # a cut budget's notice was logged
                waiting = take()
            if stopping and not batcher.active:
                break
            for key, ev in batcher.step():
                if not isinstance(ev, Summary):
                    continue
                label, problem, t0 = running.pop(key)
                if ev.finish_reason == "cancelled":
                    continue  # an unfinished problem is not a result
                append_result(results, record_for(label, problem, ev, time.perf_counter() - t0, batch,
                                                  **conditions))
                finished += 1
                if progress is not None:
                    progress.update(finished, f"{label} {problem.id}")
    finally:
        batcher.close()
        engine.clear()
