"""Layers on llama.cpp RPC workers vs this machine, measured side by side in one run (issue 17).

    python bench/bench_rpc.py [--model PATH] [--threads 2] [--steps 48] [--reps 3] [--rpc HOST:PORT,...]

Without --rpc it starts two ``latentlocal worker`` processes on 127.0.0.1 (loopback: the cost of
the protocol, not of a network) and compares, repetitions interleaved:
  local                  every layer on this process's CPU
  rpc x1                 every layer on one worker
  rpc x2                 the layers split across two workers (a pipeline: they take turns)
for greedy decoding (run_cot, tokens/s) and Soft Thinking's concept steps (steps/s, embedding
rows sent every step). Each worker computes with --threads threads, as the local engine does;
the client waits while a worker computes, so the cores are not shared between them.
With --rpc the given workers are used as "rpc x1" (all of them together).
"""

from __future__ import annotations

import argparse
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from latentlocal.engine import Engine
from latentlocal.engine_settings import EngineSettings
from latentlocal.events import Token
from latentlocal.methods.cot import CotConfig, run_cot
from latentlocal.methods.soft_thinking import SoftThinkingConfig, run_soft_thinking

QUESTION = "A baker makes 24 muffins and sells 3 boxes of 6. How many muffins are left?"


def step_rate(events, phase: str | None = None) -> float:
    """Steps/s between the first and last Token of ``phase`` (prompt decoding left out)."""
    stamps = [time.perf_counter() for e in events if isinstance(e, Token) and (phase is None or e.phase == phase)]
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")


def start_worker(threads: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "latentlocal.cli", "worker", "--port", str(port),
                             "--threads", str(threads)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    for line in proc.stdout:
        if "latentlocal worker: llama.cpp RPC" in line:
            break
    else:
        raise SystemExit("the worker did not start")
    # llama.cpp prints a line per client: keep draining so the pipe never fills
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, f"127.0.0.1:{port}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=48)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rpc", default="", help="use these workers instead of starting two on loopback")
    args = ap.parse_args()
    # a plain kill runs the finally below too, so the workers never outlive the benchmark
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    procs: list[subprocess.Popen] = []
    try:
        if args.rpc:
            layouts = {"rpc": args.rpc}
        else:
            (p1, e1), (p2, e2) = start_worker(args.threads), start_worker(args.threads)
            procs = [p1, p2]
            layouts = {"rpc x1": e1, "rpc x2": f"{e1},{e2}"}
        run(args, layouts)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def run(args: argparse.Namespace, layouts: dict[str, str]) -> None:
    base = EngineSettings(model=args.model, n_ctx=2048, n_seq_max=1, n_threads=args.threads)
    engines = {"local": Engine.open(base)}
    for name, eps in layouts.items():
        # a worker serves one client at a time; in one process the engines share its connection
        engines[name] = Engine.open(replace(base, rpc=eps))
    m = engines["local"].model
    n = args.steps
    print(f"model {m.name} ({m.arch}, {m.n_layer} blocks), {args.threads} threads per process, {n} steps, "
          f"median of {args.reps} interleaved repetitions; workers: "
          + "; ".join(f"{k} = {v}" for k, v in layouts.items()))
    cot_cfg = CotConfig(max_tokens=n, stop_after_answer=False)
    soft_cfg = SoftThinkingConfig(max_tokens=n, cold_stop_patience=0)
    greedy: dict[str, list[float]] = {k: [] for k in engines}
    soft: dict[str, list[float]] = {k: [] for k in engines}
    for name, e in engines.items():  # warm-up: first decodes set up buffers on each device
        step_rate(run_cot(e, QUESTION, CotConfig(max_tokens=4)))
    for _ in range(args.reps):
        for name, e in engines.items():
            greedy[name].append(step_rate(run_cot(e, QUESTION, cot_cfg)))
            soft[name].append(step_rate(run_soft_thinking(e, QUESTION, soft_cfg), phase="think"))
    g = {k: statistics.median(v) for k, v in greedy.items()}
    s = {k: statistics.median(v) for k, v in soft.items()}
    for name in engines:
        extra = "" if name == "local" else (f"  -> ratio to local: greedy {g[name] / g['local']:.2f}, "
                                            f"soft {s[name] / s['local']:.2f}")
        print(f"{name:>7}: greedy {g[name]:6.1f} tok/s, soft thinking {s[name]:6.1f} steps/s{extra}")
    for e in engines.values():
        e.close()


if __name__ == "__main__":
    main()
