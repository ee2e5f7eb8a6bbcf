"""Soft Reasoning speed, measured side by side (issue #5).

    python bench/bench_soft_reasoning.py [--model PATH] [--threads 2] [--k 4] [--tokens 96] [--reps 3]

Prints:
  1. batched candidate decoding (k candidates as parallel sequences over one prompt KV, one
     llama_decode per step) vs the same k candidates decoded one after another: tokens/s ratio
     (goal >= 2x on CPU). Both decode exactly ``--tokens`` tokens per candidate (no early stop,
     no reuse) from the same perturbed first-position embeddings.
  2. wall time per question: soft reasoning (k candidates x 2 rounds + verifier) vs
     self-consistency with the same number of generations (2k samples, one batch), same token cap
     (goal: soft reasoning no slower), and the verifier's share of soft reasoning's time.
     Medians of interleaved repetitions.

Timings share the machine with whatever else runs: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from latentlocal.engine import Engine
from latentlocal.engine_settings import EngineSettings
from latentlocal.events import Round, SequenceDone, Summary
from latentlocal.methods import soft_reasoning as sr
from latentlocal.methods.cot import SelfConsistencyConfig, prompt_tokens, run_self_consistency
from latentlocal.prompts import COT_SYSTEM

QUESTION = "A baker makes 24 muffins and sells 3 boxes of 6. How many muffins are left?"


def candidates(engine: Engine, toks: list[int], k: int, seed: int) -> list[np.ndarray]:
    engine.clear()
    engine.decode_tokens(toks, seq=0)
    e_z = engine.model.embeddings.row(int(np.argmax(engine.logits(-1))))
    rng = np.random.default_rng(seed)
    rms = float(np.sqrt(np.mean(e_z**2)))
    return [(e_z + 0.5 * rms * rng.normal(size=e_z.shape)).astype(np.float32) for _ in range(k)]


def decode(engine: Engine, toks: list[int], xs: list[np.ndarray], n: int, batched: bool) -> float:
    """Tokens/s decoding ``n`` tokens for each candidate, batched or one candidate at a time."""
    cfg = sr.SoftReasoningConfig(candidates=len(xs), max_tokens=n, reuse_prefix=0,
                                 min_improvement=0.0)
    engine.clear()
    engine.decode_tokens(toks, seq=0)
    groups = [list(range(len(xs)))] if batched else [[i] for i in range(len(xs))]
    total = 0
    t0 = time.perf_counter()
    for g in groups:
        cands = [sr._Cand(i, None, xs[i], [], []) for i in g]
        # no answer-line stop: every candidate runs exactly n tokens (unless it ends generation)
        for _ in sr._decode_candidates(engine, cands, len(toks), cfg, [], None, marker=None):
            pass
        total += sum(len(c.tokens) for c in cands)
    return total / (time.perf_counter() - t0)


def timed_soft_reasoning(engine: Engine, cfg: sr.SoftReasoningConfig) -> tuple[Summary, float]:
    """One question's summary and the seconds spent verifying: from a round's last finished
    candidate to its Round event, which the generator yields once the verifier has answered."""
    verifier = 0.0
    last_done = None
    summary = None
    for e in sr.run_soft_reasoning(engine, QUESTION, cfg):
        now = time.perf_counter()
        if isinstance(e, SequenceDone):
            last_done = now
        elif isinstance(e, Round) and last_done is not None:
            verifier += now - last_done
            last_done = None
        elif isinstance(e, Summary):
            summary = e
    assert summary is not None
    return summary, verifier


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    engine = Engine.open(EngineSettings(model=args.model, n_ctx=4096, n_seq_max=2 * args.k + 2,
                                        n_threads=args.threads))
    model = engine.model
    toks = prompt_tokens(engine, QUESTION, COT_SYSTEM)
    xs = candidates(engine, toks, args.k, seed=0)
    decode(engine, toks, xs[:1], 4, batched=True)  # first decode sets up buffers
    print(f"model {model.name} ({model.arch}), {args.threads} threads, prompt {len(toks)} tokens, "
          f"k {args.k}, {args.tokens} tokens per candidate, median of {args.reps} interleaved repetitions")

    batched, seq = [], []
    for _ in range(args.reps):
        batched.append(decode(engine, toks, xs, args.tokens, batched=True))
        seq.append(decode(engine, toks, xs, args.tokens, batched=False))
    b, s = statistics.median(batched), statistics.median(seq)
    print(f"1. batched candidates {b:.1f} tok/s vs sequential {s:.1f} tok/s -> {b / s:.2f}x (goal >= 2x)")

    sr_cfg = sr.SoftReasoningConfig(candidates=args.k, rounds=2, max_tokens=args.tokens,
                                     verifier_max_tokens=args.tokens, min_improvement=-1.0)
    sc_cfg = SelfConsistencyConfig(samples=2 * args.k, max_tokens=args.tokens)
    t_sr, t_sc, tok_sr, tok_sc, t_ver = [], [], [], [], []
    for _ in range(args.reps):
        t = time.perf_counter()
        summ, ver = timed_soft_reasoning(engine, sr_cfg)
        t_sr.append(time.perf_counter() - t)
        t_ver.append(ver)
        tok_sr.append(summ.generated_tokens)
        t = time.perf_counter()
        summ = [e for e in run_self_consistency(engine, QUESTION, sc_cfg) if isinstance(e, Summary)][-1]
        t_sc.append(time.perf_counter() - t)
        tok_sc.append(summ.generated_tokens)
    a, c = statistics.median(t_sr), statistics.median(t_sc)
    print(f"2. per question: soft reasoning ({args.k} x 2 rounds + verifier) {a:.2f} s, "
          f"{statistics.median(tok_sr):.0f} tokens; self-consistency ({2 * args.k} samples) {c:.2f} s, "
          f"{statistics.median(tok_sc):.0f} tokens -> soft reasoning takes {a / c:.2f}x the time "
          "(goal <= 1.0)")
    v = statistics.median(t_ver)
    print(f"   of soft reasoning's {a:.2f} s, the verifier (reading the round's solutions, then its own "
          f"check) took {v:.2f} s ({v / a:.0%}); without it soft reasoning would take {(a - v) / c:.2f}x "
          "self-consistency's time")


if __name__ == "__main__":
    main()
