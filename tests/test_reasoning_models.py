"""Reasoning models end to end, on a think-token copy of the bundled model (tests/thinkmodel.py).

SmolLM2's weights never write ``</think>``, so every run here ends its thinking by a budget or an
end-of-generation token: the two ways R1-style runs used to end without an answer. Nothing below
depends on a particular continuation: runs are compared with runs in the same process, and where
a path must be taken for sure, ``is_eog`` is replaced so that the path is forced.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from latentlocal import parity
from latentlocal.engine import Engine, Model
from latentlocal.errors import LatentLocalError
from latentlocal.events import Notice, PhaseChange, Round, SequenceDone, Summary, Thought, Token
from latentlocal.methods.cot import CotConfig, SelfConsistencyConfig, _Stream, run_cot, run_self_consistency
from latentlocal.methods.seal import SealConfig, is_delimiter, run_seal
from latentlocal.methods.soft_reasoning import SoftReasoningConfig, run_soft_reasoning, verifier_prompt
from latentlocal.methods.soft_thinking import SoftThinkingConfig, run_soft_thinking
from latentlocal.phases import Budget, ThinkTracker, final_answer, split_thinking
from latentlocal.prompts import ANSWER_MARKER, ReasoningFormat, build_prompt, reasoning_format
from latentlocal.sampling import SamplingConfig
from thinkmodel import THINK_IDS, think_model_path

QUESTION = "Tom has 3 apples and buys 5 more. How many apples does he have?"
END = 8  # </think> in the fixture


@pytest.fixture(scope="module")
def think_model(smol_path) -> Model:
    return Model(think_model_path(smol_path))


@pytest.fixture(scope="module")
def think(think_model):
    engine = Engine(think_model, n_ctx=2048, n_seq_max=8, n_threads=1)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def fmt(think_model):
    return reasoning_format(think_model)


@pytest.fixture(autouse=True)
def _parity_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _tokens(events, seq=0):
    return [e for e in events if isinstance(e, Token) and e.seq == seq]


def check_split(events, fmt, seq=0, max_tokens=None):
    """The invariants of a run on a thinking model; returns (think tokens, answer tokens, reason)."""
    toks = _tokens(events, seq)
    phases = [t.phase for t in toks]
    n_think = phases.count("think")
    assert phases == ["think"] * n_think + ["answer"] * (len(phases) - n_think), "phases interleave"
    think, answer = toks[:n_think], toks[n_think:]
    assert think and think[-1].token_id == END, "thinking must end with </think>"
    assert [t.token_id for t in toks].count(END) == 1
    assert answer, "an answer phase must follow </think>"
    changes = [e for e in events if isinstance(e, PhaseChange) and e.seq == seq]
    assert len(changes) == 1 and changes[0].phase == "answer"
    assert events.index(think[-1]) < events.index(changes[0]) < events.index(answer[0])
    if max_tokens is not None:
        assert len(toks) <= max_tokens
    return think, answer, changes[0].reason


# ---------------------------------------------------------------------------------------------
# the fixture and the pure parts
# ---------------------------------------------------------------------------------------------


def test_fixture_has_native_think_tokens(think_model, smol_model):
    fmt = reasoning_format(think_model)
    assert fmt.native and fmt.think_end_token == END and fmt.think_end_text == "</think>"
    assert not reasoning_format(smol_model).native
    assert {think_model.find_token(t): t for t in THINK_IDS.values()} == THINK_IDS
    assert not think_model.is_eog(END)
    prompt = build_prompt(think_model, QUESTION)
    assert prompt.endswith("<think>\n") and think_model.tokenize(prompt)[-2] == 7
    # the weights are the bundled model's: same logits for the same prompt without the new tokens
    assert think_model.n_vocab == smol_model.n_vocab and think_model.n_embd == smol_model.n_embd


def test_earlier_answers_reach_a_thinking_model_without_their_thinking(think_model, smol_model):
    """A client sends the history back with the thinking inside the content (the server's own
    reasoning_content is separate, but many clients fold it in): Qwen3's and R1's templates cut
    it; llama.cpp's built-in ones do not, so the prompt would teach the model its own long
    traces. A model without think tokens gets the text as sent."""
    from latentlocal.engine import ChatMessage

    history = [ChatMessage("user", "What is 3 + 5?"),
               ChatMessage("assistant", "<think>\nadd them: SECRET STEPS\n</think>\n\nIt is 8."),
               ChatMessage("user", "And times 2?")]
    prompt = build_prompt(think_model, history)
    assert "SECRET STEPS" not in prompt and "It is 8." in prompt and prompt.count("</think>") == 0
    assert prompt.endswith("<think>\n") and "And times 2?" in prompt
    assert "SECRET STEPS" in build_prompt(smol_model, history)


def test_reasoning_off_closes_the_thinking_span_and_answers_in_plain_text(think, think_model, monkeypatch):
    """--reasoning off on a model with think tokens (an instruction model sharing a thinking
    model's tokenizer, or Qwen3 without thinking): the prompt carries an empty span, as Qwen3's
    enable_thinking=False template writes it, and the run is a plain one: nothing forces
    </think> at the budget, which the default (auto) run of the same model does."""
    auto = list(run_cot(think, QUESTION, CotConfig(max_tokens=24, answer_reserve=8)))
    assert END in [t.token_id for t in _tokens(auto)]
    monkeypatch.setattr(think_model, "reasoning", "off")
    assert not reasoning_format(think_model).native
    prompt = build_prompt(think_model, QUESTION)
    assert prompt.endswith("<think>\n\n</think>\n\n") and prompt.count("<think>") == 1
    ids = think_model.tokenize(prompt)
    assert ids.count(7) == ids.count(END) == 1 and ids.index(7) < ids.index(END)
    off = list(run_cot(think, QUESTION, CotConfig(max_tokens=24, answer_reserve=8)))
    toks = _tokens(off)
    assert toks and END not in [t.token_id for t in toks]
    assert not [e for e in off if isinstance(e, PhaseChange)]
    summary = off[-1]
    assert isinstance(summary, Summary) and "</think>" not in summary.text
    # the verifier's prompt keeps its empty span either way
    assert verifier_prompt(think_model, "Which is right?").endswith("<think>\n\n</think>\n\n")


def test_reasoning_setting_is_checked_when_the_model_opens(smol_path):
    from latentlocal.engine_settings import EngineSettings

    with pytest.raises(LatentLocalError, match="--reasoning.*auto, on, off.*'maybe'"):
        EngineSettings(reasoning="maybe")
    with pytest.raises(LatentLocalError, match="--reasoning on needs .* no such tokens"):
        Engine.open(EngineSettings(model=smol_path, reasoning="on", n_ctx=256, n_threads=1))
    for mode, native in (("on", True), ("off", False), ("auto", True)):
        engine = Engine.open(EngineSettings(model=think_model_path(smol_path), reasoning=mode, n_ctx=256,
                                            n_threads=1))
        try:
            assert engine.model.reasoning == mode and reasoning_format(engine.model).native is native
        finally:
            engine.close()


def test_bench_rows_record_the_reasoning_mode_of_a_thinking_model(think, think_model, smol, tmp_path,
                                                                   monkeypatch):
    """Rows of a think-token model say whether it thought (a results folder filled under both
    modes is flagged by the report's "Mixed run conditions"); a plain model's rows say nothing."""
    from latentlocal.datasets import Problem
    from latentlocal.eval.report import mixed_conditions, read_results
    from latentlocal.eval.runner import run_bench

    def answer(engine, question, cancel=None):
        yield Summary("fake", "2", "Final answer: 2", 1, 0.1, "eos", {})

    problems = [Problem(id=f"p{i}", question="1 + 1?", gold="2") for i in range(2)]
    rows = read_results(run_bench(think, problems[:1], [("m", answer)], tmp_path / "t"))
    assert [r["reasoning"] for r in rows] == ["auto"]
    monkeypatch.setattr(think_model, "reasoning", "off")
    rows = read_results(run_bench(think, problems, [("m", answer)], tmp_path / "t"))
    assert [r["reasoning"] for r in rows] == ["auto", "off"]
    assert mixed_conditions(rows) == {"m": {"reasoning": {"auto": 1, "off": 1}}}
    assert "reasoning" not in read_results(run_bench(smol, problems, [("m", answer)], tmp_path / "s"))[0]


def test_budget_keeps_the_answer_reserve():
    assert Budget(512).think_limit() == 512 - 256 - 1
    assert Budget(100, answer_reserve=256).think_limit() == 100 - 50 - 1  # reserve at most half
    assert Budget(512, think_budget=40).think_limit() == 40
    assert Budget(512, answer_reserve=0).think_limit() == 511
    with pytest.raises(LatentLocalError, match="answer-reserve"):
        Budget(512, answer_reserve=-1)


def test_tracker_forces_think_end_on_budget_and_eos(fmt):
    tr = ThinkTracker(fmt, Budget(10, answer_reserve=5), is_eog=lambda t: t == 2)
    fed = [tr.choose(t) for t in (100,)]
    assert fed == [100] and tr.push(100) is None
    assert tr.choose(2) == END and tr.push(END) == "eos" and tr.phase == "answer"
    assert tr.choose(2) == 2  # after thinking an end-of-generation token is just that
    tr = ThinkTracker(fmt, Budget(10, answer_reserve=5), is_eog=lambda t: False)
    for _ in range(4):
        assert tr.push(tr.choose(100)) is None
    assert tr.choose(100) == END and tr.push(END) == "budget"
    assert tr.summary(9) == {"thinking_tokens": 5, "answer_tokens": 4, "think_end": "budget"}


def test_answer_comes_from_after_the_last_think_end(fmt):
    text = "Draft: \\boxed{3}. Final answer: 3\n\nHmm.</think>\n\nSo he has 5 apples. Final answer: 5\n"
    assert final_answer(text, fmt) == "5"
    assert split_thinking(text, fmt)[1].startswith("\n\nSo he")
    # only a draft inside thinking, nothing after: the draft is the fallback, never under strict
    assert final_answer("Final answer: 3</think>\n\nI am done.", fmt) == "3"
    assert final_answer("Final answer: 3</think>\n\nI am done.", fmt, strict=True) is None
    assert final_answer("thinking only, 7 apples", fmt, strict=True) is None
    # without native tokens the text rule is unchanged: \boxed{} first, so the draft wins there,
    # which is exactly what reading after </think> prevents
    plain = ReasoningFormat(None, "Final answer:")
    assert final_answer(text, plain) == "3"
    assert final_answer(text.replace("\\boxed{3}", "3"), plain) == "5"


def test_stop_strings_end_the_answer_not_the_thinking(think):
    """A stop string met while thinking does not end the run (it ended with nothing answered,
    while the server cuts only the reply's content at stop strings); in the answer it does, and
    one that straddles </think> does not count."""
    model = think.model
    words = model.tokenize("Tom has 3 apples", add_special=False)
    st = _Stream(think, ("apples",), None, Budget(200), reasoning_format(model))
    for t in words:
        st.push(t)
    assert st.finish is None
    st.push(END)
    assert st.finish is None  # "apples" then </think>: the window after </think> holds neither
    for t in model.tokenize(" so 3 apples", add_special=False):
        st.push(t)
    assert st.finish == "stop" and st.token_phase == "answer"
    # a model without think tokens: the whole text is the answer, as before
    plain = _Stream(think, ("apples",), None, Budget(200), ReasoningFormat(None, ANSWER_MARKER))
    for t in words:
        plain.push(t)
    assert plain.finish == "stop"


def test_a_verdict_only_answer_is_the_replys_content(think, monkeypatch):
    """When only verifiers gave the final answer, the Summary's text is their verdict, and on a
    thinking model it must read as the answer (after </think>), not as thinking."""
    import latentlocal.methods.soft_reasoning as sr

    monkeypatch.setattr(sr, "final_answer", lambda text, fmt, strict=False: None)
    monkeypatch.setattr(sr, "_verify", lambda *a: ("424242", "All wrong.\nFinal answer: 424242", 3))
    cfg = SoftReasoningConfig(candidates=2, rounds=1, dim=4, max_tokens=16, answer_reserve=4)
    summary = list(run_soft_reasoning(think, "What is 2 + 3?", cfg))[-1]
    thinking, answer = split_thinking(summary.text, reasoning_format(think.model))
    assert summary.answer == "424242" and answer is not None and "Final answer: 424242" in answer
    assert "424242" not in thinking


def test_answer_line_stops_only_outside_thinking(think):
    """'Final answer: 5' inside the thinking span does not stop decoding; after </think> it does."""
    model = think.model
    line = model.tokenize("Final answer: 5\n", add_special=False)
    st = _Stream(think, (), "Final answer:", Budget(200), reasoning_format(model))
    for t in line:
        st.push(t)
    assert st.finish is None and st.token_phase == "think"
    st.push(END)
    assert st.token_phase == "think" and st.closed == "marker"
    for t in line:
        st.push(t)
    assert st.finish == "answer" and st.token_phase == "answer"
    assert st.answer == "5"


def test_verifier_prompt_has_an_empty_thinking_span(think_model, fmt):
    text = verifier_prompt(think_model, "Which is right?")
    assert text.endswith("<think>\n\n</think>\n\n")
    assert text.count("<think>") == 1


# ---------------------------------------------------------------------------------------------
# every method on the fixture
# ---------------------------------------------------------------------------------------------


def test_cot_budget_forces_think_end_then_answers(think, fmt, monkeypatch):
    monkeypatch.setattr(think.model, "is_eog", lambda t: False)  # never stops: the budget must
    cfg = CotConfig(max_tokens=40, answer_reserve=12)
    events = list(run_cot(think, QUESTION, cfg))
    think_toks, answer, reason = check_split(events, fmt, max_tokens=40)
    assert reason == "budget" and len(think_toks) == cfg.budget.think_limit() + 1
    assert think_toks[-1].prob is None  # forced, not sampled
    s = events[-1]
    assert s.extra["think_end"] == "budget" and s.extra["thinking_tokens"] == len(think_toks)
    assert s.extra["answer_tokens"] == len(answer) == s.generated_tokens - len(think_toks)
    assert s.answer == final_answer(s.text, fmt)


def test_eos_inside_thinking_becomes_think_end(think, fmt, monkeypatch):
    cfg = CotConfig(max_tokens=40, answer_reserve=12)
    monkeypatch.setattr(think.model, "is_eog", lambda t: False)  # a full-length thinking span
    free = [t.token_id for t in _tokens(list(run_cot(think, QUESTION, cfg)))]
    # the first token that first appears at thinking position >= 3 plays end-of-generation next
    k = next(i for i in range(3, free.index(END)) if free[i] not in free[:i])
    monkeypatch.setattr(think.model, "is_eog", lambda t, eog=free[k]: t == eog)
    events = list(run_cot(think, QUESTION, cfg))
    think_toks, answer, reason = check_split(events, fmt)
    assert reason == "eos" and [t.token_id for t in think_toks] == free[:k] + [END]
    assert events[-1].extra["think_end"] == "eos"


def test_self_consistency_splits_every_sample(think, fmt, monkeypatch):
    monkeypatch.setattr(think.model, "is_eog", lambda t: False)
    cfg = SelfConsistencyConfig(samples=3, max_tokens=30, answer_reserve=10)
    events = list(run_self_consistency(think, QUESTION, cfg))
    for s in range(3):
        think_toks, _, reason = check_split(events, fmt, seq=s, max_tokens=30)
        assert reason == "budget" and len(think_toks) == cfg.budget.think_limit() + 1
    done = {e.seq: e for e in events if isinstance(e, SequenceDone)}
    assert all(d.answer == final_answer(d.text, fmt) for d in done.values())
    assert events[-1].extra["think_end"] == ["budget"] * 3


def test_soft_thinking_budget_leaves_room_for_the_answer(think, fmt):
    """The old failure: thinking used up max_tokens and no answer phase ran."""
    cfg = SoftThinkingConfig(max_tokens=40, answer_reserve=12, cold_stop_patience=0)
    events = list(run_soft_thinking(think, QUESTION, cfg))
    think_toks, answer, reason = check_split(events, fmt, max_tokens=40)
    s = events[-1]
    assert reason in ("budget", "eos") and s.extra["end_reason"] == reason
    if reason == "budget":
        assert len(think_toks) == Budget(40, 12).think_limit() + 1
    assert think_toks[-1].mode == "discrete" and all(t.mode == "soft" for t in think_toks[:-1])
    assert s.extra["thinking_tokens"] == len(think_toks) and s.extra["answer_tokens"] == len(answer)
    assert s.answer == final_answer(s.text, fmt) and "</think>" in s.text


def test_soft_thinking_eos_top1_is_replaced_by_think_end(think, fmt, monkeypatch):
    cfg = SoftThinkingConfig(max_tokens=40, answer_reserve=12, cold_stop_patience=0)
    monkeypatch.setattr(think.model, "is_eog", lambda t: False)
    free = [t.token_id for t in _tokens(list(run_soft_thinking(think, QUESTION, cfg))) if t.phase == "think"]
    k = next(i for i in range(3, len(free) - 1) if free[i] not in free[:i])
    monkeypatch.setattr(think.model, "is_eog", lambda t, eog=free[k]: t == eog)
    events = list(run_soft_thinking(think, QUESTION, cfg))
    think_toks, _, reason = check_split(events, fmt)
    assert reason == "eos" and [t.token_id for t in think_toks] == free[:k] + [END]


def test_seal_steers_only_delimiters_inside_thinking(think, fmt, monkeypatch):
    model = think.model
    monkeypatch.setattr(model, "is_eog", lambda t: False)
    fed: list[tuple[int, bool]] = []
    real = think.decode_tokens

    def spy(tokens, seq=0, logits="last"):
        if len(tokens) == 1:
            fed.append((tokens[0], think.control_vector_active))
        return real(tokens, seq, logits)

    monkeypatch.setattr(think, "decode_tokens", spy)
    v = np.random.default_rng(0).normal(size=model.n_embd).astype(np.float32)
    cfg = SealConfig(directions={10: v}, alpha=0.5, max_tokens=120, answer_reserve=40)
    events = list(run_seal(think, QUESTION, cfg))
    think_toks, answer, reason = check_split(events, fmt, max_tokens=120)
    assert reason == "budget"
    steered = [i for i, (_, on) in enumerate(fed) if on]
    assert steered == events[-1].extra["steered_positions"]
    end_at = len(think_toks) - 1
    before = b""
    for i, (tok, on) in enumerate(fed):
        piece = model.piece(tok)
        delim = i < end_at and is_delimiter(piece, before)
        assert on == delim, f"position {i} ({piece!r}): steered {on}, delimiter inside thinking {delim}"
        before = piece[-1:] if piece else before
    thoughts = [e for e in events if isinstance(e, Thought)]
    assert thoughts and all("</think>" not in t.text for t in thoughts)


def test_soft_reasoning_candidates_reach_an_answer(think, fmt, monkeypatch):
    monkeypatch.setattr(think.model, "is_eog", lambda t: False)  # no candidate stops before </think>
    cfg = SoftReasoningConfig(candidates=2, rounds=1, max_tokens=36, answer_reserve=12,
                              verifier_max_tokens=24, reuse_prefix=0)
    events = list(run_soft_reasoning(think, QUESTION, cfg))
    done = [e for e in events if isinstance(e, SequenceDone)]
    assert len(done) == 2
    for d in done:
        check_split(events, fmt, seq=d.seq)
        assert d.text.count("</think>") == 1
    (rnd,) = [e for e in events if isinstance(e, Round)]
    assert [c.answer for c in rnd.candidates] == [final_answer(c.text, fmt) for c in rnd.candidates]
    assert all(c.text.count("</think>") == 1 for c in rnd.candidates)
    assert isinstance(events[-1], Summary)


def test_soft_reasoning_warns_when_candidates_reach_no_answer(think, fmt, monkeypatch, caplog):
    # every token ends generation: each candidate is </think> then nothing, the verifier says nothing
    monkeypatch.setattr(think.model, "is_eog", lambda t: True)
    cfg = SoftReasoningConfig(candidates=2, rounds=1, max_tokens=20, answer_reserve=8, reuse_prefix=0)
    with caplog.at_level("WARNING", logger="latentlocal.methods.soft_reasoning"):
        events = list(run_soft_reasoning(think, QUESTION, cfg))
    notices = [e for e in events if isinstance(e, Notice)]
    assert [n.kind for n in notices] == ["few_answers"] and "0 of 2" in notices[0].message
    assert any("0 of 2" in r.message for r in caplog.records)
    rounds = [e for e in events if isinstance(e, Round)]
    assert rounds[0].verifier_answer is None


# ---------------------------------------------------------------------------------------------
# embedding input on architectures without a parity test
# ---------------------------------------------------------------------------------------------


def _unknown_architecture(model, monkeypatch) -> None:
    """The model as one of an architecture without a parity test, not yet checked."""
    monkeypatch.setattr(model, "arch", "mystery")
    monkeypatch.setattr(model, "embedding_input_checked", None)
    monkeypatch.setattr(model, "embedding_parity", None)


def test_unknown_architecture_is_checked_once_and_cached(smol, monkeypatch, tmp_path):
    model = smol.model
    _unknown_architecture(model, monkeypatch)
    calls = []
    real = parity.measure
    monkeypatch.setattr(parity, "measure", lambda e: calls.append(1) or real(e))
    cfg = SoftThinkingConfig(max_tokens=4, system=None)
    list(run_soft_thinking(smol, QUESTION, cfg))
    list(run_soft_thinking(smol, QUESTION, cfg))
    assert calls == [1] and model.embedding_input_checked is True
    cache = json.loads((tmp_path / "cache" / "latentlocal" / "embedding-parity.json").read_text())
    (entry,) = cache.values()
    assert entry["arch"] == "mystery" and entry["ok"] and entry["relative_diff"] <= parity.TOLERANCE
    model.embedding_input_checked = None  # a new process: the file answers, no new measurement
    list(run_soft_thinking(smol, QUESTION, cfg))
    assert calls == [1]


def test_unknown_architecture_with_wrong_rows_is_refused(smol, monkeypatch):
    model = smol.model
    _unknown_architecture(model, monkeypatch)
    table = model.embeddings
    real = table.rows
    monkeypatch.setattr(table, "rows", lambda ids: real(ids) * 3.0)  # a graph that scales inputs
    with pytest.raises(LatentLocalError, match="'mystery'.*parity"):
        list(run_soft_thinking(smol, QUESTION, SoftThinkingConfig(max_tokens=4, system=None)))
    with pytest.raises(LatentLocalError, match="mystery"):
        list(run_soft_reasoning(smol, QUESTION, SoftReasoningConfig(candidates=1, rounds=1, max_tokens=4)))


@pytest.mark.parametrize("arch,rope", [("qwen2vl", None), ("llama", "mrope")])
def test_mrope_models_refuse_embedding_input(smol, monkeypatch, arch, rope):
    import llama_cpp

    model = smol.model
    monkeypatch.setattr(model, "arch", arch)
    if rope:
        monkeypatch.setattr(model, "rope_type", llama_cpp.LLAMA_ROPE_TYPE_MROPE)
    smol.clear()
    with pytest.raises(LatentLocalError, match="M-RoPE"):
        list(run_soft_thinking(smol, QUESTION, SoftThinkingConfig(max_tokens=4, system=None)))
    with pytest.raises(LatentLocalError, match="M-RoPE"):
        smol.decode_embeddings(model.embeddings.rows([5, 6]))
    assert smol.pos(0) == 0  # refused before anything was decoded
    # token methods still run
    s = list(run_cot(smol, QUESTION, CotConfig(max_tokens=3, system=None)))[-1]
    assert s.generated_tokens == 3 or s.finish_reason in ("eos", "answer")


def test_extraction_traces_are_long_on_thinking_models(think, smol):
    from latentlocal.methods.seal.extract import NATIVE_TRACE_TOKENS, PLAIN_TRACE_TOKENS, trace_tokens

    assert trace_tokens(None, smol) == PLAIN_TRACE_TOKENS == 512
    # the paper's code allows 10,000 new tokens; here capped by the 2048-token context
    assert trace_tokens(None, think) == think.n_ctx - 256 < NATIVE_TRACE_TOKENS
    assert trace_tokens(300, think) == 300
    with pytest.raises(LatentLocalError, match="max-tokens"):
        trace_tokens(0, think)


def test_extraction_traces_fit_the_context_after_their_prompt(think_model, monkeypatch, tmp_path):
    """The default trace budget on a thinking model is n_ctx - 256, which a longer prompt
    overflows: the trace filled the context and failed part way. Fitted per prompt, it keeps
    the answer reserve of what is left."""
    from latentlocal.methods.cot import prompt_tokens
    from latentlocal.methods.seal.extract import ExtractConfig, _generate_trace, _Seq, trace_tokens

    monkeypatch.setattr(think_model, "is_eog", lambda t: False)  # never ends early: the budget must
    engine = Engine(think_model, n_ctx=512, n_seq_max=1, n_threads=1)
    try:
        question = " ".join(["Tom has 3 apples and buys 5 more."] * 25) + " How many apples?"
        cfg = ExtractConfig(data="unused", out=str(tmp_path / "v.gguf"),
                            max_tokens=trace_tokens(None, engine))
        toks = prompt_tokens(engine, question, cfg.system)
        assert len(toks) > 256 and len(toks) + cfg.max_tokens > engine.n_ctx
        trace = _generate_trace(_Seq(engine, []), toks, cfg, np.random.default_rng(0), None, None)
    finally:
        engine.close()
    room = 512 - len(toks)
    assert trace["max_tokens"] == room and len(trace["tokens"]) == room and trace["finish"] == "length"
    assert trace["tokens"].count(END) == 1
    assert len(trace["tokens"]) - trace["tokens"].index(END) - 1 == Budget(room).reserve


def test_a_budget_larger_than_the_context_is_cut_with_a_notice(think_model, fmt, monkeypatch):
    """--max-tokens 8192 in a 512-token context: thinking is capped so the answer still fits."""
    monkeypatch.setattr(think_model, "is_eog", lambda t: False)
    engine = Engine(think_model, n_ctx=512, n_seq_max=2, n_threads=1)
    try:
        events = list(run_cot(engine, QUESTION, CotConfig(max_tokens=8192, stop_after_answer=False)))
    finally:
        engine.close()
    (note,) = [e for e in events if isinstance(e, Notice)]
    assert note.kind == "context" and "--n-ctx" in note.message
    room = 512 - events[-1].extra["prompt_tokens"]
    think_toks, answer, reason = check_split(events, fmt, max_tokens=room)
    assert reason == "budget" and events[-1].finish_reason == "length"
    assert len(think_toks) + len(answer) == room and len(answer) == Budget(room).reserve


def test_the_parity_check_leaves_the_callers_sequences_alone(smol, monkeypatch):
    """The check runs when a method first feeds rows, which in a server or a batched bench is
    while other requests' sequences are decoding: measuring in the caller's context cleared
    them."""
    model = smol.model
    _unknown_architecture(model, monkeypatch)
    calls = []
    real = parity.measure
    monkeypatch.setattr(parity, "measure", lambda e: calls.append(e) or real(e))
    smol.clear()
    toks = model.tokenize(QUESTION)
    smol.decode_tokens(toks, seq=1)
    clears = smol.clears
    parity.check_embedding_input(smol)
    assert len(calls) == 1 and calls[0] is not smol and model.embedding_input_checked is True
    assert smol.clears == clears and smol.pos(1) == len(toks)  # never cleared, the sequence kept
    smol.clear()
