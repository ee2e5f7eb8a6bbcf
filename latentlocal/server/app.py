"""The HTTP routes (Starlette): /v1/chat/completions, /v1/models(/ID), /health.

Handlers never touch the engine: they turn a body into a job (``Service.make_job``), queue it and
relay what the worker thread reports through an asyncio queue. A client that goes away (its
connection closes) withdraws its job, which stops at its next token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from latentlocal.server import chunks
from latentlocal.server.jobs import Job, QueueFull
from latentlocal.server.options import RequestError
from latentlocal.server.service import Service


def _error(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
           code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(chunks.error_body(message, kind, param, code), status, headers=headers)


def _request_error(err: RequestError) -> JSONResponse:
    return JSONResponse(err.body(), err.status)


def create_app(service: Service) -> Starlette:
    """The ASGI app serving ``service`` (whose worker it starts and stops with the app)."""
    key = service.config.api_key

    def denied(request: Request) -> JSONResponse | None:
        if not key:
            return None
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode()):
            return None
        return _error(401, "missing or wrong API key: send the header 'Authorization: Bearer KEY' "
                      "with the key the server was started with (--api-key or LATENTLOCAL_API_KEY)",
                      "authentication_error", code="invalid_api_key")

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": service.model_id, "jobs": service.scheduler.stats()})

    def model_object() -> dict[str, Any]:
        m = service.engine.model
        return {"id": service.model_id, "object": "model", "created": int(m.path.stat().st_mtime),
                "owned_by": "latentlocal",
                "latentlocal": {"path": str(m.path), "arch": m.arch, "name": m.name,
                                "n_ctx": service.engine.n_ctx, "parallel": service.scheduler.batch.capacity}}

    async def models(request: Request) -> Response:
        if (deny := denied(request)) is not None:
            return deny
        return JSONResponse({"object": "list", "data": [model_object()]})

    async def model(request: Request) -> Response:
        # the openai client's models.retrieve(id): the one model, under its id
        if (deny := denied(request)) is not None:
            return deny
        asked = request.path_params["model"]
        if asked != service.model_id:
            return _error(404, f"no model {asked!r}: this server serves {service.model_id!r} "
                          "(GET /v1/models lists it)", param="model", code="model_not_found")
        return JSONResponse(model_object())

    async def chat(request: Request) -> Response:
        if (deny := denied(request)) is not None:
            return deny
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "the request body is not JSON")
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[tuple] = asyncio.Queue()

        def sink(item: tuple) -> None:  # called on the worker thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
                loop.call_soon_threadsafe(inbox.put_nowait, item)

        try:
            job = service.make_job(body, sink)
            service.scheduler.submit(job)
        except RequestError as err:
            return _request_error(err)
        except QueueFull:
            wait = service.config.retry_after
            return _error(503, f"the server is busy: {service.config.queue_size} requests are waiting; "
                          f"retry in {wait} s", "server_busy", code="queue_full",
                          headers={"Retry-After": str(wait)})
        watcher = asyncio.create_task(_watch_disconnect(request, service, job))
        streaming = False
        try:
            first = await inbox.get()  # ("start",) or ("error", err): the status is known then
            if first[0] == "error":
                return _request_error(first[1])
            if job.req.stream:
                streaming = True
                return StreamingResponse(_sse(service, job, inbox, watcher), media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            while True:
                item = await inbox.get()
                if item[0] == "error":
                    return _request_error(item[1])
                if item[0] == "done":
                    return JSONResponse(chunks.completion(job.id, job.created, service.model_id, item[1]))
        finally:
            if not streaming:
                watcher.cancel()
                if job.state in ("queued", "running"):  # the handler was cancelled mid-wait
                    service.scheduler.withdraw(job)

    async def not_found(request: Request, exc: HTTPException) -> Response:
        return _error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}; this server "
                      "has POST /v1/chat/completions, GET /v1/models (/v1/models/ID) and GET /health")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.close()

    # Browser apps need CORS; opt-in, since with it any page the user opens may call the model
    middleware = ([Middleware(CORSMiddleware, allow_origins=list(service.config.cors_origins),
                              allow_methods=["GET", "POST"], allow_headers=["*"])]
                  if service.config.cors_origins else [])
    return Starlette(
        middleware=middleware,
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/models/{model:path}", model, methods=["GET"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
        ],
        exception_handlers={HTTPException: not_found},
        lifespan=lifespan,
    )


async def _watch_disconnect(request: Request, service: Service, job: Job) -> None:
    """Withdraw the job when the client closes its connection."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            service.scheduler.withdraw(job)
            return


async def _sse(service: Service, job: Job, inbox: asyncio.Queue, watcher: asyncio.Task) -> AsyncIterator[bytes]:
    """The job's chunks as server-sent events, ending with ``data: [DONE]``."""
    model = service.model_id

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return chunks.sse(chunks.chunk(job.id, job.created, model, choices, **extra))

    try:
        yield chunk([chunks.delta(i, content="", role=True) for i in range(job.req.n)])
        while True:
            item = await inbox.get()
            if item[0] == "delta":
                _, i, reasoning, content = item
                yield chunk([chunks.delta(i, reasoning, content or None)])
            elif item[0] == "error":
                err: RequestError = item[1]
                yield chunks.sse(err.body())
                break
            elif item[0] == "done":
                result = item[1]
                yield chunk([chunks.delta(i, finish_reason=c["finish_reason"])
                             for i, c in enumerate(result.choices)], latentlocal=result.latentlocal)
                if job.req.include_usage:
                    yield chunk([], usage=result.usage)
                break
        yield chunks.DONE
    finally:
        watcher.cancel()
        if job.state in ("queued", "running"):
            service.scheduler.withdraw(job)
