"""Method names, their command-line flags, and runners built from parsed options.

The CLI, the benchmark and the TUI all build methods here, so a flag means the same everywhere.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable, Iterator
from typing import Any

from latentlocal.errors import LatentLocalError
from latentlocal.events import Event

Runner = Callable[[Any, str, "threading.Event | None"], Iterator[Event]]

ALIASES = {"sc": "self-consistency", "self-consistency": "self-consistency", "cot": "cot"}
METHODS = ("cot", "self-consistency")


def canonical(name: str) -> str:
    key = name.strip().lower()
    if key not in ALIASES:
        raise LatentLocalError(f"unknown method {name!r}; choose from {', '.join(sorted(set(ALIASES)))}")
    return ALIASES[key]


def add_method_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default="cot", help=f"one of: {', '.join(sorted(set(ALIASES)))} (default cot)")
    g = p.add_argument_group("decoding (all methods)")
    g.add_argument("--max-tokens", type=int, default=512, help="new tokens per answer (default 512)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature (cot: 0 = greedy, the default; sc: 0.8)")
    g.add_argument("--top-k", type=int, default=None, help="top-k filter (0 = off)")
    g.add_argument("--top-p", type=float, default=None, help="top-p filter (1 = off)")
    g.add_argument("--min-p", type=float, default=None, help="min-p filter relative to the top token (0 = off)")
    g.add_argument("--samples", type=int, default=None,
                   help="cot: N > 1 runs self-consistency with N sampled chains; sc: default 5")


def _opt(args: Any, name: str, default: Any) -> Any:
    v = getattr(args, name, None)
    return default if v is None else v


def _check_positive(name: str, value: float) -> None:
    if value <= 0:
        raise LatentLocalError(f"--{name.replace('_', '-')} must be positive, not {value}")


def make_runner(method: str, args: Any) -> Runner:
    """A runner ``(engine, question, cancel) -> events`` for ``method`` with options from ``args``."""
    from latentlocal.methods import cot
    from latentlocal.sampling import SamplingConfig

    name = canonical(method)
    max_tokens = _opt(args, "max_tokens", 512)
    _check_positive("max_tokens", max_tokens)
    seed = _opt(args, "seed", 0)
    samples = _opt(args, "samples", None)
    if name == "cot" and samples is not None and samples > 1:
        name = "self-consistency"
    if name == "cot":
        sampling = SamplingConfig(
            temperature=_opt(args, "temperature", 0.0),
            top_k=_opt(args, "top_k", 40),
            top_p=_opt(args, "top_p", 0.95),
            min_p=_opt(args, "min_p", 0.05),
        )
        cfg = cot.CotConfig(max_tokens=max_tokens, sampling=sampling, seed=seed)
        return lambda engine, q, cancel=None: cot.run_cot(engine, q, cfg, cancel)
    sampling = SamplingConfig(
        temperature=_opt(args, "temperature", 0.8),
        top_k=_opt(args, "top_k", 40),
        top_p=_opt(args, "top_p", 0.95),
        min_p=_opt(args, "min_p", 0.05),
    )
    n = samples if samples is not None else 5
    _check_positive("samples", n)
    sc_cfg = cot.SelfConsistencyConfig(samples=n, max_tokens=max_tokens, sampling=sampling, seed=seed)
    return lambda engine, q, cancel=None: cot.run_self_consistency(engine, q, sc_cfg, cancel)
