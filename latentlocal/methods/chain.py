"""One problem's decoding as a chain of steps, and the loop that runs one chain alone.

A chain holds one sequence's decoding state (cot's stream, Soft Thinking's concept loop). Its
:meth:`Chain.step` takes the logits of the chain's last decode and returns the events that step
produced and what to feed next (a :class:`Feed`: token ids or one embedding row), or no feed once
the chain has finished. Who decodes the feed is not the chain's business: :func:`run_alone`
decodes it in sequence 0 of a cleared context (``latentlocal run``, ``bench`` one problem at a
time), and ``latentlocal.batching.StepBatcher`` decodes the feeds of many chains, each in its own
sequence, together (token rows in one ``llama_decode``, embedding rows in another). So a method's
step is the same code alone and batched, and only the numerics of the batch around it differ.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from latentlocal.engine import Engine
from latentlocal.events import Event, Summary


@dataclass(frozen=True, eq=False)
class Steering:
    """A control vector a feed is decoded under (SEAL's delimiters): ``scale * directions[il]``
    added to the output of block ``il``. One object per run: it is told apart by identity."""

    directions: Mapping[int, np.ndarray]
    scale: float


def apply_steering(engine: Engine, steering: Steering | None) -> None:
    """Make ``steering`` (None: no vector) the engine's control vector, unless it already is: each
    change costs llama.cpp a scheduler re-reserve, and llama.cpp adds the vector to every row of
    a decode, so whoever decodes sets it before each decode."""
    if steering is None:
        engine.set_control_vector(None)
    elif engine.control_vector_tag is not steering:
        engine.set_control_vector(steering.directions, steering.scale, tag=steering)


@dataclass(frozen=True)
class Feed:
    """What one step feeds: token ids (a single one joins a batched token step) or one row,
    decoded under ``steering`` (a batch decodes the feeds of each steering apart)."""

    tokens: tuple[int, ...] = ()
    row: np.ndarray | None = None
    steering: Steering | None = None

    def decode(self, engine: Engine, seq: int = 0) -> None:
        apply_steering(engine, self.steering)
        if self.row is not None:
            engine.decode_embeddings(self.row, seq=seq)
        else:
            engine.decode_tokens(list(self.tokens), seq=seq)


class Chain(Protocol):
    """One problem's decoding, one step at a time (see the module docstring)."""

    prompt: Sequence[int]    # decoded into the chain's sequence before its first step
    cells: int               # KV cells it may occupy at most: prompt + budget (+ forced tokens)
    notes: list[Event]       # events before the first step (a budget cut to the context)
    settings: dict[str, Any]  # recorded on the Summary (the registry fills it)

    @property
    def wants_logits(self) -> bool:
        """False when the next step feeds a forced input that does not depend on the logits."""

    def step(self, logits: np.ndarray | None) -> tuple[list[Event], Feed | None]: ...

    def cancel(self) -> None:
        """Stop at this point (the Summary's finish reason becomes ``cancelled``)."""

    def summary(self) -> Summary: ...


# (engine, question) -> a fresh chain: what a method offers to be batched
ChainBuilder = Callable[[Engine, str], Chain]


def run_alone(engine: Engine, chain: Chain, cancel: threading.Event | None = None) -> Iterator[Event]:
    """Decode one chain in sequence 0 of a cleared context: prompt, then step by step."""
    engine.clear()
    engine.decode_tokens(list(chain.prompt))
    yield from chain.notes
    while True:
        if cancel is not None and cancel.is_set():
            chain.cancel()
            break
        events, feed = chain.step(engine.logits(-1) if chain.wants_logits else None)
        yield from events
        if feed is None:
            break
        feed.decode(engine)
    yield chain.summary()
