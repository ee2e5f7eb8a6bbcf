"""Method settings, declared once on each method's frozen config dataclass.

A config field made with :func:`setting` is a user-facing option. Its default, help text, bounds
and choices live there and nowhere else: the CLI flags (``registry.add_method_flags``), the
validation of every config (:func:`validate`, called from ``__post_init__``), bench's
``name:key=value`` labels and ``registry.runner_from_options`` (:meth:`Setting.parse`), the TUI's
forms and the settings a run records (:func:`record`) all read it. The option's name is its long
flag with underscores (``max_topk`` for ``--max-topk``); ``flag=`` gives a field a flag of another
name (SwiReasoning's ``alpha`` is ``--swir-alpha``).

The decoding settings most methods share (:func:`max_tokens`, :func:`temperature`, ...) are
declared through the helpers below, so their help text is written once while each method keeps its
own default.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from latentlocal.errors import LatentLocalError
from latentlocal.phases import Budget

_KEY = "latentlocal.setting"


@dataclass(frozen=True)
class Bounds:
    """An interval a number must lie in; ``None`` leaves that side open-ended."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, v: float) -> bool:
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))

    def describe(self, integer: bool) -> str:
        if self.hi is None and self.lo is not None:
            if self.lo == 0 and self.lo_open:
                return "must be positive"
            if integer and not self.lo_open:
                return f"must be at least {self.lo:g}"
            return f"must be {'>' if self.lo_open else '>='} {self.lo:g}"
        if self.lo is None and self.hi is not None:
            return f"must be {'<' if self.hi_open else '<='} {self.hi:g}"
        return (f"must lie in {'(' if self.lo_open else '['}{self.lo:g}, "
                f"{self.hi:g}{')' if self.hi_open else ']'}")


def positive() -> Bounds:
    return Bounds(0, None, lo_open=True)


def at_least(lo: float) -> Bounds:
    return Bounds(lo, None)


def interval(lo: float, hi: float, closed: str = "[]") -> Bounds:
    """``closed`` is written as the interval is: ``"[]"``, ``"(]"``, ``"[)"`` or ``"()"``."""
    return Bounds(lo, hi, lo_open=closed[0] == "(", hi_open=closed[1] == ")")


@dataclass(frozen=True)
class Setting:
    """One user-facing option of a method, as its config field declares it."""

    name: str                     # the option: long flag with underscores ("max_topk")
    field: str                    # the config field it sets ("alpha" for "swir_alpha")
    type: type                    # int | float | str | bool
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    bounds: Bounds | None = None
    why: str = ""                 # said after the bound in an error ("(0 = off)")
    optional: bool = False        # None is a value (its meaning is in ``shown``)
    shown: str | None = None      # the default as people read it, where the value does not say it
    path: bool = False            # a file path

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def kind(self) -> str:
        """How a form shows it: "bool", "choice", "int", "float" or "str"."""
        if self.type is bool:
            return "bool"
        return "choice" if self.choices else self.type.__name__

    @property
    def default_text(self) -> str:
        """The default as the help text and the TUI's placeholders state it."""
        if self.shown is not None:
            return self.shown
        if self.type is bool:
            return "on" if self.default else "off"
        return "" if self.default is None else str(self.default)

    def describe(self) -> dict[str, Any]:
        """The setting as JSON-ready data (for a server's or a UI's own listing)."""
        b = self.bounds
        return {"name": self.name, "flag": self.flag, "type": self.type.__name__, "default": self.default,
                "default_text": self.default_text, "help": self.help, "choices": list(self.choices),
                "bounds": None if b is None else dataclasses.asdict(b), "optional": self.optional,
                "path": self.path}

    def _expect(self) -> str:
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        what = {bool: "true or false", int: "a whole number", float: "a number"}.get(self.type, "text")
        return what + (" or none" if self.optional else "")

    def _bad(self, value: Any) -> LatentLocalError:
        return LatentLocalError(f"{self.flag} takes {self._expect()}, not {value!r}")

    def parse(self, value: Any) -> Any:
        """``value`` (typed, or text from a label, a form or JSON) as this setting's type,
        checked; a LatentLocalError names the flag and what it takes."""
        value = self.convert(value)
        self.check(value)
        return value

    def convert(self, value: Any) -> Any:
        """``value`` as this setting's type, not yet checked against bounds and choices."""
        if isinstance(value, str):
            text = value.strip()
            if self.optional and text.lower() in ("none", "null", ""):
                return None
            if self.type is bool:
                low = text.lower()
                if low in ("true", "yes", "on", "1"):
                    value = True
                elif low in ("false", "no", "off", "0"):
                    value = False
                else:
                    raise self._bad(value)
            elif self.type in (int, float):
                try:
                    value = self.type(text)
                except ValueError:
                    raise self._bad(value) from None
            else:
                value = text
        return self._coerce(value)

    def _coerce(self, value: Any) -> Any:
        if value is None:
            if self.optional:
                return None
            raise self._bad(value)
        if self.type is bool:
            if not isinstance(value, bool):
                raise self._bad(value)
            return value
        if self.type is int:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self._bad(value)
            if isinstance(value, float) and not value.is_integer():
                raise self._bad(value)
            return int(value)
        if self.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self._bad(value)
            return float(value)
        if not isinstance(value, str):
            raise self._bad(value)
        return value

    def check(self, value: Any) -> None:
        """Raise a LatentLocalError naming the flag when ``value`` is out of bounds or choices."""
        if value is None and self.optional:
            return
        if self.choices and value not in self.choices:
            raise LatentLocalError(f"{self.flag} must be one of {', '.join(self.choices)}, not {value!r}")
        if self.type is float and isinstance(value, float) and not math.isfinite(value):
            raise LatentLocalError(f"{self.flag} must be a finite number, not {value}")
        if self.bounds is not None and value not in self.bounds:
            why = f" {self.why}" if self.why else ""
            raise LatentLocalError(
                f"{self.flag} {self.bounds.describe(self.type is int)}{why}, not {value}")


