"""SEAL benchmarks (issue #4): ratios measured side by side in one run.

    python bench/bench_seal.py [--model PATH] [--threads 2] [--tokens 64] [--problems 3] [--reps 3]

Prints:
  1. cost of one control-vector change (the scheduler re-reserve), in ms, for the two ways of
     toggling: set S / clear (None), and set S / set zeros (the add stays in the graph)
  2. extraction throughput (traces/minute) and capture overhead vs plain decoding: generation
     plus the capture re-decode over generation alone, inside the same run (goal <= 1.3x)
  3. steered decoding tokens/s (delimiter mode, the vector from 2) vs unsteered chain of thought
     on the same prompt and token count (goal >= 0.9), and the same for always-on
Timings are medians of interleaved repetitions; the machine may be shared, so compare ratios.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from latentlocal.engine import Engine
from latentlocal.engine_settings import EngineSettings
from latentlocal.events import Summary
from latentlocal.methods.cot import CotConfig, prompt_tokens, run_cot
from latentlocal.methods.seal import ExtractConfig, SealConfig, default_layer, extract_vector, run_seal

GSM8K = str(Path(__file__).resolve().parents[1] / "tests" / "data" / "gsm8k_train_head.jsonl")


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def change_cost(engine: Engine, toks: list[int], reps: int) -> None:
    ids = [int(i) for i in np.random.default_rng(0).integers(100, 10000, 24)]
    il = default_layer(engine.n_layer)
    s = {il: np.random.default_rng(1).normal(size=engine.n_embd).astype(np.float32)}
    zero = {il: np.zeros(engine.n_embd, dtype=np.float32)}

    def steps(mode: str) -> None:
        engine.set_control_vector(None)
        engine.clear()
        engine.decode_tokens(toks)
        for i, t in enumerate(ids):
            if mode == "clear":
                engine.set_control_vector(s if i % 2 == 0 else None)
            elif mode == "zeros":
                engine.set_control_vector(s if i % 2 == 0 else zero)
            engine.decode_tokens([t])
        engine.set_control_vector(None)

    times: dict[str, list[float]] = {"plain": [], "clear": [], "zeros": []}
    for _ in range(reps):
        for mode in times:
            times[mode].append(timed(lambda: steps(mode)))
    med = {k: statistics.median(v) for k, v in times.items()}
    n = len(ids)
    step_ms = med["plain"] / n * 1000
    print(f"1. control-vector change: set/clear {(med['clear'] - med['plain']) / n * 1000:.2f} ms, "
          f"set/set-zeros {(med['zeros'] - med['plain']) / n * 1000:.2f} ms per change "
          f"(one-token decode step {step_ms:.2f} ms without changes)")


def extraction(engine: Engine, args, work: Path) -> Path | None:
    import json

    lines = Path(args.data).read_text().splitlines()[args.offset:args.offset + args.problems]
    questions = [json.loads(x)["question"] for x in lines]
    cot_cfg = CotConfig(max_tokens=args.tokens)

    def plain() -> int:
        n = 0
        for q in questions:
            n += [e for e in run_cot(engine, q, cot_cfg) if isinstance(e, Summary)][-1].generated_tokens
        return n

    def extracted(name: str, elicit: str) -> tuple[Summary, Path]:
        out = work / f"{name}.gguf"
        cfg = ExtractConfig(data=args.data, out=out, offset=args.offset, limit=args.problems,
                            max_tokens=args.tokens, elicit=elicit, cue_rate=0.5, min_thoughts=1)
        try:
            return extract_vector(engine, cfg), out
        except Exception as e:  # too few thoughts without elicitation: the timing is still there
            return Summary("seal-extract", None, str(e), 0, 0.0, "error"), out

    # the same traces (greedy, no cues) decoded plainly and extracted, interleaved
    walls: dict[str, list[float]] = {"plain": [], "extract": []}
    for i in range(args.reps):
        walls["plain"].append(timed(plain))
        walls["extract"].append(timed(lambda: extracted(f"none{i}", "none")))
    med = {k: statistics.median(v) for k, v in walls.items()}
    t = time.perf_counter()
    summary, out = extracted("cue", "cue")
    wall = time.perf_counter() - t
    if summary.finish_reason == "error":  # too few thoughts in so few or so short traces: nothing to time
        print(f"2. extraction (--elicit cue) failed: {summary.text}; pass more --problems or --tokens")
        return None
    x = summary.extra
    per_min = x["new"] / wall * 60
    print(f"2. extraction (--elicit cue): {x['new']} traces x <= {args.tokens} tokens in {wall:.1f}s -> "
          f"{per_min:.1f} traces/min; inside it generation {x['gen_s']:.1f}s + capture {x['capture_s']:.1f}s "
          f"-> {(x['gen_s'] + x['capture_s']) / x['gen_s']:.2f}x (+ {x['capture_setup_s']:.2f}s once to open "
          f"the capture context); thoughts {x['counts']}")
    print(f"   capture overhead vs plain decoding (the same {len(questions)} greedy traces, run_cot vs "
          f"extract --elicit none, wall clock): {med['extract']:.1f}s vs {med['plain']:.1f}s -> "
          f"{med['extract'] / med['plain']:.2f}x (goal <= 1.3x)")
    return out


def steering(engine: Engine, vector: Path, args) -> None:
    from latentlocal.controlvector import import_gguf, read_manifest

    cv = import_gguf(vector)
    manifest = read_manifest(vector) or {}
    lines = Path(args.data).read_text().splitlines()
    import json

    question = json.loads(lines[args.offset])["question"]
    toks = prompt_tokens(engine, question, CotConfig().system)
    n = args.tokens
    cot_cfg = CotConfig(max_tokens=n, stop_after_answer=False)
    seal_cfg = SealConfig(directions=cv.directions, max_tokens=n, stop_after_answer=False)
    on_cfg = SealConfig(directions=cv.directions, max_tokens=n, stop_after_answer=False, always_on=True,
                        alpha=float(manifest.get("recommended_scale") or 0.05))

    def last(events) -> Summary:
        return [e for e in events if isinstance(e, Summary)][-1]

    rates: dict[str, list[float]] = {"cot": [], "seal": [], "always-on": []}
    info = {}
    for _ in range(args.reps):
        s = last(run_cot(engine, question, cot_cfg, prompt=toks))
        rates["cot"].append(s.generated_tokens / s.elapsed_s)
        s = last(run_seal(engine, question, seal_cfg, prompt=toks))
        rates["seal"].append(s.generated_tokens / s.elapsed_s)
        info = s.extra
        s = last(run_seal(engine, question, on_cfg, prompt=toks))
        rates["always-on"].append(s.generated_tokens / s.elapsed_s)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"3. steered decoding ({n} tokens, {len(info['steered_positions'])} steered delimiters, "
          f"{info['cvec_changes']} vector changes): seal {med['seal']:.1f} tok/s vs cot {med['cot']:.1f} "
          f"tok/s -> ratio {med['seal'] / med['cot']:.2f} (goal >= 0.9); always-on "
          f"{med['always-on']:.1f} tok/s -> ratio {med['always-on'] / med['cot']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--problems", type=int, default=3)
    ap.add_argument("--offset", type=int, default=1)
    ap.add_argument("--data", default=GSM8K)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    engine = Engine.open(EngineSettings(model=args.model, n_ctx=2048, n_seq_max=4, n_threads=args.threads))
    toks = prompt_tokens(engine, "What is 2 + 3?", None)
    print(f"model {engine.model.name} ({engine.model.arch}, {engine.n_layer} blocks, n_embd {engine.n_embd}), "
          f"{args.threads} threads, block {default_layer(engine.n_layer)}, median of {args.reps}")
    change_cost(engine, toks, args.reps)
    with tempfile.TemporaryDirectory() as tmp:
        vector = extraction(engine, args, Path(tmp))
        if vector is not None:
            steering(engine, vector, args)


if __name__ == "__main__":
    main()
