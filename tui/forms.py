"""Method settings forms, generated from the registry's argparse flags.

The registry adds the shared decoding flags and every method's own flags to a parser; a form for
method M shows the shared group plus M's group (``"<name> options"``), so a newly registered
method's flags and help texts appear without touching the TUI. Values are turned back into an
argv list and parsed by the same parser, so a setting means exactly what the CLI flag means.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import Any

from latentlocal.errors import LatentLocalError
from latentlocal.methods import registry

SHARED_GROUP = "decoding (all methods)"

# Methods that read a flag defined in another method's group (self-consistency's sample count is
# the cot group's --samples). Anything not listed here comes from the method's own group.
BORROWED: dict[str, tuple[str, ...]] = {"sc": ("samples",)}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D401 - argparse API
        raise LatentLocalError(message)


@dataclass(frozen=True)
class Field:
    dest: str
    flag: str
    kind: str                      # "int" | "float" | "str" | "bool" | "choice"
    help: str
    choices: tuple[str, ...] = ()
    default: Any = None
    path: bool = False             # a file path (metavar FILE)

    @property
    def label(self) -> str:
        return self.flag.lstrip("-")

    @property
    def default_text(self) -> str:
        """The default as the help text states it ("default 0.6"), for placeholders."""
        m = re.search(r"default:?\s*([^;,)]+)", self.help or "")
        if m:
            return m.group(1).strip()
        m = re.search(r"\(([-+0-9.eE]+)\)\s*$", self.help or "")  # "... weight (1)"
        if m:
            return m.group(1)
        return "" if self.default in (None, False) else str(self.default)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="latentlocal", add_help=False)
    registry.add_method_flags(p, with_method=False)
    return p


def _field(action: argparse.Action) -> Field | None:
    if not action.option_strings:
        return None
    flag = next((s for s in action.option_strings if s.startswith("--")), action.option_strings[0])
    help_text = (action.help or "").replace("%%", "%")
    if isinstance(action, argparse._StoreTrueAction):
        return Field(action.dest, flag, "bool", help_text, default=False)
    if action.choices:
        return Field(action.dest, flag, "choice", help_text, tuple(str(c) for c in action.choices),
                     action.default)
    kind = {int: "int", float: "float"}.get(action.type, "str")
    return Field(action.dest, flag, kind, help_text, default=action.default,
                 path=(action.metavar or "").upper() in ("FILE", "PATH"))


def fields_for(method: str, parser: argparse.ArgumentParser | None = None) -> list[Field]:
    """The shared decoding fields, then the method's own (and borrowed) fields."""
    parser = parser or build_parser()
    name = registry.canonical(method)
    shared: list[Field] = []
    own: list[Field] = []
    borrowed = BORROWED.get(name, ())
    for group in parser._action_groups:
        for action in group._group_actions:
            f = _field(action)
            if f is None:
                continue
            if group.title == SHARED_GROUP:
                shared.append(f)
            elif group.title == f"{name} options" or f.dest in borrowed:
                own.append(f)
    return shared + own


def to_argv(fields: list[Field], values: dict[str, Any]) -> list[str]:
    """An argv list for the values the user set (empty strings and False mean "method default")."""
    argv: list[str] = []
    for f in fields:
        v = values.get(f.dest)
        if f.kind == "bool":
            if v is True:
                argv.append(f.flag)
            continue
        if v is None:
            continue
        text = str(v).strip()
        if text:
            argv += [f"{f.flag}={text}"]
    return argv


def namespace(method: str, values: dict[str, Any],
              parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Parsed options for ``method``; a LatentLocalError names a bad value."""
    parser = parser or build_parser()
    fields = fields_for(method, parser)
    return parser.parse_args(to_argv(fields, values))


def make_runner(method: str, values: dict[str, Any], overrides: dict[str, Any] | None = None):
    """The registry's runner for ``method`` with the form's values (and overrides on top)."""
    merged = dict(values)
    merged.update({k: v for k, v in (overrides or {}).items() if v not in (None, "")})
    ns = namespace(method, merged)
    return registry.make_runner(method, ns)


def typed(field: Field, text: str) -> Any:
    """A form value as it is stored in the config (int/float/str/bool), or None when empty."""
    if field.kind == "bool":
        return bool(text)
    text = str(text).strip()
    if not text:
        return None
    try:
        if field.kind == "int":
            return int(text)
        if field.kind == "float":
            return float(text)
    except ValueError:
        return text
    return text
