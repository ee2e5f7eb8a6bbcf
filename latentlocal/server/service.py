"""What the server holds: one engine, its job queue, the vectors folders and the API key."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latentlocal.engine import Engine, Model
from latentlocal.prompts import COT_SYSTEM, build_prompt, reasoning_format
from latentlocal.server.jobs import Job, Scheduler, Sink
from latentlocal.server.options import RequestError, parse_request, plan


@dataclass
class ServerConfig:
    """Everything ``latentlocal serve`` is started with, besides the engine."""

    api_key: str | None = None
    vector_dirs: Sequence[Path] = ()      # --vectors, searched before the default folders
    queue_size: int = 16                  # waiting requests; more get 503
    time_limit: float = 300.0             # seconds a request may run
    retry_after: int = 5                  # the Retry-After a 503 suggests, in seconds
    model_id: str | None = None           # the id /v1/models reports (default: the file name)
    cors_origins: Sequence[str] = ()      # web origins a browser may call from ("*": any)


class Service:
    """Turns request bodies into jobs on the one engine (``make_job``) and runs them (``scheduler``)."""

    def __init__(self, engine: Engine, config: ServerConfig = ServerConfig()) -> None:
        from latentlocal.methods.seal import vector_folders

        self.engine = engine
        self.config = config
        self.model_id = config.model_id or engine.model.path.name
        self.vector_dirs = [Path(p).expanduser() for p in config.vector_dirs] + vector_folders()
        self.scheduler = Scheduler(engine, config.queue_size, config.time_limit)

    def start(self) -> None:
        self.scheduler.start()

    def close(self) -> None:
        self.scheduler.close()

    def make_job(self, body: Any, sink: Sink) -> Job:
        """A job for a request body; RequestError (400) for anything wrong with it that can be
        told before it runs: its shape, method, settings, vector, or a prompt the context cannot hold."""
        req = parse_request(body)
        engine = self.engine
        check_thinking(engine.model, req.enable_thinking)
        # every method builds its prompt this way (the conversation, with the method's system
        # prompt unless the conversation has its own), so this is the length it will decode
        prompt = engine.model.tokenize(build_prompt(engine.model, req.messages, COT_SYSTEM))
        n_ctx = engine.n_ctx
        notices: list[str] = []
        if n_ctx - len(prompt) < 2:  # not even one generated token fits
            raise RequestError(f"the prompt is {len(prompt)} tokens and the context holds {n_ctx}: "
                               "shorten the messages, or restart the server with a larger --n-ctx",
                               "messages", code="context_length_exceeded")
        # OpenAI's and llama-server's rule: without max_tokens a reply may use the rest of the
        # context (a reasoning model's thinking was cut at the method's 512 - 256 reserve); the
        # method shares it among its sequences, and says nothing of a budget nobody asked for
        unasked = "max_tokens" not in req.options
        if unasked:
            req = dataclasses.replace(req, options={**req.options, "max_tokens": n_ctx - len(prompt)})
        how = plan(req, self.vector_dirs)
        if how.cot is not None and req.n > 1:
            batch = self.scheduler.batch
            if req.n > batch.capacity:
                raise RequestError(f"n = {req.n} chains need {req.n} sequences and the server's "
                                   f"context holds {batch.capacity}; ask for fewer or restart it "
                                   "with a larger --parallel", "n")
            room = n_ctx // req.n - len(prompt)  # each chain holds its own copy of the prompt
            if room < 2:
                raise RequestError(f"n = {req.n} copies of the {len(prompt)}-token prompt do not fit "
                                   f"the context of {n_ctx} tokens; ask for fewer choices", "n")
            if how.cot.max_tokens > room:
                if not unasked:
                    notices.append(f"max_tokens {how.cot.max_tokens} cut to {room}: {req.n} chains of the "
                                   f"{len(prompt)}-token prompt share the context of {n_ctx} tokens")
                how = dataclasses.replace(how, cot=dataclasses.replace(how.cot, max_tokens=room))
        return Job(req=req, plan=how, prompt=prompt, sink=sink, notices=notices, quiet_budget=unasked)


def check_thinking(model: Model, enable_thinking: bool | None) -> None:
    """A request's ``enable_thinking`` must agree with how the server's model runs: thinking is
    set once per model (``serve --reasoning``), since a request shares its decoding steps with
    the others in flight. A model without think tokens ignores it, as its template would."""
    if enable_thinking is None or model.think_tokens() is None:
        return
    thinks = reasoning_format(model).native
    if enable_thinking != thinks:
        fix = "--reasoning off" if thinks else "--reasoning auto"
        raise RequestError(
            f"chat_template_kwargs.enable_thinking is {str(enable_thinking).lower()}, but this server's "
            f"model {'thinks' if thinks else 'answers without thinking'} on every request; leave it "
            f"out, or restart the server with {fix}", "chat_template_kwargs.enable_thinking")
