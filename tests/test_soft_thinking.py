"""Soft Thinking: concept weights, the end-of-thinking rules, Cold Stop, noise, and the embedding
path checked end to end against greedy chain of thought."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace

import numpy as np
import pytest

from latentlocal.answers import extract_answer
from latentlocal.engine import ChatMessage
from latentlocal.errors import LatentLocalError
from latentlocal.events import ColdStop, PhaseChange, Summary, Token
from latentlocal.methods.cot import CotConfig, run_cot
from latentlocal.methods.registry import canonical, make_runner
from latentlocal.methods.soft_thinking import (
    ColdStopCounter,
    ConceptFilter,
    SoftThinkingConfig,
    dirichlet_weights,
    forced_end_tokens,
    gumbel_weights,
    moi_weights,
    run_soft_thinking,
    thinking_end,
)
from latentlocal.prompts import COT_SYSTEM, ReasoningFormat, build_prompt
from spies import EngineSpy

Q = "Tom has 3 apples and buys 5 more. How many apples does he have?"
ADD = "What is 2+3?"


def _ids(events, phase=None):
    return [e.token_id for e in events if isinstance(e, Token) and (phase is None or e.phase == phase)]


def _one(events, kind):
    found = [e for e in events if isinstance(e, kind)]
    assert len(found) == 1, found
    return found[0]


def _few_shot(engine, question):
    """A prompt whose examples make SmolLM2 write "Final answer: N" greedily (the bare system
    prompt rarely does), so the marker path of the embedding route is exercised."""
    M = ChatMessage
    shots = [
        M("system", COT_SYSTEM),
        M("user", "What is 4+4?"), M("assistant", "4 + 4 = 8.\n\nFinal answer: 8"),
        M("user", "Sam has 10 pens and gives away 3. How many pens are left?"),
        M("assistant", "10 - 3 = 7.\n\nFinal answer: 7"),
        M("user", question),
    ]
    return engine.model.tokenize(engine.model.apply_chat(shots))


# onehot_tokens=False: every concept goes through decode_embeddings, so agreement with greedy
# token decoding proves the embedding route (rows, input scale, positions) end to end.
GREEDY = SoftThinkingConfig(max_tokens=60, max_topk=1, onehot_tokens=False)

# llama.cpp's numerics differ between builds (AVX2 / AVX-512, thread counts), so a greedy chain is
# not a constant: an AVX-512 build ended "What is 2+3?" with eos inside 60 tokens where AVX2
# rambled on. Tests that need a long chain use this raw continuation instead: at every one of 60
# greedy steps its top-1 logit leads the runner-up by more than 1.6 on SmolLM2 and 2.5 on Gemma,
# where builds differ by about 1e-3, so it runs 60 tokens without an end on any correct build.
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8,"
# row/token parity tolerance, relative to the logits' range (as tests/test_engine.py)
PARITY = 1e-3


class _Calls(EngineSpy):
    """What a method asks of an engine: the logits it reads and the tokens and rows it feeds."""

    def take(self, prompt) -> list[tuple[str, object]]:
        """The calls since the last decode of ``prompt``, and start a new record."""
        log, self.log = self.log, []
        starts = [i for i, (kind, x) in enumerate(log) if kind == "tokens" and x == list(prompt)]
        assert starts, "the prompt was never decoded"
        return log[starts[-1] + 1:]


def _steps(log) -> list[tuple[np.ndarray, tuple[str, object] | None]]:
    """(logits read, what was fed right after it or None) per read."""
    out = []
    for i, (kind, x) in enumerate(log):
        if kind == "logits":
            nxt = log[i + 1] if i + 1 < len(log) and log[i + 1][0] != "logits" else None
            out.append((x, nxt))
    return out


def _mix_reference(table, ids, w) -> np.ndarray:
    """sum_i w_i E[id_i] in float64 from the table's rows: independent of EmbeddingTable.mix."""
    rows = table.rows([int(i) for i in ids]).astype(np.float64)
    return np.asarray(w, dtype=np.float64) @ rows


def _force(monkeypatch, engine, at: int, token: int):
    """Make ``token`` the top-1 of the ``at``-th logits read (1-based) of each run that follows,
    counting from the next prompt decode: an outcome the test chooses, not the build."""
    real_logits, real_tokens = engine.logits, engine.decode_tokens
    count = [0]

    def tokens(toks, *a, **k):
        if len(toks) > 1 and engine.pos(0) == 0:
            count[0] = 0  # a new run decodes its prompt into an empty context
        return real_tokens(toks, *a, **k)

    def logits(i=-1):
        out = real_logits(i)
        count[0] += 1
        if count[0] == at:
            out = np.array(out)
            out[token] = out.max() + 100.0
        return out

    monkeypatch.setattr(engine, "logits", logits)
    monkeypatch.setattr(engine, "decode_tokens", tokens)


