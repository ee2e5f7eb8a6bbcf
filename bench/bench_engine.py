"""Engine benchmarks: ratios measured side by side in one run (issue: foundation).

    python bench/bench_engine.py [--model PATH] [--threads 2] [--tokens 64] [--reps 3] [--requant q4_0|q8_0]

Prints, each as a ratio of two timings taken interleaved in this run:
  1. engine greedy decoding vs llama_cpp.Llama greedy generation (tokens/s; goal >= 1.0)
  2. one-step embedding-row decode vs one-step token decode (steps/s; goal >= 0.95)
  3. 5 sequences decoded together over one shared prompt vs the same 5 one after another (goal >= 2x),
     with the decode-step cost at batch 1/2/4/5/8 that bounds it
  4. memory of the embedding-row source vs a full dequantized float32 matrix
  5. cost of one control-vector change (the scheduler re-reserve), in milliseconds
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from latentlocal.engine import Engine
from latentlocal.engine_settings import EngineSettings
from latentlocal.methods.cot import prompt_tokens

# llama_ftype values (llama.h): types whose CPU matmul has a batched (GEMM) path on x86
REQUANT = {"q4_0": 2, "q8_0": 7}
QUESTION = "A baker makes 24 muffins and sells 3 boxes of 6. How many muffins are left?"


def interleaved(fns: list, reps: int) -> list[float]:
    """Median seconds of each function, called in turn ``reps`` times: interleaving spreads the
    shared machine's load drift over all of them alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for fn, ts in zip(fns, times):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return [statistics.median(ts) for ts in times]


def share_prompt(engine: Engine, toks: list[int], k: int) -> None:
    """Decode the prompt once into sequence 0 and share its KV with sequences 1 .. k-1."""
    engine.clear()
    engine.decode_tokens(toks, seq=0)
    for s in range(1, k):
        engine.seq_copy(0, s)


def step_costs(engine: Engine, toks: list[int], sizes: tuple[int, ...], steps: int, reps: int) -> dict[int, float]:
    """Median seconds of ``steps`` decode steps at each batch size (the sizes taking turns), every
    sequence over one shared prompt: batching k sequences can speed the steps up by at most
    k / (cost[k] / cost[1])."""
    pool = [int(i) for i in np.random.default_rng(2).integers(100, 10000, max(sizes))]
    share_prompt(engine, toks, max(sizes))

    def steps_at(size: int) -> None:
        for _ in range(steps):
            engine.decode_step(list(range(size)), tokens=pool[:size])
        for s in range(size):  # back to the prompt (microseconds), so repetitions see the same KV
            engine.seq_remove(s, len(toks))

    return dict(zip(sizes, interleaved([lambda size=size: steps_at(size) for size in sizes], reps)))


def engine_greedy(engine: Engine, toks: list[int], n: int) -> list[int]:
    engine.clear()
    engine.decode_tokens(toks)
    out = []
    for _ in range(n):
        t = int(np.argmax(engine.logits(-1)))
        out.append(t)
        engine.decode_tokens([t])
    return out


def llama_greedy(llm, toks: list[int], n: int) -> list[int]:
    # Without reset() Llama.generate reuses the KV of a matching prompt prefix and decodes only
    # one prompt token, so it would be timed without the prompt while engine_greedy pays for it.
    llm.reset()
    out = []
    for t in llm.generate(toks, temp=0.0, reset=True):
        out.append(t)
        if len(out) == n:
            break
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--requant", choices=sorted(REQUANT), default=None,
                    help="first requantize the model to this type in a temporary folder, to see "
                         "whether the weight type's CPU kernels set the batching ceiling")
    args = ap.parse_args()
    path = EngineSettings(model=args.model).model_path()
    with tempfile.TemporaryDirectory() as tmp:
        if args.requant:
            path = requantize(path, args.requant, Path(tmp), args.threads)
        run(path, args)


def requantize(path: Path, kind: str, folder: Path, threads: int) -> Path:
    import llama_cpp

    from latentlocal.engine import ensure_backend

    ensure_backend()
    out = folder / f"{path.stem}.{kind}.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = REQUANT[kind]
    params.allow_requantize = True
    params.nthread = threads
    if llama_cpp.llama_model_quantize(str(path).encode(), str(out).encode(), ctypes.byref(params)) != 0:
        raise SystemExit(f"requantizing {path} to {kind} failed")
    return out


