"""Soft Thinking: concept weights, the end-of-thinking rules, Cold Stop, noise, and the embedding
path checked end to end against greedy chain of thought."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

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
from latentlocal.models import COT_SYSTEM, ReasoningFormat

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


def test_one_token_concepts_reproduce_greedy_cot_for_60_tokens(smol):
    cot = list(run_cot(smol, ADD, CotConfig(max_tokens=60)))
    soft = list(run_soft_thinking(smol, ADD, GREEDY))
    assert cot[-1].finish_reason == "length"  # greedy rambles past 60 tokens without the marker
    assert _ids(soft, "think") == _ids(cot) and len(_ids(cot)) == 60
    s = soft[-1]
    assert s.text == cot[-1].text and s.finish_reason == "length" and s.extra["end_reason"] is None
    assert all(t.mode == "soft" and t.entropy is not None for t in soft if isinstance(t, Token))


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


def test_one_token_concepts_reproduce_greedy_cot_on_gemma(gemma):
    """Gemma 3 takes embedding rows pre-scaled by sqrt(n_embd); with them the soft route holds
    token for token for the whole run checked here."""
    cfg = SoftThinkingConfig(max_tokens=20, max_topk=1, onehot_tokens=False)
    cot = list(run_cot(gemma, ADD, CotConfig(max_tokens=20)))
    soft = list(run_soft_thinking(gemma, ADD, cfg))
    assert _ids(soft, "think") == _ids(cot) and len(_ids(cot)) == 20


def test_one_candidate_concepts_fed_as_tokens_change_nothing(smol):
    """The shortcut (a concept with w = [1] is fed as its token id) gives the same run."""
    base = dict(max_tokens=16, system=None)
    fast = _trajectory(run_soft_thinking(smol, Q, SoftThinkingConfig(**base)))
    rows = _trajectory(run_soft_thinking(smol, Q, SoftThinkingConfig(onehot_tokens=False, **base)))
    assert fast == rows
    assert any(len(top) == 1 for _, top in fast) and any(len(top) > 1 for _, top in fast)


def test_eos_while_thinking_ends_thinking_and_still_answers(smol):
    cot = list(run_cot(smol, Q, CotConfig(max_tokens=60)))
    assert cot[-1].finish_reason == "eos"
    soft = list(run_soft_thinking(smol, Q, GREEDY))
    think = _ids(soft, "think")
    assert think == _ids(cot) and smol.model.is_eog(think[-1])
    assert _one(soft, PhaseChange).reason == "eos"
    answer_text = "".join(t.text for t in soft if isinstance(t, Token) and t.phase == "answer")
    assert answer_text.startswith("\n\nFinal answer:")
    s = soft[-1]
    assert s.extra["end_reason"] == "eos" and s.answer == "8" and s.finish_reason in ("eos", "answer")
    assert s.text == cot[-1].text + answer_text


def test_native_think_end_token_ends_thinking_where_it_is_top1(smol):
    """Neither bundled model has a single </think> token: declare one. Take the token greedy
    decoding emits at step k (its first occurrence) as the end-of-thinking token."""
    greedy = _ids(run_cot(smol, ADD, CotConfig(max_tokens=30)))
    k = next(i for i in range(8, 30) if greedy[i] not in greedy[:i])
    fmt = ReasoningFormat(think_end_token=greedy[k], think_end_text="</think>")
    cfg = SoftThinkingConfig(max_tokens=30, max_topk=1, onehot_tokens=False)
    soft = list(run_soft_thinking(smol, ADD, cfg, fmt=fmt))
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
    assert "".join(t.text for t in answer).startswith("\n\nFinal answer:")
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
    assert s.generated_tokens <= 12 + len(forced_end_tokens(smol.model, ReasoningFormat(None, "Final answer:"), "x"))


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


def test_moi_trace_is_the_sampled_token_and_weights_sum_to_one(smol):
    events = list(run_soft_thinking(smol, Q, SoftThinkingConfig(max_tokens=6, think_budget=6, mix="moi", seed=3, system=None)))
    for t in (e for e in events if isinstance(e, Token) and e.phase == "think"):
        weights = [w for _, w in t.top]
        assert t.prob in weights and sum(weights) <= 1.0 + 1e-9
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
    from latentlocal.methods.soft_thinking import config_from_args

    cfg = config_from_args(argparse.Namespace(seed=0))
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
    events = list(run_soft_thinking(smol, ADD, SoftThinkingConfig(max_tokens=3, system=None)))
    s = events[-1]
    assert isinstance(s, Summary) and s.method == "soft-thinking" and s.generated_tokens == 3
    assert s.extra["time_to_first_step_s"] is not None and s.extra["time_to_first_step_s"] <= s.elapsed_s
