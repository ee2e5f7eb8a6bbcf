"""An OpenAI chat-completions request body -> what the scheduler runs, or a 400 naming the field.

OpenAI's own fields map onto the method settings of the same meaning (``max_tokens`` and
``max_completion_tokens``, ``temperature``, ``top_p``, ``seed``); every other top-level field is a
setting of the request's ``method``, under its CLI long-flag name with underscores
(``"max_topk": 5``), which an OpenAI client passes with ``extra_body``. The registry checks those
settings, so a setting means exactly what its flag means on the command line.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latentlocal.engine import ChatMessage
from latentlocal.errors import LatentLocalError
from latentlocal.methods.cot import CotConfig
from latentlocal.methods.chain import ChainBuilder
from latentlocal.methods.spec import Runner

# methods whose seq-0 tokens are the answer as it is written; the others (sc, soft-reasoning)
# choose their answer among several sequences at the end, and their text is sent then
LIVE_METHODS = frozenset({"cot", "seal", "soft-thinking", "swi-reasoning"})

# OpenAI field -> the method setting it sets
OPENAI_SETTINGS = {
    "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
}
# OpenAI fields that change nothing here (a client's bookkeeping) and are accepted as sent
IGNORED = frozenset({"model", "user", "metadata", "store", "service_tier", "parallel_tool_calls",
                     "prompt_cache_key", "safety_identifier",
                     "stream_options", "stream", "n", "stop", "messages", "method",
                     "chat_template_kwargs"})
# OpenAI fields accepted only at their neutral value, since nothing here implements them
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "frequency_penalty": (0, 0.0, None),
    "presence_penalty": (0, 0.0, None),
    "logprobs": (False, None),
    "top_logprobs": (0, None),
    "logit_bias": (None, {}),
    "tools": (None,),
    "tool_choice": (None, "none"),
    "functions": (None,),
    "function_call": (None, "none"),
    "response_format": (None, {"type": "text"}),  # plain text is what every reply is
    "audio": (None,),
    "modalities": (None, ["text"]),
    "prediction": (None,),
}
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MAX_STOP = 4  # OpenAI's limit


class RequestError(Exception):
    """A request the server refuses: an OpenAI error body with ``param`` naming the field."""

    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 code: str | None = None, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code
        self.kind = kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}


@dataclass(frozen=True)
class ChatRequest:
    """A validated request, before it meets the model."""

    messages: tuple[ChatMessage, ...]
    method: str                      # the registry's canonical name
    options: dict[str, Any]          # method settings by option name
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    stop: tuple[str, ...] = ()
    # chat_template_kwargs.enable_thinking (vLLM's and llama-server's Qwen3 switch); None: not sent
    enable_thinking: bool | None = None

    @property
    def live(self) -> bool:
        """Tokens stream to the client as they are decoded (else the chosen text comes at the end)."""
        return self.method in LIVE_METHODS or (self.method == "sc" and self.n > 1)


def _messages(raw: Any) -> tuple[ChatMessage, ...]:
    if not isinstance(raw, list) or not raw:
        raise RequestError("'messages' must be a non-empty list of {role, content} objects", "messages")
    out = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise RequestError(f"{where} must be an object with 'role' and 'content'", where)
        raw_role = m.get("role")
        role = ROLES.get(raw_role) if isinstance(raw_role, str) else None
        if role is None:
            raise RequestError(f"{where}.role {m.get('role')!r} is not supported; use one of "
                               f"{', '.join(ROLES)} (tools are not supported)", f"{where}.role")
        content = m.get("content")
        if isinstance(content, list):  # content parts: only text parts can be read here
            texts = []
            for j, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise RequestError(f"{where}.content[{j}] is not a text part; this server reads "
                                       "text only", f"{where}.content")
                texts.append(part["text"])
            content = "".join(texts)
        if content is None and role == "assistant":
            content = ""
        if not isinstance(content, str):
            raise RequestError(f"{where}.content must be a string or a list of text parts", f"{where}.content")
        _check_text(content, f"{where}.content")
        out.append(ChatMessage(role, content))
    return tuple(out)


def _check_text(text: str, where: str) -> None:
    # JSON may carry a lone UTF-16 surrogate ("\ud83d", a string cut through an emoji), which
    # no tokenizer can encode: it failed as a 500 deep in the prompt's tokenization
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        raise RequestError(f"{where} is not valid Unicode: it holds a lone surrogate "
                           f"(\\u{ord(bad):04x}, half of a character such as an emoji); send whole "
                           "characters", where) from None


def _int_field(body: Mapping[str, Any], name: str, default: int, lo: int, hi: int | None = None) -> int:
    v = body.get(name, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise RequestError(f"'{name}' must be an integer {bound}, not {v!r}", name)
    return v


def _stop(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    stops = [raw] if isinstance(raw, str) else raw
    if (not isinstance(stops, list) or len(stops) > MAX_STOP
            or not all(isinstance(s, str) and s for s in stops)):
        raise RequestError(f"'stop' must be a non-empty string or a list of up to {MAX_STOP} of them", "stop")
    for s in stops:
        _check_text(s, "stop")
    return tuple(stops)


def parse_request(body: Any, default_method: str = "cot") -> ChatRequest:
    """Check the request's shape and sort its fields; method settings are checked later by
    :func:`plan`, which knows the method's own."""
    from latentlocal.methods.registry import canonical

    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    messages = _messages(body.get("messages"))
    for name, ok in NEUTRAL.items():
        if name in body and body[name] not in ok:
            raise RequestError(f"'{name}' is not supported by latentlocal; leave it out", name)
    method_name = body.get("method", default_method)
    if not isinstance(method_name, str):
        raise RequestError("'method' must be a method name such as cot or soft-thinking", "method")
    try:
        method = canonical(method_name)
    except LatentLocalError as exc:
        raise RequestError(str(exc), "method") from None
    options: dict[str, Any] = {}
    for name, value in body.items():
        if name in IGNORED or name in NEUTRAL:
            continue
        key = OPENAI_SETTINGS.get(name, name)
        if key in options and value is not None and options[key] != value:
            raise RequestError(f"'{name}' contradicts another field setting {key}; send one", name)
        if value is not None:
            options[key] = value
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError("'stream' must be true or false", "stream")
    so = body.get("stream_options") or {}
    if not isinstance(so, dict):
        raise RequestError("'stream_options' must be an object", "stream_options")
    n = _int_field(body, "n", 1, 1, 16)
    return ChatRequest(messages=messages, method=method, options=options, n=n, stream=stream,
                       include_usage=bool(so.get("include_usage")), stop=_stop(body.get("stop")),
                       enable_thinking=_enable_thinking(body.get("chat_template_kwargs")))