# ---------------------------------------------------------------------------------------------
# concept weights against an independent reference
# ---------------------------------------------------------------------------------------------


def _reference(logits, T, top_k, top_p, min_p, max_keep):
    """The chain written out plainly: full sort, cumulative mass, min-p, keep, renormalise."""
    z = np.asarray(logits, dtype=np.float64) / T
    p = np.exp(z - z.max())
    p /= p.sum()
    h = -sum(x * math.log(x) for x in p if x > 0)
    order = sorted(range(len(p)), key=lambda i: -p[i])
    if top_k > 0:
        order = order[:top_k]
    total = sum(p[i] for i in order)
    kept, acc = [], 0.0
    for i in order:
        kept.append(i)
        acc += p[i] / total
        if top_p < 1.0 and acc >= top_p:  # top-p 1 is off (float sums may reach 1 early)
            break
    kept = [i for i in kept if p[i] >= min_p * p[kept[0]]][:max_keep]
    w = np.array([p[i] for i in kept])
    return np.array(kept), w / w.sum(), h


@pytest.mark.parametrize(
    "case",
    [
        # broad: hundreds of tokens near the top -> the fast path
        dict(spread=1.0, lead=4.0, T=0.6, top_k=30, top_p=0.95, min_p=0.001, max_keep=10),
        dict(spread=1.5, lead=6.0, T=1.0, top_k=50, top_p=0.5, min_p=0.0, max_keep=40),
        dict(spread=0.8, lead=3.0, T=0.6, top_k=30, top_p=1.0, min_p=0.2, max_keep=10),
        # peaked: fewer than top_k tokens within 30 scaled nats -> the full reference path
        dict(spread=1.0, lead=40.0, T=0.6, top_k=30, top_p=0.95, min_p=0.001, max_keep=10),
        dict(spread=1.0, lead=40.0, T=0.6, top_k=30, top_p=1.0, min_p=0.0, max_keep=10),
        # top-k off
        dict(spread=1.0, lead=4.0, T=0.7, top_k=0, top_p=0.9, min_p=0.01, max_keep=5),
    ],
)
def test_concept_weights_match_a_numpy_reference(case):
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal(5000) * case["spread"]).astype(np.float32)
    logits[[17, 400, 2999]] += np.float32([case["lead"], case["lead"] - 0.3, case["lead"] - 0.9])
    args = (case["T"], case["top_k"], case["top_p"], case["min_p"], case["max_keep"])
    f = ConceptFilter(*args)
    ids, w, h = f(logits)
    rids, rw, rh = _reference(logits, *args)
    assert ids.tolist() == rids.tolist()
    np.testing.assert_allclose(w, rw, rtol=1e-6, atol=1e-12)
    assert h == pytest.approx(rh, abs=1e-6)
    assert abs(w.sum() - 1.0) < 1e-12 and np.all(np.diff(w) <= 0)
    near = int((logits >= logits.max() - 30 * case["T"]).sum())
    fast = 0 < case["top_k"] <= near
    assert (f.fast_steps, f.full_steps) == ((1, 0) if fast else (0, 1))
    assert fast == (case["lead"] < 10 and case["top_k"] > 0)  # both paths are covered


def test_concept_with_one_kept_token_is_the_argmax_row_exactly(smol):
    f = ConceptFilter(0.6, 30, 0.95, 0.001, 1)
    ids, w, _ = f(np.array([0.1, 3.0, 2.9, -1.0], dtype=np.float32))
    assert ids.tolist() == [1] and w.tolist() == [1.0]
    table = smol.model.embeddings
    assert np.array_equal(table.mix([1234], [1.0]), table.rows([1234])[0])


def _real_mixture(engine, prompt):
    """Decode ``prompt``; the default concept at its last position, a real mixture."""
    engine.clear()
    engine.decode_tokens(prompt)
    ids, w, _ = ConceptFilter(0.6, 30, 0.95, 0.001, 10)(np.array(engine.logits(-1)))
    # the first answer token of a question is open: several candidates with real weight
    assert len(ids) >= 3 and 0.05 < w[1] and w[0] < 0.9, (ids, w)
    return ids, w


