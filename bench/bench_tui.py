"""The terminal UI's Run tab against the CLI, decoding the same prompt side by side (issue 14).

    python bench/bench_tui.py [--model PATH] [--threads N] [--max-tokens 256] [--reps 3]
                              [--methods cot,soft-thinking] [--busy 0]

For each method, prints the Run tab's tokens/s divided by the CLI's (goal >= 0.9), one ratio per
pair of runs, with the pairs' range and median:

  CLI      ``latentlocal run PROMPT --method M --max-tokens N --json``, run as its own process
           as a user runs it: ``cli.open_engine`` and the method's generator consumed on the main
           thread, each event printed (to a pipe this script reads).
  Run tab  the app driven headlessly in this process with ``App.run_test``: it loads the model
           itself (its Models tab path and thread setting), the prompt and method settings are in
           its config, and Ctrl+R is pressed; the generation runs in the app's worker thread and
           streams into the Output and Metrics panels as it does for a user.

The CLI runs in a process of its own because the process matters: llama.cpp's CPU threads (an
OpenMP team in a GCC build) spin-wait at every graph node for as long as the process has no more
OpenMP threads than cores, and yield sooner once it has, so a CLI generation in a process that
had also run the app's worker threads was up to 5x faster under load than ``latentlocal run``.

Both use the defaults a user gets (threads: all cores, at most 8, unless --threads; GNU OpenMP's
spin count: ``latentlocal.openmp``'s, or the one this script is given, for both; the Run tab's
200 ms screen updates), the same
prompt, method settings and seed (their token counts are printed and must match), and tokens/s
from the Summary event (generated tokens / the generator's wall time) for both. The two run one
after the other, never together, alternating which goes first; a warm-up run of each comes
first. ``--busy N`` starts N busy-looping processes for the measurement (the load of other work
on the machine) and stops them at the end.

Also printed: the UI thread's CPU time from Ctrl+R to the end of the generation's worker, as a
share of that wall time (the UI's cost, which on a 2-core machine is taken from the threads
decoding the model; what the app does after the worker ended is not counted).

Timings share the machine with whatever else runs: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

QUESTION = ("A baker makes 24 muffins and sells 3 boxes of 6. How many muffins are left? "
            "Explain each step.")
SIZE = (120, 40)  # the terminal the app is drawn in (cells)
CLI_ENV: dict[str, str] = {}


def isolate_config() -> str:
    """Point HOME and the XDG folders at a temporary folder: the user's settings stay untouched."""
    home = tempfile.mkdtemp(prefix="bench-tui-")
    os.environ["HOME"] = home
    os.environ["XDG_CONFIG_HOME"] = os.path.join(home, "config")
    os.environ["XDG_DATA_HOME"] = os.path.join(home, "data")
    os.environ.pop("LATENTLOCAL_MODELS", None)
    return home


class CliResult(NamedTuple):
    tokens_per_s: float
    generated_tokens: int


def run_cli(method: str, max_tokens: int, threads: int | None, model: str | None) -> CliResult:
    """One ``latentlocal run`` process; its Summary's tokens/s and token count."""
    argv = [sys.executable, "-m", "latentlocal.cli", "run", QUESTION, "--method", method,
            "--max-tokens", str(max_tokens), "--json"]
    if threads:
        argv += ["--threads", str(threads)]
    if model:
        argv += ["--model", model]
    # the environment the user gave this script, not the one the app set for itself
    out = subprocess.run(argv, capture_output=True, text=True, check=True, env=CLI_ENV).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    if summary.get("type") != "summary":
        raise SystemExit(f"the CLI printed no summary last: {summary}")
    return CliResult(summary["tokens_per_s"], summary["generated_tokens"])


