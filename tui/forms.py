"""Method settings forms, from the settings each method's config declares.

A form for method M shows ``registry.method_settings(M)`` (the shared decoding settings first),
each with the type, choices, default and help its declaration gives, so a newly registered
method's settings appear without touching the TUI. The form's values go to
``registry.runner_from_options`` as they are: a setting means exactly what the CLI flag means,
and a bad value gets the same error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from latentlocal.errors import LatentLocalError
from latentlocal.methods import registry
from latentlocal.methods.registry import Runner
from latentlocal.methods.settings import Setting

Field = Setting


def fields_for(method: str) -> list[Setting]:
    """The shared decoding fields, then the method's own."""
    return registry.method_settings(method)


def options(method: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The form's values as options for ``method``: empty text and ``None`` mean "the method's
    default" and are left out, and so are saved values of settings the method no longer has."""
    known = {f.name for f in fields_for(method)}
    return {k: v for k, v in values.items()
            if k in known and v is not None and not (isinstance(v, str) and not v.strip())}


def make_runner(method: str, values: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Runner:
    """The registry's runner for ``method`` with the form's values (and overrides on top)."""
    merged = {**options(method, values), **options(method, overrides or {})}
    return registry.runner_from_options(method, merged)


def typed(field: Setting, text: Any) -> Any:
    """A form value as it is stored in the config: typed when it parses, None when empty, and
    the text itself when it does not parse (so the run reports the error and nothing is lost)."""
    if field.kind == "bool":
        return bool(text)
    text = str(text).strip()
    if not text:
        return None
    try:
        return field.convert(text)
    except LatentLocalError:  # kept as typed; runner_from_options names the problem
        return text
