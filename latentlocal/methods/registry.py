"""Method names, their settings, and runners built from options.

The CLI, the benchmark, the TUI and the server all build methods here, so an option means the
same everywhere. Each method module lists ``METHODS: list[MethodSpec]``; a spec names the frozen
config dataclass whose :func:`~latentlocal.methods.settings.setting` fields are the method's
options (see ``methods/settings.py``) and a ``build`` that turns a config into a runner
(``methods/spec.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from latentlocal.errors import LatentLocalError
from latentlocal.events import Event, Summary
from latentlocal.methods import settings as st
from latentlocal.methods.settings import Setting
from latentlocal.methods.chain import Chain, ChainBuilder
from latentlocal.methods.spec import MethodSpec, Runner

__all__ = ["MethodSpec", "Runner", "Setting", "add_method_flags", "canonical", "chain_from_options",
           "config_from_options",
           "make_runner", "method_names", "method_settings", "options_from_args", "parse_options",
           "runner_from_options", "spec", "specs"]

# modules holding methods, in the order the help text and the TUI list them
_MODULES = (
    "latentlocal.methods.cot",
    "latentlocal.methods.soft_thinking",
    "latentlocal.methods.seal",
    "latentlocal.methods.soft_reasoning",
    "latentlocal.methods.swi_reasoning",
)

# The decoding options shown first, in one "all methods" group: each method that has them gives
# its own default.
SHARED = ("max_tokens", "seed", "temperature", "top_k", "top_p", "min_p", "answer_reserve")
SHARED_GROUP = "decoding (all methods)"


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


def spec(method: str) -> MethodSpec:
    return _by_name()[canonical(method)]


def method_settings(method: str) -> list[Setting]:
    """The settings of ``method``: the shared decoding ones first (in :data:`SHARED` order), then
    its own in declaration order. Each has name, type, default, help, choices and bounds."""
    own = spec(method).settings
    order = {name: i for i, name in enumerate(SHARED)}
    return sorted(own, key=lambda s: order.get(s.name, len(SHARED)))


def parse_options(method: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` (by option name; typed values or text) checked and typed for ``method``.
    ``None`` means "the method's default" and is dropped."""
    s = spec(method)
    known = {x.name: x for x in s.settings}
    out: dict[str, Any] = {}
    for key, value in options.items():
        name = str(key).strip().replace("-", "_")
        if name not in known:
            raise LatentLocalError(
                f"unknown option {key!r} for {s.name}; use one of its options: {', '.join(known)}"
            )
        if value is not None:
            out[name] = known[name].parse(value)
    return out


def config_from_options(method: str, options: Mapping[str, Any]) -> Any:
    """The validated config ``method`` runs with (after a delegation such as cot -> sc)."""
    return _config(method, options)[1]


def _config(method: str, options: Mapping[str, Any]) -> tuple[MethodSpec, Any]:
    s = spec(method)
    typed = parse_options(s.name, options)
    other = s.delegate(typed) if s.delegate is not None else None
    if other is not None and canonical(other) != s.name:
        return _config(other, options)
    return s, st.build(s.config, typed)


def runner_from_options(method: str, options: Mapping[str, Any]) -> Runner:
    """A runner ``(engine, question, cancel) -> events`` for ``method``.

    ``options`` are by the CLI's long-flag names with underscores (``max_topk``, ``candidates``,
    ``temperature``); values typed or text; ``None`` or absent = the method's default. An unknown
    option, a wrong type or an out-of-range value raises a LatentLocalError naming the flag and
    the fix, before any model is needed. The run's Summary records the settings it used
    (``settings``, by option name).
    """
    s, cfg = _config(method, options)
    return _recording(s.build(cfg), st.record(cfg))


def chain_from_options(method: str, options: Mapping[str, Any]) -> ChainBuilder:
    """A chain builder ``(engine, question) -> Chain`` for ``method`` (``bench --batch``), its
    chains' Summaries recording the settings as :func:`runner_from_options`' do. A method
    without a batched form raises a LatentLocalError saying why."""
    s, cfg = _config(method, options)
    if s.chain is None:
        raise LatentLocalError(f"{s.name} cannot decode several problems at once: {s.unbatched}")
    build, record = s.chain(cfg), st.record(cfg)

    def builder(engine: Any, question: str) -> Chain:
        chain = build(engine, question)
        chain.settings = dict(record)
        return chain

    return builder


