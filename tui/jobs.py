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
from typing import ClassVar

from textual import work
from textual.message import Message
from textual.widgets import Button, Label

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
    """A job ended (after its last Events batch), whether finished, cancelled or failed.

    ``handle`` is the Job itself, so the view ends exactly the job that ended (the app's busy
    flag is keyed by it), not whatever its ``job`` attribute holds by then."""

    def __init__(self, job: str, cancelled: bool, handle: Job | None = None) -> None:
        super().__init__()
        self.job = job
        self.cancelled = cancelled
        self.handle = handle


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


class JobView:
    """What the Run, Compare and Vectors views share about their one job: the Start and Cancel
    buttons and the status label (ids ``#{PREFIX}-start``, ``#{PREFIX}-cancel``,
    ``#{PREFIX}-status``), taking the app's one job slot, the engine worker thread, and ending
    the job however the worker ends: finished, cancelled or raised.

    Mixed into a Textual widget. A subclass sets ``JOB`` and ``PREFIX``, writes ``start()``
    (check its inputs, ``begin()``, ``launch(job, body)``) and overrides the hooks it needs:
    ``job_events``, ``job_failed``, ``failure_text``, ``finish_job``, ``running_changed``.
    """

    JOB: ClassVar[str]      # the job's name: "run", "compare", "extract"
    PREFIX: ClassVar[str]   # the id prefix of the buttons and the status label
    job: Job | None = None  # this view's job while it runs

    # every view writes its own: check its inputs, begin(), launch(job, body); False if not started
    start: Callable[[], bool]

    def begin(self) -> Job | None:
        """Take the app's job slot (None, with a message, while another job holds it)."""
        job = self.app.begin_job(self.JOB)  # type: ignore[attr-defined]
        if job is not None:
            self.job = job
        return job

    def launch(self, job: Job, body: Callable[[Job], object]) -> None:
        """Run ``body(job)`` on the engine's worker thread; JobDone follows whatever happens."""
        self._job_worker(job, body)

    @work(thread=True, exclusive=True, group="engine")
    def _job_worker(self, job: Job, body: Callable[[Job], object]) -> None:
        try:
            body(job)
        except Exception as exc:  # noqa: BLE001 - shown to the user, the app keeps running
            self.post_message(JobFailed(self.JOB, self.failure_text(exc, job)))  # type: ignore[attr-defined]
        finally:
            self.post_message(JobDone(self.JOB, job.cancel.is_set(), job))  # type: ignore[attr-defined]

    def set_running(self, running: bool, status: str) -> None:
        q = self.query_one  # type: ignore[attr-defined]
        q(f"#{self.PREFIX}-start", Button).disabled = running
        q(f"#{self.PREFIX}-cancel", Button).disabled = not running
        # one line (app.tcss): no screen layout for a new status in a generation's first frame
        q(f"#{self.PREFIX}-status", Label).update(status, layout=False)
        self.running_changed(running)

    # -- hooks ---------------------------------------------------------------------------------
    def running_changed(self, running: bool) -> None:
        """Called after the buttons change."""

    def job_events(self, events: list[Event]) -> None:
        """A batch of the job's events."""

    def failure_text(self, exc: BaseException, job: Job) -> str:
        """The one-line message for an exception that ended the job (in the worker thread)."""
        return error_text(exc)

    def job_failed(self, error: str) -> None:
        self.app.notify(error, title="Failed", severity="error", timeout=10)  # type: ignore[attr-defined]

    def finish_job(self, cancelled: bool) -> str:
        """Update the view for the ended job; returns the status line to show."""
        return "cancelled" if cancelled else "done"

    # -- messages and buttons ------------------------------------------------------------------
    def on_events(self, msg: Events) -> None:
        if msg.job == self.JOB:
            self.job_events(msg.events)

    def on_job_failed(self, msg: JobFailed) -> None:
        if msg.job == self.JOB:
            self.job_failed(msg.error)

    def on_job_done(self, msg: JobDone) -> None:
        if msg.job != self.JOB:
            return
        self.set_running(False, self.finish_job(msg.cancelled))
        ended = msg.handle if msg.handle is not None else self.job
        self.app.end_job(ended)  # type: ignore[attr-defined]
        if self.job is ended:
            self.job = None

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == f"{self.PREFIX}-start":
            self.start()
        elif event.button.id == f"{self.PREFIX}-cancel":
            self.app.cancel_job()  # type: ignore[attr-defined]