def _enable_thinking(kwargs: Any) -> bool | None:
    """``chat_template_kwargs.enable_thinking``; the template's other arguments are accepted and
    left unused, as llama-server does with those its template does not read."""
    if kwargs is None:
        return None
    if not isinstance(kwargs, dict):
        raise RequestError("'chat_template_kwargs' must be an object", "chat_template_kwargs")
    value = kwargs.get("enable_thinking")
    if value is not None and not isinstance(value, bool):
        raise RequestError("'chat_template_kwargs.enable_thinking' must be true or false",
                           "chat_template_kwargs.enable_thinking")
    return value


# ---------------------------------------------------------------------------------------------
# settings -> runner
# ---------------------------------------------------------------------------------------------


def resolve_vector(name: Any, folders: Sequence[Path]) -> Path:
    """A SEAL vector by its file name (with or without ``.seal.gguf``) inside ``folders``; a path,
    or a name that leaves its folder, is refused, so a request can read nothing else."""
    if not isinstance(name, str) or not name:
        raise RequestError("'vector' must be the name of a vector file in the server's vectors "
                           "folder", "vector")
    if name != os.path.basename(name) or name.startswith(".") or "\\" in name:
        raise RequestError(f"'vector' must be a file name in the vectors folder, not a path: {name!r}",
                           "vector")
    for folder in folders:
        base = folder.resolve()
        for candidate in (name, name + ".seal.gguf", name + ".gguf"):
            path = (base / candidate).resolve()
            if path.is_file() and path.parent == base:
                return path
    known = sorted({p.name for f in folders if f.is_dir() for p in f.glob("*.gguf")})
    raise RequestError(f"no vector named {name!r} in {', '.join(map(str, folders))}; available: "
                       f"{', '.join(known) or 'none'}", "vector")


