"""Throughput of ``latentlocal serve`` with 1 and N concurrent streaming clients, and its overhead.

Starts the server as a subprocess on a free loopback port, then drives it with the official
``openai`` client: for each concurrency level, ``--requests`` requests of one method at its
defaults (``--method``, default cot, which is greedy; the same prompts each time) spread over
that many client threads, each streaming its answer. Prints requests/s, tokens/s, p50/p95
latency and errors per level, the ratio of N clients to one (concurrent cot, Soft Thinking, SEAL
and SwiReasoning requests share decode steps; goal >= 1.5 for cot on the evaluation model), and
the server's overhead: one client's tokens/s (latency measured at the client, HTTP included)
over the CLI's on the same prompts and method (``latentlocal run --json``, its own tokens/s;
goal >= 0.9).

    .venv/bin/python bench/bench_serve.py [--model PATH] [--method cot] [--clients 4] [--requests 8] [--max-tokens 64] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai

QUESTIONS = [
    "Sara has 4 boxes with 6 pens each. How many pens does she have?",
    "A train travels 60 km in 1 hour. How far does it go in 3 hours?",
    "Tom had 15 apples and gave away 7. How many are left?",
    "A shop sells pencils at 3 dollars each. How much do 9 pencils cost?",
    "There are 24 students in 4 equal groups. How many students are in each group?",
    "Anna reads 12 pages a day. How many pages does she read in 5 days?",
    "A box holds 8 eggs. How many eggs are in 7 boxes?",
    "Ben has 50 dollars and spends 18. How much does he have left?",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _engine_flags(args) -> list[str]:
    flags = ["--n-ctx", str(args.n_ctx), "--parallel", str(args.parallel)]
    if args.model:
        flags += ["--model", args.model]
    if args.threads:
        flags += ["--threads", str(args.threads)]
    return flags


def _latentlocal() -> list[str]:
    return [sys.executable, "-m", "latentlocal.cli"]


def start_server(args) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(_latentlocal() + ["serve", "--port", str(port), "--queue", "64"]
                            + _engine_flags(args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("the server did not start within 300 s")
        time.sleep(0.2)


def _prompt_counts(url: str) -> tuple[int, int]:
    """The server's cot prompt tokens decoded so far, and those copied from a shared prefix."""
    jobs = httpx.get(url + "/health", timeout=10).json()["jobs"]
    return jobs.get("prompt_tokens_decoded", 0), jobs.get("prompt_tokens_reused", 0)


def drive(url: str, clients: int, requests: int, max_tokens: int, method: str = "cot") -> dict:
    """``requests`` streamed requests over ``clients`` threads; timings measured at the client."""
    before = _prompt_counts(url)
    client = openai.OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0, timeout=3600)
    todo = list(range(requests))
    lock = threading.Lock()
    latencies: list[float] = []
    tokens: list[int] = []
    errors: list[str] = []

    def worker() -> None:
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop(0)
            t0 = time.perf_counter()
            try:
                n = 0
                stream = client.chat.completions.create(
                    model="m", max_tokens=max_tokens, stream=True, stream_options={"include_usage": True},
                    messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                    extra_body={"method": method})
                for chunk in stream:
                    if chunk.usage is not None:
                        n = chunk.usage.completion_tokens
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    tokens.append(n)
            except Exception as exc:  # a benchmark counts errors, it does not stop at them
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    decoded, reused = (b - a for a, b in zip(before, _prompt_counts(url)))
    return {"clients": clients, "wall_s": wall, "latencies": latencies, "tokens": tokens,
            "errors": errors, "prompt_decoded": decoded, "prompt_reused": reused}


