"""What a method module hands the registry (``MethodSpec``), and the option helpers its ``from_args`` uses.

Below the method modules and the registry both: a method imports this, never the registry that
imports it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from latentlocal.errors import LatentLocalError
from latentlocal.events import Event

Runner = Callable[[Any, str, "threading.Event | None"], Iterator[Event]]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    description: str
    from_args: Callable[[Any], Runner]
    add_flags: Callable[[Any], None] | None = None
    aliases: tuple[str, ...] = ()


def opt(args: Any, name: str, default: Any) -> Any:
    """``args.name`` unless unset (None or absent), else the method's own default."""
    v = getattr(args, name, None)
    return default if v is None else v


def check_positive(name: str, value: float) -> None:
    if value <= 0:
        raise LatentLocalError(f"--{name.replace('_', '-')} must be positive, not {value}")


def check_range(name: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise LatentLocalError(f"--{name.replace('_', '-')} must lie in [{lo}, {hi}], not {value}")