async def until(cond, timeout: float, what: str) -> None:
    """Wait for ``cond`` with asyncio.sleep: Pilot.pause would post work to every widget."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def run_tab(app, pilot, method: str, max_tokens: int):
    """One Ctrl+R on the Run tab; returns (Summary, UI thread CPU seconds / wall seconds)."""
    from tui.screens.run import RunView
    from tui.widgets.method_form import MethodForm

    form = app.query_one("#run-form", MethodForm)
    if form.method != method:
        await form.select_method(method)
    form.set_value("max_tokens", str(max_tokens))
    await pilot.pause()
    view = app.query_one(RunView)
    before = view.last_summary
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    await pilot.press("ctrl+r")
    # wait on the generation's worker (no polling while it runs: each wake-up of this thread
    # would be the benchmark's cost, not the app's), then for its last messages
    await app.workers.wait_for_complete([w for w in app.workers if w.group == "engine"])
    # until the worker ended: the UI's time beside the decoding (after it the app draws the end
    # and collects its heap, tui.heap, which takes nothing from the model)
    share = (time.thread_time() - cpu0) / (time.perf_counter() - wall0)
    await until(lambda: app.job is None and view.last_summary not in (None, before), 60,
                "the run's end")
    # what the app does once a job ended (its last frames, tui.heap's collection) happens now,
    # as for a user, not while the next measurement runs (a CLI run blocks this event loop)
    await pilot.pause()
    return view.last_summary, share


def busy_processes(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


async def main_async(args) -> None:
    from tui import config as cfgmod  # first: the app's OpenMP setting precedes llama.cpp's load
    from tui.app import LatentLocalApp
    from latentlocal.engine import default_threads
    from latentlocal.models import resolve_model

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    path = str(resolve_model(args.model))
    cfg = cfgmod.Config()
    cfg.model.path = path
    cfg.model.threads = args.threads or 0
    cfg.run.prompt = QUESTION
    cfg.run.method = methods[0]
    cfgmod.save(cfg)

    app = LatentLocalApp()  # loads the configured model itself, as at a user's start
    results: dict[str, list[tuple[float, float, int, int, float]]] = {m: [] for m in methods}
    busy: list[subprocess.Popen] = []
    async with app.run_test(size=SIZE) as pilot:
        await until(lambda: app.engine is not None and app.job is None, 600, "the model load")
        await pilot.pause()
        print(f"model {app.engine.model.name}, CLI {args.threads or default_threads()} threads, "
              f"Run tab {app.engine.n_threads} threads, {os.cpu_count()} CPUs, max {args.max_tokens} tokens, "
              f"{args.reps} pairs per method, {args.busy} busy processes; GOMP_SPINCOUNT CLI "
              f"{CLI_ENV.get('GOMP_SPINCOUNT', 'latentlocal')}, Run tab {os.environ.get('GOMP_SPINCOUNT', 'default')}",
              flush=True)
        try:
            for m in methods:  # warm-up: first decodes, Soft Thinking's embedding table
                run_cli(m, 16, args.threads, args.model)
                await run_tab(app, pilot, m, 16)
            busy = busy_processes(args.busy)
            for rep in range(args.reps):
                for m in methods:
                    cli = (m, args.max_tokens, args.threads, args.model)
                    if rep % 2 == 0:
                        c = run_cli(*cli)
                        t, share = await run_tab(app, pilot, m, args.max_tokens)
                    else:
                        t, share = await run_tab(app, pilot, m, args.max_tokens)
                        c = run_cli(*cli)
                    r = (t.tokens_per_s, c.tokens_per_s, t.generated_tokens, c.generated_tokens, share)
                    results[m].append(r)
                    print(f"  {m:14s} pair {rep + 1}: Run tab {r[0]:5.1f} tok/s ({r[2]} tokens), "
                          f"CLI {r[1]:5.1f} tok/s ({r[3]} tokens) -> {r[0] / r[1]:.3f}; "
                          f"UI thread {100 * share:.0f}% of a core", flush=True)
        finally:
            for p in busy:
                p.kill()
                p.wait()

    print("Run tab tokens/s / CLI tokens/s (goal >= 0.9):")
    for m in methods:
        ratios = [t / c for t, c, *_ in results[m]]
        same = all(nt == nc for _, _, nt, nc, _ in results[m])
        ui = statistics.median(s for *_, s in results[m])
        print(f"  {m:14s} median {statistics.median(ratios):.3f}, range {min(ratios):.3f}-"
              f"{max(ratios):.3f} over {len(ratios)} pairs; CLI median "
              f"{statistics.median(c for _, c, *_ in results[m]):.1f} tok/s; UI thread median "
              f"{100 * ui:.0f}% of a core" + ("" if same else "; TOKEN COUNTS DIFFER"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for both (default: what each uses by default, all cores up to 8)")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3, help="pairs of runs per method")
    ap.add_argument("--methods", default="cot,soft-thinking")
    ap.add_argument("--busy", type=int, default=0,
                    help="busy-looping processes to run beside the measurement (default 0)")
    args = ap.parse_args()
    isolate_config()
    CLI_ENV.update(os.environ)  # the user's, before latentlocal sets GOMP_SPINCOUNT in this process
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
