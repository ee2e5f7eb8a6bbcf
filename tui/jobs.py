"""Running library generators off the UI thread and streaming their events back in batches.

A job is one use of the loaded engine (a generation, a comparison, an extraction). Only one runs
at a time: the engine is not thread-safe. ``pump`` drives an event generator in a worker thread
and hands events to ``post`` in batches, at most one batch per ``interval`` seconds (plus one for
the final Summary), so a fast model does not flood the UI with one message per token.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from textual.message import Message

from latentlocal.events import Event, Summary


class Events(Message):
    """A batch of library events from a job (posted from a worker thread)."""

    def __init__(self, job: str, events: list[Event]) -> None:
        super().__init__()
        self.job = job
        self.events = events


class JobFailed(Message):
    """A job raised; ``error`` is a one-line message for the user."""

    def __init__(self, job: str, error: str) -> None:
        super().__init__()
        self.job = job
        self.error = error


class JobDone(Message):
    """A job ended (after its last Events batch), whether finished, cancelled or failed."""

    def __init__(self, job: str, cancelled: bool) -> None:
        super().__init__()
        self.job = job
        self.cancelled = cancelled


@dataclass
class Job:
    name: str                      # "run", "compare", "extract", "load"
    cancel: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.perf_counter)


def pump(
    events: Iterable[Event],
    post: Callable[[list[Event]], None],
    interval: float = 0.05,
    clock: Callable[[], float] = time.monotonic,
) -> Summary | None:
    """Drive ``events``, posting batches; returns the Summary (None if the generator had none)."""
    buf: list[Event] = []
    last = clock()
    summary = None
    for ev in events:
        buf.append(ev)
        if isinstance(ev, Summary):
            summary = ev
        now = clock()
        if summary is not None or now - last >= interval:
            post(buf)
            buf = []
            last = now
    if buf:
        post(buf)
    return summary


def error_text(exc: BaseException) -> str:
    """A one-line message: the library's own errors as they are, others with their type."""
    from latentlocal.errors import LatentLocalError

    if isinstance(exc, LatentLocalError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