@dataclass(frozen=True)
class Plan:
    """How a request runs: batched chains of thought (``cot``), the method's chain builder
    (``chain``: Soft Thinking, SwiReasoning and SEAL join the batch too), or the method's runner alone."""

    runner: Runner | None
    cot: CotConfig | None
    chain: ChainBuilder | None = None


def plan(req: ChatRequest, vector_dirs: Sequence[Path]) -> Plan:
    """Check the request's settings against its method; raises RequestError naming the field."""
    from latentlocal.methods.registry import (
        chain_from_options,
        config_from_options,
        method_settings,
        runner_from_options,
    )

    options = dict(req.options)
    if options.get("seed") is None and any(st.name == "seed" for st in method_settings(req.method)):
        # OpenAI's rule: without a seed each request samples afresh (a fixed engine seed gave a
        # chat's "regenerate" the same reply every time); the seed drawn is in the reply's
        # latentlocal.settings, so sending it back reproduces the reply
        options["seed"] = secrets.randbelow(2**31)
    if "vector" in options:
        if req.method != "seal":
            raise RequestError("'vector' is a setting of method seal", "vector")
        options["vector"] = str(resolve_vector(options["vector"], vector_dirs))
    if req.n > 1:
        if req.method == "sc":
            if options.setdefault("samples", req.n) != req.n:
                raise RequestError(f"'n' ({req.n}) and 'samples' ({options['samples']}) disagree: with "
                                   "method sc, n is the number of samples; send one of them", "n")
        elif req.method != "cot":
            raise RequestError(f"method {req.method} gives one answer per request; 'n' must be 1 "
                               "(cot gives n independent chains, sc n samples)", "n")
    try:
        if req.method == "cot":
            if options.get("samples", 1) != 1:
                raise RequestError("with method cot, ask for several chains with 'n' (or use method "
                                   "sc for a vote over 'samples')", "samples")
            cfg = config_from_options("cot", options)
            # the stop after a "Final answer:" line serves the methods' own system prompt, which
            # asks for one; a conversation with its own system prompt asked for no such line
            own_system = any(m.role == "system" for m in req.messages)
            return Plan(None, dataclasses.replace(cfg, stop=req.stop, stop_after_answer=not own_system))
        runner = runner_from_options(req.method, options)
        try:
            chain = chain_from_options(req.method, options)
        except LatentLocalError:
            chain = None  # no batched form, or not with these settings (SEAL always-on): alone
        return Plan(runner, None, chain)
    except LatentLocalError as exc:
        field = _named_field(str(exc), options)
        message = str(exc)
        if field is not None:  # a request names the field, not the CLI's flag for it
            message = message.replace(f"--{field.replace('_', '-')}", f"'{field}'")
        raise RequestError(message, field) from None


def _named_field(message: str, options: Mapping[str, Any]) -> str | None:
    """The setting a registry message names (a flag such as ``--max-topk``, or an unknown
    option as ``'bogus'``)."""
    for name in options:
        if f"--{name.replace('_', '-')}" in message or f"option {name!r}" in message:
            return name
    return None