def pooled(runs: list[dict]) -> dict:
    """One level's figures over all its runs (walls, tokens and latencies added up)."""
    lat = sorted(x for r in runs for x in r["latencies"])
    tokens = sum(sum(r["tokens"]) for r in runs)
    wall = sum(r["wall_s"] for r in runs)
    pct = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan"))
    return {"clients": runs[0]["clients"], "requests": len(lat), "wall_s": wall, "tokens": tokens,
            "errors": [e for r in runs for e in r["errors"]],
            "req_per_s": len(lat) / wall, "tok_per_s": tokens / wall,
            "p50_s": statistics.median(lat) if lat else float("nan"), "p95_s": pct(0.95),
            "per_request_tok_per_s": tokens / sum(lat) if lat else float("nan"),
            "prompt_decoded": sum(r["prompt_decoded"] for r in runs),
            "prompt_reused": sum(r["prompt_reused"] for r in runs)}


def cli_run(args, count: int) -> tuple[float, float]:
    """The CLI's own generated tokens and seconds (its summary: prompt decode plus generation)
    on the first ``count`` prompts."""
    total_tokens = total_s = 0.0
    for i in range(count):
        out = subprocess.run(_latentlocal() + ["run", QUESTIONS[i % len(QUESTIONS)], "--json",
                                               "--max-tokens", str(args.max_tokens), "--method", args.method]
                             + _engine_flags(args),
                             capture_output=True, text=True, check=True).stdout
        summary = json.loads(out.strip().splitlines()[-1])
        total_tokens += summary["generated_tokens"]
        total_s += summary["elapsed_s"]
    return total_tokens, total_s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="a .gguf (default: the bundled SmolLM2-135M)")
    ap.add_argument("--method", default="cot",
                    help="the method every request asks for (cot; soft-thinking, seal, swi-reasoning batch too)")
    ap.add_argument("--clients", type=int, default=4, help="the concurrent level compared with 1 (4)")
    ap.add_argument("--requests", type=int, default=8, help="requests per level (8)")
    ap.add_argument("--max-tokens", type=int, default=64, help="max tokens per request (64)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads of server and CLI")
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=1,
                    help="rounds of (1 client, N clients, the CLI), the levels' order flipping each "
                         "round so a drift in machine load falls on both; figures pool the rounds (1)")
    args = ap.parse_args()
    os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[1]))

    runs: dict[int, list[dict]] = {1: [], args.clients: []}
    cli_tokens = cli_s = 0.0
    proc, url = start_server(args)
    try:
        drive(url, 1, 1, 4, args.method)  # warm-up: first-decode costs stay out of the figures
        for r in range(args.rounds):
            for c in (1, args.clients) if r % 2 == 0 else (args.clients, 1):
                runs[c].append(drive(url, c, args.requests, args.max_tokens, args.method))
            # the idle server waits on a condition: the CLI has the CPU to itself
            t, sec = cli_run(args, min(args.requests, len(QUESTIONS)))
            cli_tokens, cli_s = cli_tokens + t, cli_s + sec
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    levels = [pooled(runs[1]), pooled(runs[args.clients])]
    cli = cli_tokens / cli_s
    name = Path(args.model).name if args.model else "bundled SmolLM2-135M"
    print(f"latentlocal serve on {name}: {args.requests} {args.method} requests (its default sampling) "
          f"per level and round, {args.rounds} round(s), max {args.max_tokens} tokens, streamed")
    for r in levels:
        print(f"  {r['clients']} client(s): {r['req_per_s']:.3f} req/s, {r['tok_per_s']:.1f} tok/s, "
              f"p50 {r['p50_s']:.2f} s, p95 {r['p95_s']:.2f} s, {r['tokens']} tokens, "
              f"errors {len(r['errors'])}; prompt tokens decoded {r['prompt_decoded']}, "
              f"reused {r['prompt_reused']}")
        for e in r["errors"][:3]:
            print(f"    error: {e}")
    one, many = levels
    print(f"  throughput {args.clients} clients / 1: {many['tok_per_s'] / one['tok_per_s']:.2f}x tok/s, "
          f"{many['req_per_s'] / one['req_per_s']:.2f}x req/s (goal >= 1.5)")
    print(f"  overhead: 1 client {one['per_request_tok_per_s']:.1f} tok/s through the server vs the "
          f"CLI's {cli:.1f} tok/s -> {one['per_request_tok_per_s'] / cli:.2f} (goal >= 0.9)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
