"""`latentlocal serve`: the real server (uvicorn on a free loopback port, in a thread) spoken to with
the official `openai` client. Token budgets are tiny so the suite stays quick; every comparison
is between two paths computed here (the server and the library, streamed and not)."""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
import uvicorn

from latentlocal.engine import ChatMessage, Engine, Model
from latentlocal.events import Summary, Token
from latentlocal.methods.cot import CotConfig, run_cot
from latentlocal.prompts import COT_SYSTEM, build_prompt, reasoning_format
from latentlocal.server import ServerConfig, Service, create_app, is_loopback
from latentlocal.server.choices import ChoiceText
from spies import count_steps
from thinkmodel import think_model_path

Q = "What is 2 + 3?"
MSG = [{"role": "user", "content": Q}]
SEAL_VECTOR = "smollm2-135m-instruct.seal.gguf"  # shipped in vectors/


@contextlib.contextmanager
def running(engine: Engine, config: ServerConfig = ServerConfig()) -> Iterator[tuple[str, Service]]:
    """A real server on a free loopback port; yields its base URL and its service."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    service = Service(engine, config)
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", service
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def wait_for(predicate, what: str, timeout: float = 120.0):
    """Poll ``predicate`` until it returns something true (the tests wait for states)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def engine(smol_model):
    e = Engine(smol_model, n_ctx=2048, n_seq_max=8, n_threads=2)
    yield e
    e.close()


@pytest.fixture(scope="module")
def think_engine(smol_path):
    """The think-token copy of the bundled model: it never closes its thinking itself, so a
    request with an answer reserve R and max_tokens M decodes at least M - R tokens, whatever
    the model writes (no early end of text or answer line), which the tests of long jobs need."""
    e = Engine(Model(think_model_path(smol_path)), n_ctx=2048, n_seq_max=4, n_threads=2)
    yield e
    e.close()


# >= 1399 tokens on think_engine: seconds even on a fast CPU, so a test that acts on the running
# job (and then cancels it) does not race its end
LONG_JOB = {"max_tokens": 1600, "extra_body": {"answer_reserve": 200}}


@pytest.fixture(scope="module")
def server(engine):
    with running(engine, ServerConfig(time_limit=120)) as (url, service):
        yield url, service


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0, timeout=300)


def _stream(client, **kw):
    """Streamed chat: (reasoning, content, finish reasons by choice, final chunk's latentlocal, usage)."""
    reasoning: dict[int, str] = {}
    content: dict[int, str] = {}
    finish: dict[int, str] = {}
    info = usage = None
    for chunk in client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw):
        if chunk.usage is not None:
            usage = chunk.usage
        for ch in chunk.choices:
            d = ch.delta
            reasoning[ch.index] = reasoning.get(ch.index, "") + (getattr(d, "reasoning_content", None) or "")
            content[ch.index] = content.get(ch.index, "") + (d.content or "")
            if ch.finish_reason:
                finish[ch.index] = ch.finish_reason
                info = getattr(chunk, "latentlocal", None)
    return reasoning, content, finish, info, usage


def _lone_cot(engine, max_tokens: int) -> Summary:
    events = list(run_cot(engine, [ChatMessage("user", Q)], CotConfig(max_tokens=max_tokens)))
    return events[-1]


# ---------------------------------------------------------------------------------------------
# chat, streamed and not
# ---------------------------------------------------------------------------------------------


def test_cot_chat_is_the_library_run_streamed_or_not(server, client, smol_model):
    """Catches a server that builds another prompt, seed or budget than `latentlocal run`, or
    whose stream and whole answer disagree."""
    reply = client.chat.completions.create(model="any", messages=MSG, max_tokens=8)
    with Engine(smol_model, n_ctx=2048, n_seq_max=1, n_threads=2) as alone:
        lone = _lone_cot(alone, 8)
        prompt_len = len(alone.model.tokenize(build_prompt(alone.model, Q, COT_SYSTEM)))
    choice = reply.choices[0]
    assert choice.message.content == lone.text
    assert reply.usage.prompt_tokens == prompt_len
    assert reply.usage.completion_tokens == lone.generated_tokens
    assert choice.finish_reason == ("length" if lone.finish_reason == "length" else "stop")
    assert reply.latentlocal["method"] == "cot" and reply.latentlocal["answer"] == lone.answer
    reasoning, content, finish, info, usage = _stream(client, model="any", messages=MSG, max_tokens=8)
    assert content == {0: lone.text} and finish == {0: choice.finish_reason}
    assert usage.completion_tokens == reply.usage.completion_tokens
    assert info["generated_tokens"] == lone.generated_tokens