def run(path: Path, args: argparse.Namespace) -> None:
    engine = Engine.open(EngineSettings(model=path, n_ctx=2048, n_seq_max=8, n_threads=args.threads))
    toks = prompt_tokens(engine, QUESTION, None)
    n = args.tokens
    print(f"model {engine.model.name} ({path.name}; {engine.model.arch}, {engine.n_layer} blocks, n_embd {engine.n_embd}), "
          f"{args.threads} threads, prompt {len(toks)} tokens, {n} new tokens, median of {args.reps}")

    # 1. engine vs llama_cpp.Llama greedy
    from llama_cpp import Llama

    # The engine leaves flash attention on llama.cpp's "auto", which enables it on CPU; Llama's
    # default turns it off, which computes slightly different logits (greedy diverged after 7
    # tokens on SmolLM2 requantized to Q4_0) and runs slower. Compare the same computation.
    llm = Llama(str(path), n_ctx=2048, n_threads=args.threads, n_threads_batch=args.threads,
                flash_attn=True, verbose=False)
    assert engine_greedy(engine, toks, 16) == llama_greedy(llm, toks, 16), "greedy tokens differ"
    ours, theirs = interleaved([lambda: engine_greedy(engine, toks, n), lambda: llama_greedy(llm, toks, n)],
                               args.reps)
    print(f"1. greedy: engine {n / ours:.1f} tok/s vs llama_cpp.Llama {n / theirs:.1f} tok/s "
          f"-> ratio {theirs / ours:.2f} (goal >= 1.0)")
    llm.close()

    # 2. one embedding-row step vs one token step
    table = engine.model.embeddings
    steps = 48
    ids = [int(i) for i in np.random.default_rng(0).integers(100, 10000, steps)]
    rows = table.rows(ids)

    def token_steps() -> None:
        engine.clear()
        engine.decode_tokens(toks)
        for t in ids:
            engine.decode_tokens([t])

    def row_steps() -> None:
        engine.clear()
        engine.decode_tokens(toks)
        for r in rows:
            engine.decode_embeddings(r)

    tok_s, row_s = interleaved([token_steps, row_steps], args.reps)
    print(f"2. one-step decode: embedding rows {steps / row_s:.1f} steps/s vs tokens {steps / tok_s:.1f} "
          f"steps/s -> ratio {tok_s / row_s:.2f} (goal >= 0.95)")

    # 3. 5 sequences together vs one after another
    k = 5
    first = [int(i) for i in np.random.default_rng(1).integers(100, 10000, k)]

    def together() -> None:
        share_prompt(engine, toks, k)
        nxt = first
        for _ in range(n):
            engine.decode_step(list(range(k)), tokens=nxt)
            nxt = [int(np.argmax(engine.logits(i))) for i in range(k)]

    def sequential() -> None:
        for s in range(k):
            engine.clear()
            engine.decode_tokens(toks)
            t = first[s]
            for _ in range(n):
                engine.decode_tokens([t])
                t = int(np.argmax(engine.logits(-1)))

    b, s_ = interleaved([together, sequential], args.reps)
    print(f"3. {k} sequences x {n} tokens: together {b:.2f}s vs one after another {s_:.2f}s "
          f"-> speed-up {s_ / b:.2f}x (goal >= 2.0x)")

    # Why 3 lands where it does: the cost of one decode step as the batch grows. Batching over
    # one shared prompt can speed the steps up by k / cost(k) at most (plus the k - 1 prompts saved).
    sizes = (1, 2, 4, k, 8)
    steps_b = 24
    cost = step_costs(engine, toks, sizes, steps_b, args.reps)
    one = cost[1]
    curve = ", ".join(f"{size}: {cost[size] / one:.2f}x" for size in sizes)
    ck = cost[k] / one
    print(f"   decode-step cost by batch size, relative to one sequence ({one / steps_b * 1000:.1f} ms): "
          f"{curve} -> batching {k} can give at most {k / ck:.2f}x on the steps")

    # 4. memory
    full = table.n_vocab * table.n_embd * 4
    print(f"4. embedding rows: quantized source {table.source_bytes / 2**20:.1f} MiB (memory-mapped) + "
          f"cache {table.cached_bytes / 2**20:.2f} MiB vs full float32 matrix {full / 2**20:.1f} MiB "
          f"-> {full / (table.source_bytes + table.cached_bytes):.1f}x smaller")

    # 5. control-vector change cost
    v = {engine.n_layer // 2: np.zeros(engine.n_embd, dtype=np.float32)}
    m = 24

    def plain() -> None:
        engine.clear()
        engine.decode_tokens(toks)
        for t in ids[:m]:
            engine.decode_tokens([t])

    def toggled() -> None:
        engine.clear()
        engine.decode_tokens(toks)
        for i, t in enumerate(ids[:m]):
            engine.set_control_vector(v if i % 2 == 0 else None)
            engine.decode_tokens([t])
        engine.set_control_vector(None)

    p, g = interleaved([plain, toggled], args.reps)
    print(f"5. control-vector change: {(g - p) / m * 1000:.2f} ms per change "
          f"(decode step {p / m * 1000:.2f} ms without changes)")


if __name__ == "__main__":
    main()
