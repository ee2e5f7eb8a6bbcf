"""Problems per minute of ``latentlocal bench --batch B`` over ``--batch 1``, measured side by side.

For each method (greedy cot, Soft Thinking at its paper defaults) the same problems run through
the bench runner once one at a time and once ``--batch`` at a time, in one process on one loaded
model, the two modes taking turns (the order flips from one half of the problems to the next, so
a drift in machine load falls on both). Prints each mode's problems per minute, their ratio
(goal >= 1.8 at batch 4 on the evaluation model), and how many answers differ between the modes
(llama.cpp's batched kernels are not bit-identical to one-sequence decoding, so near ties can go
the other way). Last, the cost of one decode step of ``--batch`` sequences over one, measured in
the same process: batching can speed the decode steps up by at most batch / that cost, the
ceiling the ratios above are held under on this CPU and model file.

    .venv/bin/python bench/bench_bench.py [--model PATH] [--batch 4] [--problems 16] [--max-tokens 320]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from bench_engine import step_costs  # this folder's engine benchmark

from latentlocal.datasets import load_problems
from latentlocal.engine import Engine
from latentlocal.engine_settings import EngineSettings
from latentlocal.eval.report import read_results
from latentlocal.eval.runner import batch_context, parse_method_spec, run_bench
from latentlocal.methods.cot import prompt_tokens
from latentlocal.methods.registry import chain_from_options, runner_from_options
from latentlocal.prompts import COT_SYSTEM

QWEN = Path.home() / ".cache/latentlocal-eval-models/qwen2.5-coder-0.5b-instruct.gguf"
SVAMP = Path(os.environ.get("LATENTLOCAL_DATA", "/work/shared/data")) / "svamp" / "dev.jsonl"


def _timed(engine, problems, label, runner, chain, batch, root: Path) -> tuple[float, dict[str, object]]:
    out = Path(tempfile.mkdtemp(dir=root))
    t0 = time.perf_counter()
    run_bench(engine, problems, [(label, runner)], out, batch=batch, chains={label: chain})
    wall = time.perf_counter() - t0
    return wall, {r["id"]: r["prediction"] for r in read_results(out / "results.jsonl")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(QWEN))
    p.add_argument("--data", default=str(SVAMP))
    # SVAMP dev [440:456): a slice no results table or sweep uses
    p.add_argument("--offset", type=int, default=440)
    p.add_argument("--problems", type=int, default=16)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=320)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--methods", default="cot,soft-thinking")
    args = p.parse_args()
    problems = load_problems(args.data, limit=args.problems, offset=args.offset)
    halves = [problems[: len(problems) // 2], problems[len(problems) // 2:]]
    base = argparse.Namespace(max_tokens=args.max_tokens)
    engine = Engine.open(EngineSettings(model=args.model, n_ctx=4096, n_threads=args.threads,
                                        n_seq_max=max(args.batch, 1)))
    print(f"model {engine.model.name}, {args.threads} threads, {len(problems)} problems of "
          f"{Path(args.data).name} from {args.offset}, max {args.max_tokens} tokens, batch {args.batch}; "
          f"load {os.getloadavg()[0]:.1f}")
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in filter(None, (s.strip() for s in args.methods.split(","))):
            label, name, options = parse_method_spec(spec, base)
            runner, chain = runner_from_options(name, options), chain_from_options(name, options)
            need = batch_context(engine, problems, {label: chain}, args.batch)
            if need > engine.n_ctx:
                raise SystemExit(f"--batch {args.batch} needs n_ctx {need}; lower --max-tokens")
            wall = {1: 0.0, args.batch: 0.0}
            answers: dict[int, dict[str, object]] = {1: {}, args.batch: {}}
            for i, half in enumerate(halves):
                order = (1, args.batch) if i % 2 == 0 else (args.batch, 1)
                for b in order:
                    w, got = _timed(engine, half, label, runner, chain, b, Path(tmp))
                    wall[b] += w
                    answers[b].update(got)
                    print(f"  {label} batch {b}: {len(half)} problems in {w:.1f} s", flush=True)
            rate = {b: len(problems) / wall[b] * 60 for b in wall}
            ratio = rate[args.batch] / rate[1]
            ratios.append(ratio)
            differ = sum(answers[1][k] != answers[args.batch][k] for k in answers[1])
            print(f"{label}: batch 1 {rate[1]:.2f} problems/min, batch {args.batch} "
                  f"{rate[args.batch]:.2f} problems/min: {ratio:.2f}x (goal >= 1.8); answers differing "
                  f"{differ} of {len(problems)}; load {os.getloadavg()[0]:.1f}", flush=True)
    cost = step_cost(engine, problems[0].question, args.batch)
    print(f"decode-step cost, {args.batch} sequences over 1: {cost:.2f}x -> batching can speed the "
          f"steps up by at most {args.batch / cost:.2f}x here; load {os.getloadavg()[0]:.1f}")
    engine.close()
    return 0 if min(ratios) >= 1.8 else 1


def step_cost(engine: Engine, question: str, batch: int, steps: int = 24, reps: int = 3) -> float:
    """Time of a decode step of ``batch`` sequences over that of one (bench_engine.py's measure)."""
    cost = step_costs(engine, prompt_tokens(engine, question, COT_SYSTEM), (1, batch), steps, reps)
    engine.clear()
    return cost[batch] / cost[1]


if __name__ == "__main__":
    sys.exit(main())