METHODS = {
    "soft-thinking": ({"max_topk": 3}, "cold_stop"),
    "seal": ({"vector": SEAL_VECTOR}, "thoughts"),
    "soft-reasoning": ({"candidates": 2, "rounds": 1, "dim": 4}, "rounds"),
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_latent_methods_stream_what_they_answer(client, method):
    """Each method's streamed text equals its whole answer (both greedy), and the response
    carries the method's summary."""
    settings, key = METHODS[method]
    body = {"method": method, "seed": 5, **settings}  # one seed: soft-reasoning's search draws
    reply = client.chat.completions.create(model="any", messages=MSG, max_tokens=8, extra_body=body)
    msg = reply.choices[0].message
    info = reply.latentlocal
    assert info["method"] == method and key in info
    assert reply.usage.completion_tokens == info["generated_tokens"] > 0
    reasoning, content, finish, sinfo, _ = _stream(client, model="any", messages=MSG, max_tokens=8,
                                                   extra_body=body)
    assert content[0] == msg.content
    assert reasoning[0] == (getattr(msg, "reasoning_content", None) or "")
    # SmolLM2 has no think tokens: the whole reply is content, whatever span the method thinks in
    # (SEAL's and Soft Thinking's went to reasoning_content, leaving content empty at a length cut)
    assert reasoning[0] == ""
    assert finish[0] == reply.choices[0].finish_reason
    assert sinfo["method"] == method


def test_stop_strings_cut_the_content(server, client):
    """The stop string ends the job as done, not as a cancelled one (the worker stops it early)."""
    before = _jobs(server[0])
    reply = client.chat.completions.create(model="any", messages=MSG, max_tokens=12, stop=[" "])
    assert " " not in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    assert reply.latentlocal["generated_tokens"] < 12  # the chain stopped when the content did
    after = _jobs(server[0])
    assert after["done"] == before["done"] + 1 and after["cancelled"] == before["cancelled"]


def test_unseeded_requests_draw_a_fresh_seed_that_reproduces_the_reply(client):
    """Without a seed each request samples afresh (a fixed engine seed gave every "regenerate"
    the same reply); the seed drawn is in the reply, and sending it back gives the same text."""
    ask = dict(model="any", messages=MSG, max_tokens=8, temperature=1.0)
    # the same prompt first, so every request below reuses one cached prefix: a prompt decoded
    # afresh and one reused can differ in the last bits of the logits
    client.chat.completions.create(**{**ask, "max_tokens": 1})
    first, second = (client.chat.completions.create(**ask) for _ in range(2))
    seeds = [r.latentlocal["settings"]["seed"] for r in (first, second)]
    assert all(isinstance(x, int) for x in seeds) and seeds[0] != seeds[1]
    again = client.chat.completions.create(**ask, seed=seeds[0])
    assert again.latentlocal["settings"]["seed"] == seeds[0]
    assert again.choices[0].message.content == first.choices[0].message.content


def test_n_gives_chains_for_cot_and_samples_for_sc(client):
    reply = client.chat.completions.create(model="any", messages=MSG, max_tokens=6, n=2, temperature=1.0)
    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.usage.completion_tokens == sum(c["generated_tokens"] for c in reply.latentlocal["choices"])
    sc = client.chat.completions.create(model="any", messages=MSG, max_tokens=6, n=3, extra_body={"method": "sc"})
    assert len(sc.choices) == 3 and len(sc.latentlocal["answers"]) == 3


def test_concurrent_cot_requests_share_decode_steps(server, client, engine, monkeypatch):
    """Three clients at once: their chains are decoded in the same llama_decode steps."""
    sizes = count_steps(engine, monkeypatch)
    replies: list = [None] * 3
    barrier = threading.Barrier(3)

    def ask(i):
        barrier.wait()
        replies[i] = client.chat.completions.create(
            model="any", max_tokens=10, messages=[{"role": "user", "content": f"What is {i} + 4?"}])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r is not None and r.choices[0].message.content for r in replies)
    assert max(sizes) >= 2, f"no step decoded two requests together: {sizes}"