def test_a_real_mixture_changes_the_next_logits(smol):
    """Feeding the concept (a weighted mix of several embeddings) is not feeding its top-1: from
    the same prefix, the logits after the mixture differ from those after the top-1 token by far
    more than the row/token parity tolerance, while a mixture of the top-1 alone is the token."""
    prompt = smol.model.tokenize(build_prompt(smol.model, Q, None))
    ids, w = _real_mixture(smol, prompt)
    table = smol.model.embeddings
    np.testing.assert_allclose(table.mix(ids, w), _mix_reference(table, ids, w), rtol=1e-5, atol=1e-6)
    n = len(prompt)

    def after(feed) -> np.ndarray:
        smol.seq_remove(0, n)
        feed()
        return np.array(smol.logits(-1))

    by_token = after(lambda: smol.decode_tokens([int(ids[0])]))
    tol = PARITY * float(by_token.max() - by_token.min())
    top1_row = after(lambda: smol.decode_embeddings(table.mix(ids[:1], [1.0])))
    mixed = after(lambda: smol.decode_embeddings(table.mix(ids, w)))
    second = after(lambda: smol.decode_tokens([int(ids[1])]))
    assert np.abs(top1_row - by_token).max() <= tol
    assert np.abs(mixed - by_token).max() > 10 * tol
    assert np.abs(mixed - second).max() > 10 * tol  # nor is it the runner-up
    assert smol.pos(0) == n + 1


