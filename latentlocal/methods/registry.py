"""Method names, their command-line flags, and runners built from parsed options.

The CLI, the benchmark and the TUI all build methods here, so a flag means the same everywhere.
Each method module lists ``METHODS: list[MethodSpec]`` (``latentlocal.methods.spec``); a spec's
``add_flags`` adds that method's own flags only. The flags every method shares are defined here with ``None`` defaults so each
method applies its own default.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from latentlocal.errors import LatentLocalError
from latentlocal.methods.spec import MethodSpec, Runner

# modules holding methods, in the order the help text and the TUI list them
_MODULES = (
    "latentlocal.methods.cot",
    "latentlocal.methods.soft_thinking",
    "latentlocal.methods.seal",
    "latentlocal.methods.soft_reasoning",
    "latentlocal.methods.swi_reasoning",
)


def specs() -> list[MethodSpec]:
    return [spec for m in _MODULES for spec in importlib.import_module(m).METHODS]


def method_names() -> list[str]:
    return [s.name for s in specs()]


def _by_name() -> dict[str, MethodSpec]:
    return {alias: s for s in specs() for alias in (s.name, *s.aliases)}


def canonical(name: str) -> str:
    table = _by_name()
    key = name.strip().lower()
    if key not in table:
        raise LatentLocalError(f"unknown method {name!r}; choose from {', '.join(sorted(table))}")
    return table[key].name


def add_method_flags(p: argparse.ArgumentParser, with_method: bool = True) -> None:
    names = ", ".join(sorted(_by_name()))
    if with_method:
        p.add_argument("--method", default="cot", help=f"one of: {names} (default cot)")
    g = p.add_argument_group("decoding (all methods)")
    g.add_argument("--max-tokens", type=int, default=None, help="new tokens per answer (default 512)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--temperature", type=float, default=None,
                   help="temperature (cot: 0 = greedy, the default; sc 0.8; soft-thinking 0.6)")
    g.add_argument("--top-k", type=int, default=None, help="top-k filter (0 = off)")
    g.add_argument("--top-p", type=float, default=None, help="top-p filter (1 = off)")
    g.add_argument("--min-p", type=float, default=None, help="min-p filter relative to the top token (0 = off)")
    g.add_argument("--answer-reserve", type=int, default=None,
                   help="thinking models: tokens kept for the answer after </think>, which is forced "
                        "when thinking reaches --max-tokens minus this (default 256, at most half "
                        "of --max-tokens)")
    for spec in specs():
        if spec.add_flags is not None:
            spec.add_flags(p.add_argument_group(f"{spec.name} options"))


def make_runner(method: str, args: Any) -> Runner:
    """A runner ``(engine, question, cancel) -> events`` for ``method`` with options from ``args``."""
    return _by_name()[canonical(method)].from_args(args)
