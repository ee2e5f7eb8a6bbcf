"""The OpenAI response shapes: a chat completion, its streamed chunks (SSE), an error body."""

from __future__ import annotations

import json
from typing import Any

DONE = b"data: [DONE]\n\n"


def sse(obj: dict[str, Any]) -> bytes:
    """One server-sent event carrying a JSON object."""
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _message(reasoning: str, content: str) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning:
        msg["reasoning_content"] = reasoning  # llama-server's "deepseek" reasoning format
    return msg


def completion(job_id: str, created: int, model: str, result: Any) -> dict[str, Any]:
    """A whole ``chat.completion`` from a finished job's ``Result``."""
    return {
        "id": job_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": i, "message": _message(c["reasoning"], c["content"]),
                     "logprobs": None, "finish_reason": c["finish_reason"]}
                    for i, c in enumerate(result.choices)],
        "usage": result.usage,
        "latentlocal": result.latentlocal,
    }


def chunk(job_id: str, created: int, model: str, choices: list[dict[str, Any]],
          **extra: Any) -> dict[str, Any]:
    """One ``chat.completion.chunk``."""
    return {"id": job_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": choices, **extra}


def delta(index: int, reasoning: str = "", content: str | None = None, role: bool = False,
          finish_reason: str | None = None) -> dict[str, Any]:
    """A chunk's choice: the new reasoning and/or content (``role`` on a choice's first chunk)."""
    d: dict[str, Any] = {}
    if role:
        d["role"] = "assistant"
    if reasoning:
        d["reasoning_content"] = reasoning
    if content is not None:
        d["content"] = content
    return {"index": index, "delta": d, "logprobs": None, "finish_reason": finish_reason}
