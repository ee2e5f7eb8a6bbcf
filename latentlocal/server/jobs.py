"""The job queue: one worker thread owns the engine and runs every request.

Plain ``cot`` requests (greedy or sampled, ``n`` chains each) and the methods with a chain form
(Soft Thinking, SwiReasoning, SEAL at its delimiters: ``Plan.chain``) join one
:class:`latentlocal.batching.StepBatcher` and share every decode step with the other requests'
chains. Every other method decodes the whole context its own way (it clears the KV cache, or
uses several sequences, or steers every token), so it runs alone: when one reaches the head of
the queue, no new chains are admitted, the running ones finish, and it runs; then batching
resumes.
Requests are served in arrival order either way.

A job reports to its HTTP handler through ``sink`` (called on the worker thread):
``("start",)`` once it runs without a setup error, ``("delta", i, reasoning, content)``,
``("done", result)`` or ``("error", RequestError)``. Cancelling (``job.cancel``: the client went
away) and the time limit stop a job at its next token.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from latentlocal.batching import StepBatcher
from latentlocal.engine import Engine
from latentlocal.errors import LatentLocalError
from latentlocal.events import Event, Notice, SequenceDone, Summary, Token, to_dict
from latentlocal.methods.chain import Chain
from latentlocal.prompts import reasoning_format
from latentlocal.server.choices import ChoiceText
from latentlocal.server.options import ChatRequest, Plan, RequestError

log = logging.getLogger(__name__)

Sink = Callable[[tuple], None]


class QueueFull(Exception):
    """The queue holds as many waiting jobs as it may."""


@dataclass
class Job:
    req: ChatRequest
    plan: Plan
    prompt: list[int]
    sink: Sink
    id: str = field(default_factory=lambda: "chatcmpl-" + uuid.uuid4().hex[:24])
    created: int = field(default_factory=lambda: int(time.time()))
    cancel: threading.Event = field(default_factory=threading.Event)
    state: str = "queued"          # queued, running, done, cancelled, failed
    timed_out: bool = False
    stopped: bool = False          # a stop string ended it (n = 1 methods run alone)
    choices: list[ChoiceText] = field(default_factory=list)
    finish: list[str | None] = field(default_factory=list)
    summaries: list[Summary | None] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    started: bool = False
    deadline: float = 0.0
    chain: Chain | None = None     # built when it reaches the head of the queue (plan.chain)
    setup_error: LatentLocalError | None = None  # building it failed: the job fails with this
    quiet_budget: bool = False     # max_tokens was the server's default: no notice of cutting it

    @property
    def batched(self) -> bool:
        return self.plan.cot is not None or self.plan.chain is not None


@dataclass(frozen=True)
class Result:
    """What a finished job answers: per-choice texts and finish reasons, usage, the summary."""

    choices: list[dict[str, Any]]
    usage: dict[str, int]
    latentlocal: dict[str, Any]


def _finish_reason(method_reason: str | None, job: Job, choice: ChoiceText) -> str:
    """OpenAI's finish reason for a method's: ``length`` when the token budget or the server's
    time limit ended it, else ``stop`` (end of text, answer line, stop string, a search's end)."""
    if choice.stopped:
        return "stop"
    if method_reason == "length" or (method_reason == "cancelled" and job.timed_out):
        return "length"
    return "stop"


class Scheduler:
    """The bounded queue and the worker thread that serves it (see the module docstring)."""

    def __init__(self, engine: Engine, queue_size: int = 16, time_limit: float = 300.0,
                 sequences: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.queue_size = queue_size
        self.time_limit = time_limit
        # the time limit's clock: a test gives one that ends a job at a known step, since how
        # many tokens fit in a second of real time depends on the CPU
        self.clock = clock
        self.fmt = reasoning_format(engine.model)
        self.batch = StepBatcher(engine, sequences)
        self.counts: collections.Counter[str] = collections.Counter()
        self._waiting: collections.deque[Job] = collections.deque()
        self._running: dict[str, Job] = {}
        self._chains: dict[Hashable, tuple[Job, int]] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="latentlocal-jobs", daemon=True)

    # the HTTP side ----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        n = job.req.n
        job.choices = [ChoiceText(job.req.stop, self.fmt) for _ in range(n)]
        job.finish = [None] * n
        job.summaries = [None] * (n if job.batched else 1)
        with self._cond:
            if len(self._waiting) >= self.queue_size:
                self.counts["rejected"] += 1
                raise QueueFull
            self._waiting.append(job)
            self._cond.notify()

    def withdraw(self, job: Job) -> None:
        """The client went away: stop the job at its next token (or before it starts)."""
        job.cancel.set()
        with self._cond:
            self._cond.notify()

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {"queued": len(self._waiting), "running": len(self._running),
                    "batched_sequences": self.batch.active,
                    # cot prompts' tokens decoded, and copied from another prompt's KV instead
                    "prompt_tokens_decoded": self.batch.prefilled,
                    "prompt_tokens_reused": self.batch.shared,
                    **{k: self.counts[k] for k in ("done", "cancelled", "failed", "timed_out", "rejected")}}

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            for job in list(self._waiting) + list(self._running.values()):
                job.cancel.set()
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        # the worker is gone: every job it left gets its answer, so no handler waits for one
        with self._cond:
            left = list(self._waiting) + list(self._running.values())
            self._waiting.clear()
        for job in left:
            self._end(job, "cancelled")
            job.sink(("error", RequestError("the server is shutting down; retry when it is back", None,
                                            503, kind="server_busy", code="shutting_down")))

    # the worker -------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._waiting and not self.batch.active:
                    self._cond.wait()
                if self._stopping:
                    return
            try:
                self._admit()
                if self.batch.active:
                    self._step()
                    continue
                job = self._take(batched=False)
                if job is not None:
                    self.batch.close()  # the method clears the context: the kept prompts go
                    self._run_alone(job)
            except Exception:  # a bug must not kill the worker: fail what was running, go on
                log.exception("job worker error")
                for job in list(self._running.values()):
                    self._fail(job, RequestError("internal server error; see the server log", None,
                                                 500, kind="server_error"))
                self.batch.close()
                self._chains.clear()
                self.engine.clear()

    def _take(self, batched: bool) -> Job | None:
        """The job at the head of the queue if it is of the kind asked for (and, for a batched
        one, fits beside the running chains); cancelled jobs are dropped on the way."""
        with self._cond:
            while self._waiting and self._waiting[0].cancel.is_set():
                job = self._waiting.popleft()
                job.state = "cancelled"
                self.counts["cancelled"] += 1
                # its handler waits for a word from the worker: without one it (and a server
                # shutting down, which waits for handlers) waited forever
                job.sink(("error", RequestError("the client went away before the request started",
                                                None, 499, kind="cancelled")))
            if not self._waiting:
                return None
            job = self._waiting[0]
            if job.batched != batched:
                return None
            if batched and job.plan.chain is not None:
                if job.chain is None and job.setup_error is None:
                    try:  # here, with the engine: the prompt, the vector and the checks it needs
                        job.chain = job.plan.chain(self.engine, list(job.req.messages))
                    except LatentLocalError as exc:
                        job.setup_error = exc
                if job.chain is not None and not self.batch.fits_cells(job.chain.cells):
                    return None
            elif batched and not self.batch.fits(len(job.prompt), job.plan.cot, count=job.req.n):
                return None
            self._waiting.popleft()
            job.state = "running"
            job.deadline = self.clock() + self.time_limit
            self._running[job.id] = job
            return job

    def _admit(self) -> None:
        while (job := self._take(batched=True)) is not None:
            if job.setup_error is not None:
                self._fail(job, RequestError(str(job.setup_error), None))
                continue
            if job.chain is not None:
                key = (job.id, 0)
                self._chains[key] = (job, 0)
                for _, ev in self.batch.add_chain(key, job.chain, job.cancel):
                    self._event(job, 0, ev)
                self._started(job)
                continue
            seed = job.plan.cot.seed if job.plan.cot.seed is not None else self.engine.seed
            for i in range(job.req.n):
                key = (job.id, i)
                self._chains[key] = (job, i)
                # choice i draws from seed + i: n = 1 decodes what `latentlocal run` decodes
                for _, ev in self.batch.add(key, job.prompt, job.plan.cot, job.cancel, seed=seed + i):
                    self._event(job, i, ev)
            self._started(job)

    def _step(self) -> None:
        now = self.clock()
        for job in {j.id: j for j, _ in self._chains.values()}.values():
            if now > job.deadline and not job.cancel.is_set():
                job.timed_out = True
                job.cancel.set()
        for key, ev in self.batch.step():
            job, i = self._chains[key]
            if isinstance(ev, Summary):
                del self._chains[key]
            self._event(job, i, ev)
            if self._chains.get(key) and job.choices[i].stopped:
                self.batch.cancel(key)

    def _run_alone(self, job: Job) -> None:
        runner = job.plan.runner
        assert runner is not None
        gen = None
        try:
            gen = runner(self.engine, list(job.req.messages), job.cancel)
            for ev in gen:
                self._started(job)
                if self.clock() > job.deadline and not job.cancel.is_set():
                    job.timed_out = True
                    job.cancel.set()
                self._event(job, 0, ev)
                if not job.stopped and job.req.n == 1 and job.choices[0].stopped:
                    job.stopped = True
                    job.cancel.set()
        except LatentLocalError as exc:
            self._fail(job, RequestError(str(exc), None))
        except Exception:
            log.exception("%s failed", job.req.method)
            self._fail(job, RequestError(f"{job.req.method} failed inside the server; see its log",
                                         None, 500, kind="server_error"))
        finally:
            if gen is not None:
                gen.close()
        if job.state == "running":  # a method that ended without a Summary
            self._fail(job, RequestError(f"{job.req.method} ended without a result", None, 500,
                                         kind="server_error"))

    # events -> the client ---------------------------------------------------------------------
    def _started(self, job: Job) -> None:
        if not job.started:
            job.started = True
            job.sink(("start",))

    def _event(self, job: Job, i: int, ev: Event) -> None:
        if job.state != "running":  # failed already: what its chains still say goes nowhere
            return
        req = job.req
        if isinstance(ev, Token):
            idx = i if job.batched else ev.seq
            if req.live and idx < req.n:
                r, c = job.choices[idx].push(ev)
                if r or c:
                    job.sink(("delta", idx, r, c))
        elif isinstance(ev, SequenceDone) and not job.batched and req.n > 1 and ev.seq < req.n:
            job.finish[ev.seq] = ev.finish_reason
        elif isinstance(ev, Notice):
            if not (job.quiet_budget and ev.kind == "context"):
                job.notices.append(ev.message)
        elif isinstance(ev, Summary):
            job.summaries[i] = ev
            if job.batched:
                job.finish[i] = ev.finish_reason
            elif req.n == 1:
                job.finish[0] = ev.finish_reason
                if not req.live:
                    r, c = job.choices[0].set_text(ev.text)
                    job.sink(("delta", 0, r, c))
            if all(s is not None for s in job.summaries):
                self._complete(job)

    def _complete(self, job: Job) -> None:
        for idx, ch in enumerate(job.choices):
            tail = ch.flush()
            if tail:
                job.sink(("delta", idx, "", tail))
        summaries = [s for s in job.summaries if s is not None]
        choices = [{"reasoning": ch.reasoning, "content": ch.content,
                    "finish_reason": _finish_reason(job.finish[idx], job, ch)}
                   for idx, ch in enumerate(job.choices)]
        info = {k: v for k, v in to_dict(summaries[0]).items() if k not in ("type", "text")}
        if len(summaries) > 1:
            info["choices"] = [{k: v for k, v in to_dict(s).items() if k not in ("type", "text")}
                               for s in summaries]
        if job.notices:
            info["notices"] = job.notices
        if job.timed_out:
            info["time_limit_s"] = self.time_limit
        completion = sum(s.generated_tokens for s in summaries)
        result = Result(choices=choices, latentlocal=info,
                        usage={"prompt_tokens": len(job.prompt), "completion_tokens": completion,
                               "total_tokens": len(job.prompt) + completion})
        self._end(job, "cancelled" if job.cancel.is_set() and not (job.timed_out or job.stopped) else "done")
        job.sink(("done", result))

    def _fail(self, job: Job, err: RequestError) -> None:
        for key in [k for k, (j, _) in self._chains.items() if j is job]:
            self.batch.cancel(key)
        if job.state == "running":
            self._end(job, "failed")
            job.sink(("error", err))

    def _end(self, job: Job, state: str) -> None:
        with self._cond:
            job.state = state
            self._running.pop(job.id, None)
            self.counts[state] += 1
            if job.timed_out:
                self.counts["timed_out"] += 1