def test_soft_thinking_feeds_each_concept_mixture(smol, monkeypatch):
    """Every thinking step feeds sum_i w_i E[id_i] of the concept its logits give (a
    one-candidate concept as its token); the event shows that concept. A version feeding the
    top-1 embedding, or other weights, fails here."""
    cfg = SoftThinkingConfig(max_tokens=12, think_budget=8, system=None, top_events=10)
    prompt = smol.model.tokenize(build_prompt(smol.model, Q, None))
    calls = _Calls(monkeypatch, smol)
    events = list(run_soft_thinking(smol, Q, cfg, prompt=prompt))
    steps = _steps(calls.take(prompt))
    think = [e for e in events if isinstance(e, Token) and e.phase == "think"]
    assert len(think) == 8 and _one(events, PhaseChange).reason == "budget"
    table = smol.model.embeddings
    mixed = 0
    for i, t in enumerate(think):
        logits, fed = steps[i]
        ids, w, h = ConceptFilter(cfg.temperature, cfg.top_k, cfg.top_p, cfg.min_p, cfg.max_topk)(logits)
        assert t.token_id == ids[0] and t.prob == pytest.approx(w[0]) and t.entropy == pytest.approx(h)
        assert [x for _, x in t.top] == pytest.approx(list(w))
        if len(ids) == 1:
            assert fed == ("tokens", [int(ids[0])]), (i, fed)
        else:
            mixed += 1
            assert fed[0] == "rows" and fed[1].shape == (1, smol.n_embd), (i, fed)
            want = _mix_reference(table, ids, w)
            np.testing.assert_allclose(fed[1][0], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert mixed >= 2, "the run should hold several real mixtures"


# ---------------------------------------------------------------------------------------------
# noise and Mixture of Inputs (pure functions)
# ---------------------------------------------------------------------------------------------


def test_gumbel_dirichlet_and_moi_weight_formulas():
    w = np.array([0.6, 0.25, 0.1, 0.05])
    # Gumbel-softmax with the draws made visible
    g = np.random.default_rng(5).gumbel(size=4)
    z = (np.log(w) + g) / 0.5
    expected = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose(gumbel_weights(w, 0.5, np.random.default_rng(5)), expected)
    # Dirichlet(alpha * w): mean w, variance w(1-w)/(alpha+1)
    rng = np.random.default_rng(6)
    draws = np.array([dirichlet_weights(w, 4.0, rng) for _ in range(4000)])
    np.testing.assert_allclose(draws.mean(0), w, atol=0.02)
    np.testing.assert_allclose(draws.var(0), w * (1 - w) / 5.0, rtol=0.15)
    assert dirichlet_weights(np.array([1.0]), 1.0, rng).tolist() == [1.0]
    # Mixture of Inputs: H_n * (w + beta onehot)/(1 + beta) + (1 - H_n) onehot
    out, j = moi_weights(w.copy(), 1.0, 20, np.random.default_rng(7))
    u = np.random.default_rng(7).random()
    assert j == int(np.searchsorted(np.cumsum(w), u * w.sum(), side="right"))
    hn = -(w * np.log(w)).sum() / math.log(20)
    onehot = np.eye(4)[j]
    np.testing.assert_allclose(out, hn * (w + onehot) / 2 + (1 - hn) * onehot)
    assert out.sum() == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# end-of-thinking rules
# ---------------------------------------------------------------------------------------------


def test_cold_stop_counter_fires_after_exactly_patience_low_steps():
    c = ColdStopCounter(0.01, 3)
    stream = [0.5, 0.001, 0.002, 0.3, 0.0, 0.005, 0.009, 0.0]
    fired = [c.push(h) for h in stream]
    # the high step at index 3 resets the run; the run 4, 5, 6 completes at 6
    assert fired == [False, False, False, False, False, False, True, True]
    assert not any(ColdStopCounter(0.01, 3).push(h) for h in [0.0, 0.0, 0.01, 0.0, 0.0])  # 0.01 is not below
    for off in (ColdStopCounter(0.0, 3), ColdStopCounter(0.01, 0)):
        assert not off.enabled and not any(off.push(0.0) for _ in range(10))


def test_thinking_end_rule():
    native = ReasoningFormat(think_end_token=77, think_end_text="</think>")
    text = ReasoningFormat(think_end_token=None, think_end_text="Final answer:")
    eog = {2}.__contains__
    assert thinking_end(77, native, eog) == "marker"
    assert thinking_end(2, native, eog) == "eos"
    assert thinking_end(5, native, eog) is None
    assert thinking_end(77, text, eog) is None  # a text format ends on the marker text only
    assert thinking_end(2, text, eog) == "eos"


def test_forced_end_tokens(smol):
    model = smol.model
    native = ReasoningFormat(think_end_token=77, think_end_text="</think>")
    text = ReasoningFormat(think_end_token=None, think_end_text="Final answer:")
    assert forced_end_tokens(model, native, "abc") == [77]
    assert model.detokenize(forced_end_tokens(model, text, "so 8")) == "\n\nFinal answer:"
    assert model.detokenize(forced_end_tokens(model, text, "so 8\n")) == "\nFinal answer:"
    assert model.detokenize(forced_end_tokens(model, text, "so 8\n\n")) == "Final answer:"


# ---------------------------------------------------------------------------------------------
# the embedding path end to end: max_topk 1 is greedy chain of thought
# ---------------------------------------------------------------------------------------------


def _assert_rows_reproduce_greedy(engine, monkeypatch, n):
    """max_topk 1 concepts fed as embedding rows against greedy CoT, both on COUNTING: the same
    logits at every step, hence the same tokens, and the rows really went in."""
    model = engine.model
    prompt = model.tokenize(COUNTING)
    calls = _Calls(monkeypatch, engine)
    cot = list(run_cot(engine, COUNTING, CotConfig(max_tokens=n), prompt=prompt))
    cot_steps = _steps(calls.take(prompt))
    soft = list(run_soft_thinking(engine, COUNTING, SoftThinkingConfig(max_tokens=n, max_topk=1, onehot_tokens=False),
                                  prompt=prompt))
    soft_steps = _steps(calls.take(prompt))
    greedy = _ids(cot)
    assert cot[-1].finish_reason == "length" and len(greedy) == n
    margins = [float(np.diff(np.sort(lg)[-2:])[0]) for lg, _ in cot_steps]
    assert min(margins) > 0.5, f"the counting chain has a near-tie ({min(margins):.3f}): pick another prompt"
    assert _ids(soft, "think") == greedy
    assert len(soft_steps) == len(cot_steps) == n
    for i, ((lc, _), (ls, fed)) in enumerate(zip(cot_steps, soft_steps)):
        tol = PARITY * float(lc.max() - lc.min())
        assert np.abs(ls - lc).max() <= tol, f"step {i}: the row input gave other logits than the token"
        # every step fed the top-1's embedding row, not its token id
        assert fed is not None and fed[0] == "rows", (i, fed)
        np.testing.assert_array_equal(fed[1], model.embeddings.rows([greedy[i]]))
    s = soft[-1]
    assert s.text == cot[-1].text and s.finish_reason == "length" and s.extra["end_reason"] is None
    assert all(t.mode == "soft" and t.entropy is not None for t in soft if isinstance(t, Token))


def test_one_token_concepts_reproduce_greedy_cot_for_60_tokens(smol, monkeypatch):
    _assert_rows_reproduce_greedy(smol, monkeypatch, 60)


def test_one_token_concepts_reproduce_greedy_cot_through_the_marker(smol):
    """The marker "Final answer:" spans three tokens on the top-1 chain; thinking ends on its last
    one, and the discrete answer continues exactly where greedy CoT goes, up to the completed
    answer line."""
    question = "A box holds 6 eggs. How many eggs are in 4 boxes?"
    prompt = _few_shot(smol, question)
    cot = list(run_cot(smol, question, CotConfig(max_tokens=60), prompt=prompt))
    soft = list(run_soft_thinking(smol, question, GREEDY, prompt=prompt))
    think, answer = _ids(soft, "think"), _ids(soft, "answer")
    assert think + answer == _ids(cot)
    change = _one(soft, PhaseChange)
    assert change.reason == "marker"
    think_text = "".join(t.text for t in soft if isinstance(t, Token) and t.phase == "think")
    assert think_text.endswith("Final answer:")
    assert [smol.model.token_text(t) for t in think[-3:]] == ["Final", " answer", ":"]  # across tokens
    assert answer, "the answer phase produced tokens"
    s = soft[-1]
    assert s.text == cot[-1].text and s.finish_reason == cot[-1].finish_reason == "answer"
    assert s.answer == cot[-1].answer is not None  # what follows the marker is in the text
    assert s.extra["thinking_tokens"] == len(think) and s.extra["answer_tokens"] == len(answer)
    assert s.generated_tokens == len(think) + len(answer)


def test_one_token_concepts_reproduce_greedy_cot_on_gemma(gemma, monkeypatch):
    """Gemma 3 takes embedding rows pre-scaled by sqrt(n_embd); with them the soft route holds
    token for token (and logit for logit) for the whole run checked here."""
    _assert_rows_reproduce_greedy(gemma, monkeypatch, 30)


def test_one_candidate_concepts_fed_as_tokens_change_nothing(smol):
    """The shortcut (a concept with w = [1] is fed as its token id) gives the same run."""
    base = dict(max_tokens=24, system=None)
    fast = _trajectory(run_soft_thinking(smol, Q, SoftThinkingConfig(**base)))
    rows = _trajectory(run_soft_thinking(smol, Q, SoftThinkingConfig(onehot_tokens=False, **base)))
    assert [t for t, _ in fast] == [t for t, _ in rows]
    for (_, a), (_, b) in zip(fast, rows):  # rows and tokens agree to the parity tolerance
        assert len(a) == len(b) and np.allclose(a, b, atol=1e-4)
    assert any(len(top) == 1 for _, top in fast) and any(len(top) > 1 for _, top in fast)


def test_eos_while_thinking_ends_thinking_and_still_answers(smol, monkeypatch):
    """An end-of-generation top-1 while thinking is not fed: the marker is forced and the answer
    runs. The eos is made the top-1 of the 5th step (of CoT and of Soft Thinking alike) rather than
    hoped for: where greedy decoding meets eos by itself depends on the build."""
    model = smol.model
    assert model.is_eog(model.eos)
    _force(monkeypatch, smol, at=5, token=model.eos)
    cot = list(run_cot(smol, Q, CotConfig(max_tokens=60)))
    assert cot[-1].finish_reason == "eos" and len(_ids(cot)) == 5
    soft = list(run_soft_thinking(smol, Q, GREEDY))
    think = _ids(soft, "think")
    assert think == _ids(cot) and think[-1] == model.eos
    assert _one(soft, PhaseChange).reason == "eos"
    answer = [t for t in soft if isinstance(t, Token) and t.phase == "answer"]
    answer_text = "".join(t.text for t in answer)
    forced = forced_end_tokens(model, ReasoningFormat(None, "Final answer:"), cot[-1].text)
    assert [t.token_id for t in answer[:len(forced)]] == forced
    assert answer_text.startswith(model.detokenize(forced)) and all(t.mode == "discrete" for t in answer)
    s = soft[-1]
    assert s.extra["end_reason"] == "eos" and s.finish_reason in ("eos", "answer", "length")
    assert model.token_text(model.eos) not in s.text and s.text == cot[-1].text + answer_text
    assert s.answer == extract_answer(s.text)


def test_native_think_end_token_ends_thinking_where_it_is_top1(smol):
    """Neither bundled model has a single </think> token: declare one. Take the token greedy
    decoding emits at step k (its first occurrence) as the end-of-thinking token. (COUNTING: its
    30 greedy tokens are the same on every build.)"""
    prompt = smol.model.tokenize(COUNTING)
    greedy = _ids(run_cot(smol, COUNTING, CotConfig(max_tokens=30), prompt=prompt))
    assert len(greedy) == 30
    k = next(i for i in range(8, 30) if greedy[i] not in greedy[:i])
    fmt = ReasoningFormat(think_end_token=greedy[k], think_end_text="</think>")
    cfg = SoftThinkingConfig(max_tokens=30, max_topk=1, onehot_tokens=False)
    soft = list(run_soft_thinking(smol, COUNTING, cfg, prompt=prompt, fmt=fmt))
    think = [e for e in soft if isinstance(e, Token) and e.phase == "think"]
    assert [t.token_id for t in think] == greedy[:k + 1]
    assert think[-1].mode == "discrete" and all(t.mode == "soft" for t in think[:-1])
    assert _one(soft, PhaseChange).reason == "marker"
    # </think> is fed as a token, so the discrete answer continues the greedy chain
    assert _ids(soft) == greedy
    assert soft[-1].extra["end_reason"] == "marker"


# ---------------------------------------------------------------------------------------------
# Cold Stop, budget
# ---------------------------------------------------------------------------------------------


def test_cold_stop_end_to_end(smol):
    cfg = SoftThinkingConfig(max_tokens=12, cold_stop_entropy=100.0, cold_stop_patience=3, system=None)
    events = list(run_soft_thinking(smol, ADD, cfg))
    think = [e for e in events if isinstance(e, Token) and e.phase == "think"]
    assert len(think) == 3 and all(t.mode == "soft" for t in think)
    cs = _one(events, ColdStop)
    assert (cs.step, cs.threshold, cs.patience) == (3, 100.0, 3)
    assert _one(events, PhaseChange).reason == "cold_stop"
    i_cs, i_pc = events.index(cs), events.index(_one(events, PhaseChange))
    assert events.index(think[-1]) < i_cs < i_pc
    answer = [e for e in events if isinstance(e, Token) and e.phase == "answer"]
    # the forced marker follows the thinking text with the separator that text needs
    forced = forced_end_tokens(smol.model, ReasoningFormat(None, "Final answer:"), "".join(t.text for t in think))
    assert [t.token_id for t in answer[:len(forced)]] == forced
    assert smol.model.detokenize(forced).endswith("Final answer:")
    assert all(t.mode == "discrete" for t in answer)
    s = events[-1]
    assert s.extra["cold_stop"] is True and s.extra["end_reason"] == "cold_stop"
    assert s.extra["thinking_tokens"] == 3 and "Final answer:" in s.text


def test_cold_stop_on_a_native_format_inserts_the_think_end_token(smol):
    fmt = ReasoningFormat(think_end_token=1000, think_end_text="</think>")
    cfg = SoftThinkingConfig(max_tokens=5, cold_stop_entropy=100.0, cold_stop_patience=2, system=None)
    events = list(run_soft_thinking(smol, ADD, cfg, fmt=fmt))
    # </think> closes the thinking span (a discrete think-phase token), then the answer starts
    think = [e for e in events if isinstance(e, Token) and e.phase == "think"]
    assert [t.token_id for t in think[-1:]] == [1000] and think[-1].mode == "discrete"
    assert 1000 not in _ids(events, "answer")
    assert events.index(think[-1]) < events.index(_one(events, PhaseChange))


def test_think_budget_ends_thinking_after_exactly_n_steps(smol):
    cfg = SoftThinkingConfig(max_tokens=12, think_budget=5, system=None)
    events = list(run_soft_thinking(smol, ADD, cfg))
    assert len(_ids(events, "think")) == 5
    assert _one(events, PhaseChange).reason == "budget"
    assert not [e for e in events if isinstance(e, ColdStop)]
    s = events[-1]
    assert s.extra["end_reason"] == "budget" and not s.extra["cold_stop"]
    assert s.generated_tokens <= 12


def test_a_forced_end_of_thinking_never_runs_past_max_tokens(smol):
    # Cold Stop fires at step 3 whatever the model writes (every entropy is below 100 nats); the
    # forced marker then has no room left. It went in whole, past max_tokens (a request for 24
    # tokens came back with 27); with room it still goes in.
    marker = len(forced_end_tokens(smol.model, ReasoningFormat(None, "Final answer:"), "x"))
    cfg = SoftThinkingConfig(max_tokens=3 + marker - 1, cold_stop_entropy=100.0, cold_stop_patience=3,
                             system=None)
    s = list(run_soft_thinking(smol, ADD, cfg))[-1]
    assert s.extra["end_reason"] == "cold_stop" and s.finish_reason == "length"
    assert s.generated_tokens <= cfg.max_tokens and "Final answer:" not in s.text
    roomy = replace(cfg, max_tokens=3 + marker + 1)
    s = list(run_soft_thinking(smol, ADD, roomy))[-1]
    assert "Final answer:" in s.text and s.generated_tokens <= roomy.max_tokens
    # a native model's one-token budget: </think> is forced after the first step, and there is
    # no room for it
    fmt = ReasoningFormat(think_end_token=1000, think_end_text="</think>")
    events = list(run_soft_thinking(smol, ADD, SoftThinkingConfig(max_tokens=1, system=None), fmt=fmt))
    assert events[-1].generated_tokens == 1 and 1000 not in _ids(events, "think")


# ---------------------------------------------------------------------------------------------
# noise options: seeded, reproducible, different across seeds
# ---------------------------------------------------------------------------------------------


def _trajectory(events):
    return [(t.token_id, tuple(round(w, 6) for _, w in t.top))
            for t in events if isinstance(t, Token) and t.phase == "think"]


@pytest.mark.parametrize("opts", [dict(noise="gumbel"), dict(noise="dirichlet"), dict(mix="moi")])
def test_noise_options_are_seeded(smol, opts):
    def run(seed):
        cfg = SoftThinkingConfig(max_tokens=8, think_budget=6, seed=seed, system=None, **opts)
        return _trajectory(run_soft_thinking(smol, Q, cfg))

    plain = _trajectory(run_soft_thinking(smol, Q, SoftThinkingConfig(max_tokens=8, think_budget=6, system=None)))
    a, b = run(1), run(1)
    assert a == b
    assert a != plain
    # a peaked distribution can give two seeds the same few steps; some seed must differ
    assert any(run(seed) != a for seed in range(2, 6))


def test_moi_trace_is_the_sampled_token_and_weights_sum_to_one(smol, monkeypatch):
    """Mixture of Inputs: each step's trace is the token moi_weights sampled (not the concept's
    top-1), its prob is that token's input weight, and the row fed is sum_i post_i E[id_i]."""
    import latentlocal.methods.soft_thinking as st

    drawn = []
    real = st.moi_weights

    def spy(w, beta, top_k, rng):
        out, j = real(w, beta, top_k, rng)
        drawn.append((w.copy(), out.copy(), j))
        return out, j

    monkeypatch.setattr(st, "moi_weights", spy)
    # the filtered form mixes the kept candidates, the distribution this test inspects
    cfg = SoftThinkingConfig(max_tokens=12, think_budget=10, mix="moi", moi_prior="filtered", temperature=1.0,
                             seed=3, system=None)
    prompt = smol.model.tokenize(build_prompt(smol.model, Q, None))
    calls = _Calls(monkeypatch, smol)
    events = list(run_soft_thinking(smol, Q, cfg, prompt=prompt))
    steps = _steps(calls.take(prompt))
    think = [e for e in events if isinstance(e, Token) and e.phase == "think"]
    assert len(think) == len(drawn) == 10
    table = smol.model.embeddings
    for i, (t, (w_in, out, j)) in enumerate(zip(think, drawn)):
        logits, fed = steps[i]
        ids, w, _ = ConceptFilter(cfg.temperature, cfg.top_k, cfg.top_p, cfg.min_p, cfg.moi_top_k)(logits)
        np.testing.assert_allclose(w_in, w)  # MoI mixes the filter chain's candidates
        assert t.token_id == ids[j] and t.prob == pytest.approx(out[j])
        assert out.sum() == pytest.approx(1.0)
        assert [x for _, x in t.top] == pytest.approx(sorted(out, reverse=True)[:cfg.top_events])
        if len(ids) == 1:
            assert fed == ("tokens", [int(ids[0])])
        else:
            want = _mix_reference(table, ids, out)
            np.testing.assert_allclose(fed[1][0], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    # the check has teeth: some step sampled a token other than the concept's top-1
    assert any(j != 0 for _, _, j in drawn)
    assert events[-1].extra["mix"] == "moi"


# ---------------------------------------------------------------------------------------------
# options and the command line
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, flag",
    [
        ("temperature", 0.0, "--temperature"),
        ("max_topk", 0, "--max-topk"),
        ("top_p", 1.5, "--top-p"),
        ("min_p", -0.1, "--min-p"),
        ("cold_stop_entropy", -1.0, "--cold-stop-entropy"),
        ("cold_stop_patience", -3, "--cold-stop-patience"),
        ("noise", "pink", "--noise"),
        ("gumbel_tau", 0.0, "--gumbel-tau"),
        ("dirichlet_alpha", -2.0, "--dirichlet-alpha"),
        ("mix", "blend", "--mix"),
        ("think_budget", -1, "--think-budget"),
        ("answer_temperature", -0.5, "--answer-temperature"),
        ("max_tokens", 0, "--max-tokens"),
    ],
)
def test_bad_options_are_clear_errors(field, value, flag):
    with pytest.raises(LatentLocalError, match=flag):
        SoftThinkingConfig(**{field: value})


def test_registry_builds_the_method_from_flags():
    assert canonical("st") == canonical("Soft-Thinking") == "soft-thinking"
    with pytest.raises(LatentLocalError, match="do not combine"):
        make_runner("st", argparse.Namespace(noise="gumbel", mix="moi"))
    with pytest.raises(LatentLocalError, match="--max-topk"):
        make_runner("soft-thinking", argparse.Namespace(max_topk=0))
    from latentlocal.methods.registry import config_from_options

    cfg = config_from_options("soft-thinking", {"seed": 0})
    assert (cfg.temperature, cfg.top_p, cfg.top_k, cfg.min_p, cfg.max_topk) == (0.6, 0.95, 30, 0.001, 10)
    assert (cfg.cold_stop_entropy, cfg.cold_stop_patience, cfg.noise, cfg.mix) == (0.01, 256, "none", "concept")
    assert cfg.answer_sampling.greedy


def test_cli_json_run(capsys):
    from latentlocal.cli import main

    argv = ["run", "What is 2+3?", "--method", "soft-thinking", "--max-tokens", "40", "--json",
            "--threads", "2", "--n-ctx", "512", "--parallel", "1", "--think-budget", "30"]
    assert main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    summary = lines[-1]
    assert summary["type"] == "summary" and summary["method"] == "soft-thinking"
    assert {"thinking_tokens", "answer_tokens", "cold_stop", "end_reason", "time_to_first_step_s"} <= summary.keys()
    tokens = [e for e in lines if e["type"] == "token"]
    assert summary["generated_tokens"] == len(tokens) == summary["thinking_tokens"] + summary["answer_tokens"]
    assert summary["text"] == "".join(t["text"] for t in tokens)
    think = [t for t in tokens if t["phase"] == "think"]
    assert think and all(t["mode"] == "soft" and len(t["top"]) >= 1 for t in think)
    assert summary["thinking_tokens"] <= 30
    assert [e for e in lines if e["type"] == "phase_change"]


def test_summary_is_a_summary(smol):
    """The Summary agrees with the events it closes: counts per phase, text, answer, reasons."""
    cfg = SoftThinkingConfig(max_tokens=12, think_budget=4, system=None)
    events = list(run_soft_thinking(smol, ADD, cfg))
    s = events[-1]
    assert isinstance(s, Summary) and s.method == "soft-thinking"
    assert not any(isinstance(e, Summary) for e in events[:-1])
    tokens = [e for e in events if isinstance(e, Token)]
    think = [t for t in tokens if t.phase == "think"]
    answer = [t for t in tokens if t.phase == "answer"]
    assert tokens == think + answer  # thinking first, then the answer
    assert s.generated_tokens == len(tokens) == s.extra["thinking_tokens"] + s.extra["answer_tokens"]
    assert s.extra["thinking_tokens"] == len(think) == 4 and s.extra["answer_tokens"] == len(answer)
    assert s.text == "".join(t.text for t in tokens) and "Final answer:" in s.text
    assert s.answer == extract_answer(s.text)
    assert s.extra["end_reason"] == "budget" and s.extra["cold_stop"] is False
    assert (s.extra["mix"], s.extra["noise"]) == ("concept", "none")
    prompt = smol.model.tokenize(build_prompt(smol.model, ADD, None))
    assert s.extra["prompt_tokens"] == len(prompt)
    assert 0 < s.extra["time_to_first_step_s"] <= s.elapsed_s
    forced = forced_end_tokens(smol.model, ReasoningFormat(None, "Final answer:"), "".join(t.text for t in think))
    # the forced marker is inserted whole, so max_tokens may be passed by at most its length
    assert s.generated_tokens <= cfg.max_tokens + len(forced)
    if s.finish_reason == "eos":
        assert smol.model.is_eog(answer[-1].token_id)
    else:
        assert s.finish_reason in ("answer", "length")

