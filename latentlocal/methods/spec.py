"""What a method module hands the registry: a ``MethodSpec`` naming its settings dataclass.

Below the method modules and the registry both: a method imports this, never the registry that
imports it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from latentlocal.events import Event
from latentlocal.methods import settings
from latentlocal.methods.chain import ChainBuilder
from latentlocal.methods.settings import Setting

Runner = Callable[[Any, str, "threading.Event | None"], Iterator[Event]]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    title: str                      # how the TUI lists it
    description: str
    config: type                    # the frozen dataclass whose setting() fields are the options
    build: Callable[[Any], Runner]  # a validated config -> runner
    aliases: tuple[str, ...] = ()
    # another method to run instead, chosen from the parsed options (cot with samples > 1 is sc)
    delegate: Callable[[Mapping[str, Any]], str | None] | None = None
    # a validated config -> a chain builder (methods/chain.py): what `bench --batch` decodes
    # several problems at once with; None for a method without a batched form, ``unbatched``
    # saying why
    chain: Callable[[Any], ChainBuilder] | None = None
    unbatched: str = "it has no batched form yet"

    @property
    def settings(self) -> tuple[Setting, ...]:
        return settings.settings_of(self.config)