def _recording(run: Runner, record: dict[str, Any]) -> Runner:
    def runner(engine: Any, question: str, cancel: threading.Event | None = None) -> Iterator[Event]:
        return _with_settings(run(engine, question, cancel), record)  # run's own errors raise here

    return runner


def _with_settings(events: Iterator[Event], record: dict[str, Any]) -> Iterator[Event]:
    for e in events:
        yield dataclasses.replace(e, settings=dict(record)) if isinstance(e, Summary) else e


def options_from_args(method: str, args: Any) -> dict[str, Any]:
    """The options of ``method`` set in parsed CLI arguments (unset flags are ``None``)."""
    return {x.name: v for x in spec(method).settings if (v := getattr(args, x.name, None)) is not None}


def check_flags_used(methods: Iterable[str], args: Any) -> None:
    """Refuse a method flag set on the command line that none of ``methods`` takes: ``run
    --alpha 5`` without ``--method seal`` ran plain cot and said nothing of the flag."""
    wanted = {canonical(m) for m in methods}
    takes = {x.name for m in wanted for x in spec(m).settings}
    for s in specs():
        for x in s.settings:
            if x.name not in takes and getattr(args, x.name, None) is not None:
                owners = sorted(o.name for o in specs() if any(y.name == x.name for y in o.settings))
                raise LatentLocalError(
                    f"{x.flag} is an option of {' and '.join(owners)}, not of {', '.join(sorted(wanted))}; "
                    f"pick that method (--method {owners[0]}) or leave the flag out")


def make_runner(method: str, args: Any) -> Runner:
    """A runner for ``method`` with the options parsed CLI arguments set."""
    return runner_from_options(method, options_from_args(method, args))


# ---------------------------------------------------------------------------------------------
# command-line flags


def _default_help(entries: list[tuple[str, Setting]]) -> str:
    """"default 512" when every method agrees, else "default 512; soft-reasoning 300"."""
    labels = [(m, s.default_text) for m, s in entries if s.default_text]
    if not labels or all(s.type is bool and not s.default for _, s in entries):
        return ""
    common, _ = Counter(label for _, label in labels).most_common(1)[0]
    rest = [f"{m} {label}" for m, label in labels if label != common]
    return f" (default {common}{'; ' + ', '.join(rest) if rest else ''})"


def _add_flag(group: Any, entries: list[tuple[str, Setting]]) -> None:
    s = entries[0][1]
    for m, other in entries[1:]:
        if (other.type, other.choices) != (s.type, s.choices):
            raise TypeError(f"{s.flag}: {entries[0][0]} and {m} declare it with different types")
    text = (s.help + _default_help(entries)).replace("%", "%%")
    if s.type is bool:
        group.add_argument(s.flag, action="store_true", default=None, help=text)
    else:
        group.add_argument(s.flag, type=None if s.choices else s.type, choices=s.choices or None,
                           default=None, metavar="FILE" if s.path else None, help=text)


def add_method_flags(p: argparse.ArgumentParser, with_method: bool = True) -> None:
    """``--method`` and every method's settings as flags, defaults ``None`` (= the method's own)."""
    names = ", ".join(sorted(_by_name()))
    if with_method:
        p.add_argument("--method", default="cot", help=f"one of: {names} (default cot)")
    by_option: dict[str, list[tuple[str, Setting]]] = {}
    owner: dict[str, str] = {}
    for s in specs():
        for x in s.settings:
            by_option.setdefault(x.name, []).append((s.name, x))
            owner.setdefault(x.name, s.name)
    g = p.add_argument_group(SHARED_GROUP)
    for name in SHARED:
        if name in by_option:
            _add_flag(g, by_option[name])
    for s in specs():
        own = [n for n, o in owner.items() if o == s.name and n not in SHARED]
        if own:
            g = p.add_argument_group(f"{s.name} options")
            for name in own:
                _add_flag(g, by_option[name])
