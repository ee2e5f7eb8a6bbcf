"""Soft Thinking speed against greedy decoding, measured side by side (issue #3).

    python bench/bench_soft_thinking.py [--model PATH] [--threads 2] [--steps 64] [--reps 3]

Prints:
  1. soft-thinking steps/s vs greedy steps/s on the same prompt, repetitions interleaved
     (goal: ratio >= 0.95). Two greedy baselines: ``run_cot`` (the greedy method, same event
     stream) and a bare engine loop (argmax + one-token decode). A step rate is taken between the
     first and the last generated position, so prompt decoding is left out.
  2. time to the first soft step vs the first greedy step, from a fresh model (the first soft
     step includes creating the EmbeddingTable: reported on its own), and with a warm table.

Timings share the machine with whatever else runs: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from latentlocal.engine import Engine, Model
from latentlocal.engine_settings import EngineSettings
from latentlocal.events import Token
from latentlocal.methods.cot import CotConfig, prompt_tokens, run_cot
from latentlocal.methods.soft_thinking import SoftThinkingConfig, run_soft_thinking
from latentlocal.prompts import COT_SYSTEM

QUESTION = "A baker makes 24 muffins and sells 3 boxes of 6. How many muffins are left?"


def step_rate(events, phase: str | None = None) -> tuple[float, int, float]:
    """(steps/s between the first and last Token of ``phase``, steps, seconds to the first one)."""
    t0 = time.perf_counter()
    stamps = []
    for e in events:
        if isinstance(e, Token) and (phase is None or e.phase == phase):
            stamps.append(time.perf_counter())
    n = len(stamps)
    rate = (n - 1) / (stamps[-1] - stamps[0]) if n > 1 else float("nan")
    return rate, n, (stamps[0] - t0) if stamps else float("nan")


def engine_greedy_rate(engine: Engine, toks: list[int], n: int) -> float:
    engine.clear()
    engine.decode_tokens(toks)
    t = int(np.argmax(engine.logits(-1)))
    start = time.perf_counter()
    for _ in range(n - 1):
        engine.decode_tokens([t])
        t = int(np.argmax(engine.logits(-1)))
    return (n - 1) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    settings = EngineSettings(model=args.model, n_ctx=2048, n_seq_max=1, n_threads=args.threads)
    n = args.steps

    # 2a. first step from a fresh model: greedy, then soft (table created inside), table alone
    engine = Engine.open(settings)
    model = engine.model
    toks = prompt_tokens(engine, QUESTION, COT_SYSTEM)
    engine_greedy_rate(engine, toks[:8], 2)  # the context's first decode sets up buffers: not a method cost
    _, _, first_greedy_cold = step_rate(run_cot(engine, QUESTION, CotConfig(max_tokens=2)))
    _, _, first_soft_cold = step_rate(run_soft_thinking(engine, QUESTION, SoftThinkingConfig(max_tokens=2)))
    fresh = Model(settings.model_path())
    t = time.perf_counter()
    _ = fresh.embeddings
    table_s = time.perf_counter() - t
    fresh.close()

    print(f"model {model.name} ({model.arch}, n_vocab {model.n_vocab}), {args.threads} threads, "
          f"prompt {len(toks)} tokens, {n} steps, median of {args.reps} interleaved repetitions")

    # 1. step rates, interleaved
    soft_cfg = SoftThinkingConfig(max_tokens=n, cold_stop_patience=0)
    cot_cfg = CotConfig(max_tokens=n, stop_after_answer=False)
    soft, cot, bare, first_soft, first_greedy, think_steps = [], [], [], [], [], []
    for _ in range(args.reps):
        r, k, f = step_rate(run_cot(engine, QUESTION, cot_cfg))
        cot.append(r)
        first_greedy.append(f)
        r, k, f = step_rate(run_soft_thinking(engine, QUESTION, soft_cfg), phase="think")
        soft.append(r)
        first_soft.append(f)
        think_steps.append(k)
        bare.append(engine_greedy_rate(engine, toks, n))
    s, c, b = statistics.median(soft), statistics.median(cot), statistics.median(bare)
    print(f"1. soft thinking {s:.1f} steps/s ({min(think_steps)}-{max(think_steps)} soft steps per run)")
    print(f"   vs greedy run_cot {c:.1f} tok/s -> ratio {s / c:.3f} (goal >= 0.95)")
    print(f"   vs bare engine greedy loop {b:.1f} tok/s -> ratio {s / b:.3f}")
    print(f"   per step: soft {1000 / s:.2f} ms, run_cot {1000 / c:.2f} ms, bare {1000 / b:.2f} ms")

    # 2. first step
    print(f"2. first step, fresh model: greedy {first_greedy_cold * 1000:.0f} ms, soft "
          f"{first_soft_cold * 1000:.0f} ms (EmbeddingTable creation alone: {table_s * 1000:.1f} ms)")
    print(f"   first step, warm table: greedy {statistics.median(first_greedy) * 1000:.0f} ms, soft "
          f"{statistics.median(first_soft) * 1000:.0f} ms "
          f"(ratio {statistics.median(first_soft) / statistics.median(first_greedy):.2f}; both include the "
          f"{len(toks)}-token prompt)")


if __name__ == "__main__":
    main()
