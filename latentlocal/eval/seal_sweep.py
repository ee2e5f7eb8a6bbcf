"""Choose a SEAL vector's always-on scale by measurement, the way ``llama-cli`` will apply it.

Each scale (0 = unsteered is always included) runs ``run_seal(always_on=True)`` greedily on a
slice of a dataset. The recommended scale is the one with the fewest mean reasoning tokens among
the scales whose accuracy is at least the unsteered accuracy and whose reasoning is shorter
(SEAL's aim: shorter reasoning without losing answers); 0 when no steered scale qualifies.
Per-problem results are appended to ``<vector>.sweep.jsonl`` as they finish, keyed by the
settings, so an interrupted sweep resumes.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latentlocal.answers import is_correct
from latentlocal.controlvector import sha256_file, write_manifest
from latentlocal.engine import Engine
from latentlocal.errors import LatentLocalError
from latentlocal.datasets import load_problems
from latentlocal.events import Summary
from latentlocal.jsonl import append_object, read_objects
from latentlocal.methods.seal import SealConfig, load_vector, run_seal
from latentlocal.methods.seal.steer import ALPHA_BOUNDS


def sweep_path(vector: str | os.PathLike[str]) -> Path:
    p = Path(vector)
    return p.with_name(p.stem + ".sweep.jsonl")


def choose_scale(rows: Sequence[dict[str, Any]]) -> float:
    """Fewest mean reasoning tokens among scales at least as accurate as scale 0 and shorter than
    it; 0 when steering buys no shortening."""
    base = next((r for r in rows if r["scale"] == 0.0), None)
    if base is None:
        raise ValueError("the sweep needs scale 0 (unsteered) as its baseline")
    ok = [r for r in rows if r["scale"] != 0.0 and r["accuracy"] >= base["accuracy"]
          and r["mean_reasoning_tokens"] < base["mean_reasoning_tokens"]]
    if not ok:
        return 0.0
    return float(min(ok, key=lambda r: (r["mean_reasoning_tokens"], r["scale"]))["scale"])


def _load_done(path: Path, key: dict[str, Any]) -> dict[tuple[float, str], dict[str, Any]]:
    done: dict[tuple[float, str], dict[str, Any]] = {}
    if not path.exists():
        return done
    # a line cut short by an interruption is simply redone
    for _, rec in read_objects(path, fix="delete that line to redo it", torn_tail_ok=True):
        if rec.get("key") == key:
            done[(float(rec["scale"]), str(rec["id"]))] = rec
    return done


def sweep(
    engine: Engine,
    vector: str | os.PathLike[str],
    data: str | os.PathLike[str],
    scales: Sequence[float],
    limit: int = 30,
    offset: int = 0,
    max_tokens: int = 320,
    on_problem: Callable[[int, int, bool], None] | None = None,
) -> dict[str, Any]:
    """Run the sweep, update the manifest's ``recommended_scale`` and ``scale_sweep``; return them."""
    cv, manifest = load_vector(vector, engine.model)
    if manifest is None:
        raise LatentLocalError(f"{vector} has no manifest beside it: sweep vectors made by `seal extract`")
    scales = check_scales(scales)
    if limit < 1:
        raise LatentLocalError(f"--limit must be at least 1, not {limit}")
    problems = load_problems(data, limit=limit, offset=offset)
    key = {"vector_sha256": sha256_file(vector), "model": engine.model.path.name,
           "data": Path(data).name, "max_tokens": max_tokens}
    log = sweep_path(vector)
    done = _load_done(log, key)
    total, n = len(scales) * len(problems), 0
    for scale in scales:
        cfg = SealConfig(directions=cv.directions, alpha=scale, always_on=True, max_tokens=max_tokens)
        for p in problems:
            n += 1
            new = (scale, p.id) not in done
            if new:
                t0 = time.perf_counter()
                s = next(e for e in run_seal(engine, p.question, cfg) if isinstance(e, Summary))
                rec = {"key": key, "scale": scale, "id": p.id, "pred": s.answer, "gold": p.gold,
                       "correct": is_correct(s.answer, p.gold),
                       "reasoning_tokens": s.extra["reasoning_tokens"],
                       "generated_tokens": s.generated_tokens, "wall_s": time.perf_counter() - t0}
                append_object(log, rec)
                done[(scale, p.id)] = rec
            if on_problem is not None:
                on_problem(n, total, new)
    rows = []
    for scale in scales:
        recs = [done[(scale, p.id)] for p in problems]
        rows.append({"scale": scale, "n": len(recs),
                     "accuracy": float(np.mean([r["correct"] for r in recs])),
                     "mean_reasoning_tokens": float(np.mean([r["reasoning_tokens"] for r in recs])),
                     "mean_generated_tokens": float(np.mean([r["generated_tokens"] for r in recs]))})
    best = choose_scale(rows)
    manifest = dict(manifest)
    manifest["recommended_scale"] = best
    manifest["recommended_scale_method"] = (
        "measured sweep: fewest mean reasoning tokens among always-on scales at least as accurate "
        "as unsteered and shorter than it (0 = none qualified)")
    manifest["scale_sweep"] = {"data": str(data), "offset": offset, "limit": limit,
                               "max_tokens": max_tokens, "model": engine.model.path.name, "rows": rows}
    write_manifest(vector, manifest)
    return manifest["scale_sweep"] | {"recommended_scale": best}


def check_scales(scales: Sequence[float]) -> list[float]:
    """The scales to run, 0 (the unsteered baseline) included and sorted; at least one steered
    scale, each within SEAL's alpha bounds: "" or "0" wrote a "recommended" 0 over an earlier
    recommendation, and 1e30 was recommended while it made the logits NaN."""
    hi = ALPHA_BOUNDS.hi
    assert hi is not None
    for s in scales:
        if not math.isfinite(s) or not 0 <= s <= hi:
            raise LatentLocalError(f"--scales must each lie in [0, {hi:g}], not {s:g}")
    out = sorted({0.0, *(float(s) for s in scales)})
    if len(out) < 2:
        raise LatentLocalError("--scales names no steered scale to compare with the unsteered run; "
                               "e.g. --scales 0.25,0.5,1")
    return out


def parse_scales(text: str) -> list[float]:
    """``--scales`` as given, checked (:func:`check_scales`) before any model is loaded."""
    try:
        scales = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise LatentLocalError(f"--scales takes numbers separated by commas, e.g. 0.25,0.5,1; not {text!r}")
    return check_scales(scales)