def test_concurrent_soft_thinking_and_seal_requests_share_decode_steps(server, client, engine, monkeypatch):
    """Latent methods with a chain form join the batch: two Soft Thinking requests and a SEAL
    one at once are decoded in shared steps (alone, a method never calls decode_step), and each
    answers with its own method's summary. Catches a server that runs them one after another."""
    sizes = count_steps(engine, monkeypatch)
    bodies = [{"method": "soft-thinking", "max_topk": 3}, {"method": "soft-thinking"},
              {"method": "seal", "vector": SEAL_VECTOR}]
    replies: list = [None] * len(bodies)
    barrier = threading.Barrier(len(bodies))

    def ask(i):
        barrier.wait()
        replies[i] = client.chat.completions.create(
            model="any", max_tokens=16, extra_body=bodies[i],
            messages=[{"role": "user", "content": f"What is {i} + 4?"}])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for body, r in zip(bodies, replies):
        assert r is not None and r.latentlocal["method"] == body["method"]
        assert r.usage.completion_tokens == r.latentlocal["generated_tokens"] > 0
    assert replies[2].latentlocal["mode"] == "delimiter"
    assert max(sizes) >= 2, f"no step decoded two latent requests together: {sizes}"


def test_a_request_whose_chain_cannot_be_built_fails_alone(server, client):
    """A vector made for another model is found when the request's chain is built, at the head
    of the queue: that request gets a 400 naming the problem, and the next one is served."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="any", messages=MSG, max_tokens=4, extra_body={
            "method": "seal", "vector": "qwen2.5-coder-0.5b-instruct.seal.gguf"})
    assert "'qwen2' model" in caught.value.body["message"] and "seal extract" in caught.value.body["message"]
    reply = client.chat.completions.create(model="any", messages=MSG, max_tokens=4,
                                           extra_body={"method": "seal", "vector": SEAL_VECTOR})
    assert reply.latentlocal["method"] == "seal"


# ---------------------------------------------------------------------------------------------
# thinking models
# ---------------------------------------------------------------------------------------------


def test_thinking_goes_to_reasoning_content(think_engine):
    """On a model with native think tokens the span before </think> is reasoning_content and the
    rest content, streamed or not; </think> itself is in neither (the library run shows the split)."""
    think = think_engine
    fmt = reasoning_format(think.model)
    events = list(run_cot(think, [ChatMessage("user", Q)], CotConfig(max_tokens=12, answer_reserve=4)))
    tokens = [e for e in events if isinstance(e, Token)]
    want_reasoning = "".join(t.text for t in tokens if t.phase == "think" and t.token_id != fmt.think_end_token)
    want_content = "".join(t.text for t in tokens if t.phase == "answer")
    assert want_reasoning and any(t.token_id == fmt.think_end_token for t in tokens)
    with running(think) as (url, _):
        c = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        body = {"answer_reserve": 4}
        reply = c.chat.completions.create(model="m", messages=MSG, max_tokens=12, extra_body=body)
        msg = reply.choices[0].message
        assert msg.reasoning_content == want_reasoning and msg.content == want_content
        assert "</think>" not in msg.content + msg.reasoning_content
        reasoning, content, _, _, _ = _stream(c, model="m", messages=MSG, max_tokens=12, extra_body=body)
        assert reasoning[0] == want_reasoning and content[0] == want_content


def test_enable_thinking_must_agree_with_the_servers_reasoning_mode(think_engine, smol_model, monkeypatch):
    """Qwen3 clients send chat_template_kwargs.enable_thinking: it was refused as an unknown
    method setting. It is accepted where it agrees with how the model runs (thinking is set per
    model, serve --reasoning: requests share decoding steps), refused with the fix where it does
    not, and ignored by a model without think tokens, as its template would ignore it."""
    from latentlocal.server.options import RequestError

    def job(engine, kwargs):
        body = {"messages": MSG, "max_tokens": 2, "chat_template_kwargs": kwargs}
        service = Service(engine)  # never started: make_job checks the request, nothing runs
        try:
            return service.make_job(body, lambda item: None)
        finally:
            service.close()

    assert job(think_engine, {"enable_thinking": True, "other": 1}) is not None
    with pytest.raises(RequestError, match="restart the server with --reasoning off") as caught:
        job(think_engine, {"enable_thinking": False})
    assert caught.value.param == "chat_template_kwargs.enable_thinking"
    monkeypatch.setattr(think_engine.model, "reasoning", "off")
    assert job(think_engine, {"enable_thinking": False}) is not None
    with pytest.raises(RequestError, match="--reasoning auto"):
        job(think_engine, {"enable_thinking": True})
    plain = Engine(smol_model, n_ctx=256, n_seq_max=1, n_threads=1)
    try:
        for value in (True, False):
            assert job(plain, {"enable_thinking": value}) is not None
    finally:
        plain.close()


# ---------------------------------------------------------------------------------------------
# bad requests
# ---------------------------------------------------------------------------------------------

LONG = " ".join(["apple"] * 3000)
BAD = [
    ({"method": "telepathy"}, "method"),
    ({"bogus_setting": 1}, "bogus_setting"),
    ({"method": "soft-thinking", "max_topk": "many"}, "max_topk"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"method": "seal", "vector": "../vectors/" + SEAL_VECTOR}, "vector"),
    ({"method": "seal", "vector": "/etc/passwd"}, "vector"),
    ({"method": "seal", "vector": "no-such-vector"}, "vector"),
    ({"method": "soft-thinking", "n": 2}, "n"),
    ({"messages": [{"role": "user", "content": LONG}]}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"messages": [{"role": ["user"], "content": "x"}]}, "messages[0].role"),  # was a 500
    ({"chat_template_kwargs": "no thinking"}, "chat_template_kwargs"),
    ({"chat_template_kwargs": {"enable_thinking": "no"}}, "chat_template_kwargs.enable_thinking"),
]


@pytest.mark.parametrize("fields,param", BAD, ids=[p for _, p in BAD])
def test_bad_requests_get_a_400_naming_the_field(server, client, fields, param):
    body = {"model": "any", "messages": MSG, **fields}
    r = httpx.post(server[0] + "/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error" and err["message"]
    assert f"--{param.replace('_', '-')} " not in err["message"]  # the field's name, not the CLI flag's
    std = {k: v for k, v in body.items() if k in ("model", "messages", "max_tokens", "n", "tools")}
    extra = {k: v for k, v in body.items() if k not in std}
    with pytest.raises(openai.BadRequestError) as caught:  # and the client reports it as such
        client.chat.completions.create(**std, extra_body=extra)
    assert caught.value.body["param"] == param


def test_text_with_a_lone_surrogate_gets_a_400(server):
    # JSON's "\ud83d" alone (a string cut through an emoji) cannot be tokenized: it was a 500,
    # which the openai client retries
    for fields, param in [({"messages": [{"role": "user", "content": "hi \ud83d"}]}, "messages[0].content"),
                          ({"messages": MSG, "stop": ["\ud83d"]}, "stop")]:
        r = httpx.post(server[0] + "/v1/chat/completions", content=json.dumps({"max_tokens": 2, **fields}),
                       headers={"content-type": "application/json"}, timeout=120)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
        assert "lone surrogate" in r.json()["error"]["message"]


def test_not_json_and_unknown_routes(server):
    r = httpx.post(server[0] + "/v1/chat/completions", content=b"{nope", timeout=30)
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    r = httpx.get(server[0] + "/v1/embeddings", timeout=30)
    assert r.status_code == 404 and "/v1/chat/completions" in r.json()["error"]["message"]


def test_without_max_tokens_a_reply_may_use_the_rest_of_the_context(smol_model):
    """OpenAI's rule: no max_tokens means no budget below the context's (it was the method's 512,
    which cut a reasoning model's thinking at 256); methods with several sequences share the
    room, and no notice speaks of a max_tokens nobody sent."""
    with Engine(smol_model, n_ctx=256, n_seq_max=8, n_threads=2) as e, running(e) as (url, _):
        c = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        for body in ({}, {"method": "soft-thinking"}, {"method": "sc", "samples": 3}):
            reply = c.chat.completions.create(model="m", messages=MSG, extra_body=body)
            info = reply.latentlocal
            assert info["settings"]["max_tokens"] == e.n_ctx - reply.usage.prompt_tokens, body
            assert "notices" not in info, body
            assert reply.usage.completion_tokens <= e.n_ctx - reply.usage.prompt_tokens


def test_models_retrieve_and_neutral_openai_fields(server, client):
    listed = client.models.list().data
    assert len(listed) == 1
    got = client.models.retrieve(listed[0].id)  # apps call GET /v1/models/ID: it was a 404
    assert got.id == listed[0].id and got.object == "model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    # OpenAI's own defaults and bookkeeping fields are accepted as sent; a real request of a
    # feature this server lacks is still a 400 naming it
    reply = client.chat.completions.create(
        model="any", messages=MSG, max_tokens=2, response_format={"type": "text"}, logit_bias={},
        extra_body={"modalities": ["text"], "prompt_cache_key": "k", "safety_identifier": "u"})
    assert reply.usage.completion_tokens <= 2
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="any", messages=MSG, max_tokens=2,
                                       response_format={"type": "json_object"})
    assert caught.value.body["param"] == "response_format"


# ---------------------------------------------------------------------------------------------
# the API key, the queue, the time limit, disconnects
# ---------------------------------------------------------------------------------------------


def test_api_key_is_required_everywhere_but_health(smol_model):
    with Engine(smol_model, n_ctx=512, n_seq_max=2, n_threads=2) as e, \
            running(e, ServerConfig(api_key="s3cret")) as (url, _):
        assert httpx.get(url + "/health").status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            assert httpx.get(url + "/v1/models", headers=headers).status_code == 401
            assert httpx.get(url + "/v1/models/" + smol_model.path.name, headers=headers).status_code == 401
            r = httpx.post(url + "/v1/chat/completions", json={"messages": MSG}, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
        good = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
        assert [m.id for m in good.models.list()] == [smol_model.path.name]
        assert good.chat.completions.create(model="m", messages=MSG, max_tokens=2).choices[0].message.content


def test_cors_only_for_the_origins_given(smol_model):
    preflight = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    with Engine(smol_model, n_ctx=512, n_seq_max=2, n_threads=2) as e:
        with running(e, ServerConfig(api_key="k", cors_origins=("http://localhost:3000",))) as (url, _):
            r = httpx.options(url + "/v1/chat/completions", headers=preflight)
            assert r.status_code == 200  # a preflight carries no key: it must not need one
            assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
            r = httpx.get(url + "/v1/models", headers={"Origin": "http://localhost:3000",
                                                       "Authorization": "Bearer k"})
            assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://localhost:3000"
            r = httpx.options(url + "/v1/chat/completions", headers={**preflight, "Origin": "http://evil.example"})
            assert "access-control-allow-origin" not in r.headers
        with running(e) as (url, _):  # not asked for: no CORS at all
            r = httpx.options(url + "/v1/chat/completions", headers=preflight)
            assert "access-control-allow-origin" not in r.headers


def _jobs(url: str) -> dict:
    return httpx.get(url + "/health", timeout=30).json()["jobs"]


def test_disconnect_cancels_the_job_and_the_next_request_starts(think_engine):
    with running(think_engine) as (url, _):
        c = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        stream = c.chat.completions.create(model="m", messages=MSG, stream=True, **LONG_JOB)
        chunks = iter(stream)
        next(chunks)
        next(chunks)  # it is decoding
        assert _jobs(url)["running"] == 1
        stream.close()
        wait_for(lambda: (j := _jobs(url))["cancelled"] == 1 and j["running"] == 0 and j["batched_sequences"] == 0,
                 "the job to be cancelled")
        reply = c.chat.completions.create(model="m", messages=MSG, max_tokens=2)
        assert reply.usage.completion_tokens == 2
        assert _jobs(url)["done"] == 1


def test_full_queue_answers_503_with_retry_after(think_engine):
    with running(think_engine, ServerConfig(queue_size=1, retry_after=7)) as (url, _):
        c = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        # soft-thinking runs alone, so the request behind it waits in the queue
        stream = c.chat.completions.create(model="m", messages=MSG, stream=True, max_tokens=1600,
                                           extra_body={"method": "soft-thinking", "answer_reserve": 200})
        chunks = iter(stream)
        next(chunks)
        waiting = threading.Thread(target=lambda: c.chat.completions.create(model="m", messages=MSG, max_tokens=1))
        waiting.start()
        wait_for(lambda: _jobs(url)["queued"] == 1, "the second request to queue")
        r = httpx.post(url + "/v1/chat/completions", json={"messages": MSG, "max_tokens": 1})
        assert r.status_code == 503 and r.headers["retry-after"] == "7"
        assert r.json()["error"]["code"] == "queue_full"
        stream.close()
        waiting.join(timeout=120)
        assert not waiting.is_alive()
        jobs = _jobs(url)
        assert jobs["rejected"] == 1 and jobs["cancelled"] == 1 and jobs["done"] == 1


def test_a_job_dropped_from_the_queue_or_left_at_shutdown_still_answers_its_handler(think_engine):
    """A handler waits for the worker's word on its job: a job whose client left while it was
    queued, and one still queued when the server stops, must each get one (both waited forever,
    and the server's shutdown with them)."""
    answers: dict[str, object] = {}
    arrived = {k: threading.Event() for k in ("withdrawn", "left")}

    def sink_for(name):
        def sink(item):
            if item[0] == "error":
                answers[name] = item[1]
                arrived[name].set()
        return sink

    service = Service(think_engine)
    withdrawn = service.make_job({"messages": MSG, "max_tokens": 2}, sink_for("withdrawn"))
    withdrawn.cancel.set()  # its client went away before it started
    service.start()
    try:
        service.scheduler.submit(withdrawn)
        assert arrived["withdrawn"].wait(60) and answers["withdrawn"].status == 499
    finally:
        service.close()
    idle = Service(think_engine)  # never started: its queue is left as it is at close
    left = idle.make_job({"messages": MSG, "max_tokens": 2}, sink_for("left"))
    idle.scheduler.submit(left)
    idle.close()
    assert arrived["left"].is_set() and answers["left"].status == 503
    assert idle.scheduler.stats()["queued"] == 0


@pytest.mark.parametrize("method", ["cot", "soft-thinking"])
def test_time_limit_ends_a_request_with_length(think_engine, method):
    """Batched (cot) or alone (soft-thinking): past the limit a request ends, finish 'length'.
    The scheduler's clock gains 0.2 s each time it is read (at admission and at each step), so
    the 0.5 s limit passes within a few steps on any CPU: on real time a fast machine wrote the
    whole reply inside the limit and ended it 'stop'."""
    ticks = itertools.count()
    with running(think_engine, ServerConfig(time_limit=0.5)) as (url, service):
        service.scheduler.clock = lambda: 0.2 * next(ticks)
        c = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        reply = c.chat.completions.create(model="m", messages=MSG, max_tokens=400,
                                          extra_body={"method": method, "answer_reserve": 200})
        assert reply.choices[0].finish_reason == "length"
        assert reply.latentlocal["time_limit_s"] == 0.5
        assert reply.latentlocal["generated_tokens"] < 199
        assert _jobs(url)["timed_out"] == 1


# ---------------------------------------------------------------------------------------------
# pure parts
# ---------------------------------------------------------------------------------------------


def test_only_a_native_think_span_is_reasoning(smol_model, think_engine):
    plain = ChoiceText([], reasoning_format(smol_model))
    assert plain.push(Token(text="so", token_id=0, phase="think")) == ("", "so")
    fmt = reasoning_format(think_engine.model)
    native = ChoiceText([], fmt)
    assert native.push(Token(text="so", token_id=0, phase="think")) == ("so", "")
    assert native.push(Token(text="", token_id=fmt.think_end_token, phase="think")) == ("", "")
    assert native.push(Token(text="42", token_id=1)) == ("", "42")
    assert (native.reasoning, native.content, plain.reasoning, plain.content) == ("so", "42", "", "so")


def test_stop_string_split_across_tokens_is_never_sent(smol_model):
    fmt = reasoning_format(smol_model)
    ch = ChoiceText(["STOP"], fmt)
    sent = [ch.push(Token(text=t, token_id=0))[1] for t in ["ab", "cS", "TO", "Pxyz"]]
    assert "".join(sent) == "abc" and ch.content == "abc" and ch.stopped
    ch = ChoiceText(["STOP"], fmt)
    sent = [ch.push(Token(text=t, token_id=0))[1] for t in ["aS", "Tb"]] + [ch.flush()]
    assert "".join(sent) == "aSTb" and not ch.stopped  # a prefix that did not become a stop string


def test_only_the_methods_own_system_prompt_stops_cot_after_its_answer_line():
    from latentlocal.server.options import parse_request, plan

    own = [{"role": "system", "content": "You are a pirate."}, *MSG]
    assert plan(parse_request({"messages": MSG}), []).cot.stop_after_answer
    assert not plan(parse_request({"messages": own}), []).cot.stop_after_answer


def test_top_p_zero_is_accepted_and_keeps_the_top_token():
    """OpenAI's top_p range is [0, 1]; 0 was refused with a 400."""
    import numpy as np

    from latentlocal.sampling import filter_chain
    from latentlocal.server.options import RequestError, parse_request, plan

    p = plan(parse_request({"messages": MSG, "top_p": 0, "temperature": 1.0}), [])
    assert p.cot.top_p == 0
    ids, w = filter_chain(np.array([0.2, 0.5, 0.3]), 0, 0.0, 0.0)
    assert ids.tolist() == [1] and w.tolist() == [1.0]
    with pytest.raises(RequestError, match="top_p"):
        plan(parse_request({"messages": MSG, "top_p": -0.1}), [])


def test_serve_on_a_busy_port_fails_before_the_model_loads(monkeypatch, capsys):
    import latentlocal.cli.serve as serve_cli
    from latentlocal.cli import main

    monkeypatch.setattr(serve_cli, "open_engine", lambda args: pytest.fail("the model was loaded"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot serve on 127.0.0.1:{port}" in err and "pick another --port" in err


def test_loopback_addresses():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")


def test_a_reachable_address_without_a_key_warns(engine, monkeypatch, capsys):
    import latentlocal.server as srv

    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, log_level: started.append(host))
    srv.serve(engine, ServerConfig(), host="0.0.0.0", port=1)
    assert "without an API key" in capsys.readouterr().err
    srv.serve(engine, ServerConfig(api_key="k"), host="0.0.0.0", port=1)
    srv.serve(engine, ServerConfig(), host="127.0.0.1", port=1)
    assert "warning" not in capsys.readouterr().err and started == ["0.0.0.0"] * 2 + ["127.0.0.1"]


def test_a_request_reuses_the_prompt_prefix_the_last_one_left(server, client):
    """A cot request copies the chat-template prefix the previous request left in the cache and
    decodes only the rest (a Soft Thinking request, batched too, as well); after a method that
    runs alone (it clears the context) the next one decodes its whole prompt (catches copying
    cells the lone method overwrote)."""
    url = server[0]

    def ask(q, **kw):
        before = _jobs(url)
        r = client.chat.completions.create(model="m", max_tokens=3, messages=[{"role": "user", "content": q}], **kw)
        after = _jobs(url)
        return r, (after["prompt_tokens_decoded"] - before["prompt_tokens_decoded"],
                   after["prompt_tokens_reused"] - before["prompt_tokens_reused"])

    ask("What is 7 + 1?")
    r, (decoded, reused) = ask("What is 9 + 2?")
    assert reused > 20 and decoded + reused == r.usage.prompt_tokens  # the system message at least
    r, (decoded, reused) = ask("What is 7 + 1?", extra_body={"method": "soft-thinking"})
    assert reused > 20 and decoded + reused == r.usage.prompt_tokens
    ask("What is 7 + 1?", extra_body={"method": "sc", "samples": 2})
    r, (decoded, reused) = ask("What is 9 + 2?")
    assert reused == 0 and decoded == r.usage.prompt_tokens
    assert r.choices[0].message.content