def setting(default: Any, *, help: str, bounds: Bounds | None = None, choices: tuple[str, ...] = (),
            flag: str | None = None, why: str = "", shown: str | None = None, path: bool = False) -> Any:
    """A config field that is a user-facing option (see the module docstring).

    ``flag`` is the long flag when it is not the field's name (``"swir-alpha"``); ``why`` follows
    the bound in an error; ``shown`` is the default as people read it when the value alone does not
    say it (``None`` meaning "no cap").
    """
    meta = {"help": help, "bounds": bounds, "choices": tuple(choices), "flag": flag, "why": why,
            "shown": shown, "path": path}
    return dataclasses.field(default=default, metadata={_KEY: meta})


def _value_type(hint: Any) -> tuple[type, bool]:
    """(the value type, whether None is allowed) from an annotation such as ``int | None``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"a setting needs one value type, not {hint}")
        return args[0], True
    return hint, False


@functools.cache
def settings_of(cls: type) -> tuple[Setting, ...]:
    """The settings ``cls`` declares, in field order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(_KEY)
        if meta is None:
            continue
        kind, optional = _value_type(hints[f.name])
        if kind not in (int, float, str, bool):
            raise TypeError(f"{cls.__name__}.{f.name}: a setting is an int, float, str or bool, not {kind}")
        name = (meta["flag"] or f.name).replace("-", "_")
        out.append(Setting(name=name, field=f.name, type=kind, default=f.default, help=meta["help"],
                           choices=meta["choices"], bounds=meta["bounds"], why=meta["why"],
                           optional=optional, shown=meta["shown"], path=meta["path"]))
    return tuple(out)


def validate(config: Any) -> None:
    """Check (and coerce: an int given for a float) every declared setting of a config; called
    from the config's ``__post_init__`` so every way of building one is checked."""
    for s in settings_of(type(config)):
        value = s.parse(getattr(config, s.field))
        if value is not getattr(config, s.field):
            object.__setattr__(config, s.field, value)


def build(cls: type, options: Mapping[str, Any]) -> Any:
    """``cls`` from options by option name (already parsed); unset options take the defaults."""
    by_name = {s.name: s for s in settings_of(cls)}
    return cls(**{by_name[k].field: v for k, v in options.items()})


def record(config: Any) -> dict[str, Any]:
    """The config's settings by option name: what ``--json`` and ``results.jsonl`` record."""
    return {s.name: getattr(config, s.field) for s in settings_of(type(config))}


# ---------------------------------------------------------------------------------------------
# the decoding settings most methods share: one help text, each method's own default


def max_tokens(default: int = 512) -> Any:
    return setting(default, help="new tokens per answer", bounds=positive())


def seed(default: int | None = None) -> Any:
    """``None``: the engine's seed (the CLI's ``--seed`` seeds both)."""
    return setting(default, help="random seed", bounds=at_least(0),
                   shown="engine's" if default is None else None)


def temperature(default: float, *, bounds: Bounds | None = None, why: str = "(0 = greedy)") -> Any:
    return setting(default, help="sampling temperature (0 = greedy)", bounds=bounds or at_least(0), why=why)


def top_k(default: int) -> Any:
    return setting(default, help="top-k filter (0 = off)", bounds=at_least(0), why="(0 = off)")


def top_p(default: float) -> Any:
    # 0 keeps only the most likely token, as in OpenAI's API and llama.cpp's sampler
    return setting(default, help="top-p filter (1 = off, 0 = the top token only)", bounds=interval(0, 1, "[]"))


def min_p(default: float) -> Any:
    return setting(default, help="min-p filter relative to the top token (0 = off)",
                   bounds=interval(0, 1, "[)"))


def answer_reserve(default: int) -> Any:
    return setting(default, help="thinking models: tokens kept for the answer after </think>, which is "
                                 "forced when thinking reaches --max-tokens minus this (at most half of "
                                 "--max-tokens)", bounds=at_least(0))


class Budgeted:
    """Mixed into a method's frozen config that declares ``max_tokens`` and ``answer_reserve``:
    the config is validated when it is made (every setting's bounds, then the reserve against
    ``max_tokens``), and ``budget`` is the split between thinking and the answer."""

    max_tokens: int
    answer_reserve: int

    def __post_init__(self) -> None:
        validate(self)
        self.budget  # noqa: B018 - Budget checks the reserve against max_tokens

    @property
    def budget(self) -> Budget:
        return Budget(self.max_tokens, self.answer_reserve)
