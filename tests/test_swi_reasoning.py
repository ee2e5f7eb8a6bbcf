"""SwiReasoning: the switching rule and the switch count control on synthetic entropy sequences,
the inputs it feeds in each mode, the explicit-only path against chain of thought, seeding, the
thinking-model rules, and the registry / CLI / form entries.

Nothing depends on a particular continuation: runs are compared with runs in the same process,
and where a switch must happen at a known position, the entropy the method sees is scripted (the
tokens, logits and rows stay the model's).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

import numpy as np
import pytest

from latentlocal.engine import Engine, Model
from latentlocal.errors import LatentLocalError
from latentlocal.events import PhaseChange, Summary, Token
from latentlocal.markers import MarkerWatch
from latentlocal.methods import swi_reasoning as swir
from latentlocal.methods.cot import CotConfig, run_cot
from latentlocal.methods.registry import canonical, config_from_options, make_runner, method_names
from latentlocal.methods.soft_thinking import forced_end_tokens
from latentlocal.methods.swi_reasoning import (
    SwiReasoningConfig,
    SwitchController,
    math_token_ids,
    run_swi_reasoning,
)
from latentlocal.prompts import build_prompt, reasoning_format
from latentlocal.sampling import SamplingConfig, entropy, softmax
from thinkmodel import think_model_path
from spies import EngineSpy

Q = "Tom has 3 apples and buys 5 more. How many apples does he have?"
END = 8  # </think> in the think-token fixture
START = 7  # <think>


def _tokens(events):
    return [e for e in events if isinstance(e, Token)]


def _ids(events):
    return [t.token_id for t in _tokens(events)]


def _replay(entropies, **kw):
    """(mode per position as "L"/"E", steps) of a controller fed ``entropies``."""
    c = SwitchController(**kw)
    steps = [c.observe(h) for h in entropies]
    return "".join("L" if s.latent else "E" for s in steps), steps, c


# ---------------------------------------------------------------------------------------------
# the switching rule as a pure function (gu:318-330)
# ---------------------------------------------------------------------------------------------


def test_latent_to_explicit_is_immediate_when_entropy_falls_below_the_reference():
    # the first entropy is the reference; the run starts latent
    modes, steps, c = _replay([1.0, 1.5, 1.2, 1.0, 0.99, 0.5], window=3)
    assert modes == "LLLLEE"
    assert [s.to_explicit for s in steps] == [False, False, False, False, True, False]
    # equal to the reference is not below it; a falling trend above it is not a switch either:
    # the reference is the entropy at the last switch, not the previous position's
    assert c.switches == 1 and c.ref == 0.99


def test_the_reference_moves_only_at_switches():
    # a per-position trend rule (switch when H falls from the previous position) would switch at
    # the second position (2.0 -> 1.8); the block's reference 1.5 is not crossed until 1.4
    modes, steps, _ = _replay([1.5, 2.0, 1.8, 1.6, 1.4], window=0)
    assert modes == "LLLLE"


def test_explicit_to_latent_waits_for_the_window():
    # switch to explicit at position 1 (ref 0.5); with window 3 the earliest switch back is at
    # position 4 (3 explicit positions after the switch), and only when H rises above 0.5
    h = [1.0, 0.5, 9.0, 9.0, 9.0, 9.0]
    modes, steps, c = _replay(h, window=3)
    assert modes == "LEEELL"
    assert [s.to_latent for s in steps] == [False, False, False, False, True, False]
    assert c.switches == 1 and c.switches_to_latent == 1 and c.ref == 9.0
    # with the window met but H not above the reference, no switch
    modes, *_ = _replay([1.0, 0.5, 0.2, 0.5, 0.5, 0.4], window=1)
    assert modes == "LEEEEE"
    # window 512 (the default): never back within a short run
    modes, *_ = _replay([1.0, 0.5] + [9.0] * 300)
    assert modes == "LE" + "E" * 300


def test_alternating_blocks_and_the_switch_counter():
    h = [2.0, 1.0, 3.0, 3.0, 2.5, 4.0, 4.0, 1.0]
    modes, steps, c = _replay(h, window=2)
    # 1: below 2.0 -> E (ref 1.0); 2: stay 1 < 2; 3: window met, 3.0 > 1.0 -> L (ref 3.0); 4: 2.5 < 3.0 -> E;
    # 5: stay 1 < 2; 6: stay 2, 4.0 > 2.5 -> L (ref 4.0); 7: 1.0 < 4.0 -> E
    assert modes == "LEELEELE"
    assert c.switches == 3 and c.switches_to_latent == 2


def test_a_lock_stops_switches_back_to_latent():
    c = SwitchController(window=1)
    c.observe(1.0)
    assert c.observe(0.5).to_explicit
    c.lock()
    assert not any(c.observe(9.0).to_latent for _ in range(20))
    # a sampled end-of-thinking token locks too (gu:303), even when an injection replaces it
    c = SwitchController(window=1)
    c.queue = [42]
    assert c.choose(5, ends_thinking=True) == (42, True) and c.locked
    assert c.choose(6) == (6, False)


def test_explicit_only_never_switches():
    modes, steps, c = _replay([0.1, 9.0, 0.0, 9.0] * 10, window=0, allow_latent=False)
    assert modes == "E" * 40 and c.switches == c.switches_to_latent == 0


# ---------------------------------------------------------------------------------------------
# switch count control (gu:353-370)
# ---------------------------------------------------------------------------------------------

# three latent -> explicit switches at positions 1, 4 and 7 with window 2
THREE = [2.0, 1.0, 3.0, 3.0, 2.0, 5.0, 5.0, 1.0, 1.0, 1.0, 1.0, 1.0]


def _drive(entropies, **kw):
    """Run a controller the way the method does: choose (with the sampled token 1000 + position),
    then observe. Returns (recorded tokens, injected flags, steps, controller)."""
    c = SwitchController(convergence=[101], termination=[201, 202], **kw)
    toks, inj, steps = [], [], []
    for i, h in enumerate(entropies):
        tok, was = c.choose(1000 + i)
        toks.append(tok)
        inj.append(was)
        s = c.observe(h)
        steps.append(s)
        if s.done:
            break
    return toks, inj, steps, c


def test_cap_injects_convergence_then_termination_and_ends_the_run():
    toks, inj, steps, c = _drive(THREE, window=2, max_switch_count=1, termination_max_tokens=4)
    assert [i for i, s in enumerate(steps) if s.to_explicit] == [1, 4, 7]
    # switches 1 and 2 lie in [C, 2C] = [1, 2]: convergence words at the next position
    assert [s.inject for s in steps[:8]] == [None, "convergence", None, None, "convergence", None, None,
                                             "termination"]
    assert toks[2] == 101 and inj[2] and toks[5] == 101 and inj[5]
    # switch 3 > 2C: termination words, and the run ends termination_max_tokens (4) positions
    # after that switch, the switch's own position included
    assert toks[8:10] == [201, 202] and inj[8:10] == [True, True]
    assert steps[-1].done and len(steps) == 7 + 4
    assert sum(inj) == 4 and c.injections == 3


def test_cap_zero_terminates_at_the_first_switch():
    # the code accepts 0 (run.py:583): 0 <= switches <= 0 never holds after a switch, so the first
    # latent -> explicit switch injects the termination words
    toks, inj, steps, c = _drive(THREE, window=2, max_switch_count=0, termination_max_tokens=3)
    assert steps[1].inject == "termination" and toks[2:4] == [201, 202]
    assert steps[-1].done and len(steps) == 1 + 3


def test_no_cap_never_injects():
    toks, inj, steps, c = _drive(THREE * 5, window=2)
    assert not any(inj) and not any(s.done for s in steps) and c.switches > 3


# ---------------------------------------------------------------------------------------------
# on the model: scripted entropies, real logits, tokens and rows
# ---------------------------------------------------------------------------------------------


class _Calls(EngineSpy):
    """The logits a run reads and the tokens and rows it feeds."""

    def steps(self) -> list[tuple[np.ndarray, tuple[str, object] | None]]:
        """(logits read, what was fed right after, or None) per position."""
        out = []
        for i, (kind, x) in enumerate(self.log):
            if kind == "logits":
                nxt = self.log[i + 1] if i + 1 < len(self.log) and self.log[i + 1][0] != "logits" else None
                out.append((x, nxt))
        return out


def _script(monkeypatch, entropies):
    """Make the method see ``entropies`` (then the last one) instead of the model's."""
    real = swir.ConceptFilter
    seen: list[float] = []

    class Scripted(real):
        def __call__(self, logits):
            ids, w, h = super().__call__(logits)
            seen.append(h)
            i = len(seen) - 1
            return ids, w, float(entropies[min(i, len(entropies) - 1)])

    monkeypatch.setattr(swir, "ConceptFilter", Scripted)
    return seen


def _reference_mix(model, logits, rows=1024, mass=0.9999):
    """sum_v p[v] E[v] over the most probable tokens, as the module docstring states it."""
    p = softmax(logits)
    order = np.argsort(-p, kind="stable")[:rows]
    w = p[order]
    keep = int(np.searchsorted(np.cumsum(w) / w.sum(), mass, side="left")) + 1
    ids, w = order[:keep], w[:keep] / w[:keep].sum()
    return w.astype(np.float32) @ model.embeddings.rows(ids)


def _close(a, b, tol=2e-5):
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    assert np.abs(a - b).max() <= tol * max(1.0, np.abs(b).max()), np.abs(a - b).max()


def test_latent_positions_feed_the_soft_embedding_and_explicit_ones_the_token(smol, monkeypatch):
    """Scripted: latent for positions 0-2, a switch to explicit at 3 (no </think> on SmolLM2, so
    the plain soft embedding is fed there), tokens after. Rows checked against a numpy reference;
    the events' entropy would be the model's full-vocabulary one."""
    model = smol.model
    monkeypatch.setattr(model, "is_eog", lambda t: False)  # no early end: the path is the test's
    seen = _script(monkeypatch, [2.0, 3.0, 2.5, 1.0, 1.0])
    calls = _Calls(monkeypatch, smol)
    cfg = SwiReasoningConfig(max_tokens=12, math_explicit=False, onehot_tokens=False, seed=1,
                             stop_after_answer=False)
    events = list(run_swi_reasoning(smol, Q, cfg))
    toks = _tokens(events)
    s = events[-1]
    assert [t.mode for t in toks[:3]] == ["soft"] * 3 and all(t.mode == "discrete" for t in toks[3:])
    assert s.extra["switch_steps"] == [[3, "explicit"]] and s.extra["latent_tokens"] == 3
    steps = calls.steps()
    prompt = model.tokenize(build_prompt(model, Q))
    assert calls.log[0] == ("tokens", prompt)
    lb = model.find_token("\\n") if model.find_token("\\n") is not None else model.find_token("\n")
    for i, (lg, fed) in enumerate(steps[: len(toks)]):
        # the real entropy of that position: full vocabulary, temperature 1
        assert abs(seen[i] - entropy(softmax(lg))) < 1e-4
        if i == len(toks) - 1 and s.finish_reason == "length":
            assert fed is None
            continue
        ref = _reference_mix(model, lg)
        if i == 0:
            ref = 0.9 * ref + 0.1 * model.embeddings.row(lb)
        if i <= 3:
            assert fed[0] == "rows", (i, fed)
            _close(fed[1], ref)
        else:
            assert fed == ("tokens", [toks[i].token_id]), i
    # the visible trace is the sampled token in both modes
    assert s.text == "".join(t.text for t in toks)


def test_math_tokens_are_fed_as_tokens_in_latent_mode(smol, monkeypatch):
    """gu:333-335: a digit, letter or operator sampled in latent mode goes in as its token; the
    mode stays latent. Scripted: latent all along; every sampled token counts as math here."""
    model = smol.model
    _script(monkeypatch, [1.0, 2.0])
    every = frozenset(range(model.n_vocab))
    monkeypatch.setattr(swir, "math_token_ids", lambda m: every)
    calls = _Calls(monkeypatch, smol)
    cfg = SwiReasoningConfig(max_tokens=8, seed=2, stop_after_answer=False)
    events = list(run_swi_reasoning(smol, Q, cfg))
    toks = _tokens(events)
    assert all(t.mode == "discrete" for t in toks) and events[-1].extra["switch_steps"] == []
    fed = [x for x in calls.log if x[0] != "logits"][1:]
    assert all(kind == "tokens" for kind, _ in fed)
    # and the real list holds the digits and single letters, as this tokenizer splits them
    ids = math_token_ids(model)
    for sym in ("7", "x", "+", "="):
        assert set(model.tokenize(sym, add_special=False, parse_special=False)) <= ids


def test_explicit_only_is_chain_of_thought_token_for_token(smol):
    """The code's generate_cot with the same settings: greedy at temperature 0 (cot_greedy), and
    with the same seed the same samples as run_cot at the paper's T 0.6 / top-k 20 / top-p 0.95."""
    prompt = smol.model.tokenize(build_prompt(smol.model, Q))
    cot = list(run_cot(smol, Q, CotConfig(max_tokens=40), prompt=prompt))
    ex = list(run_swi_reasoning(smol, Q, SwiReasoningConfig(max_tokens=40, temperature=0, explicit_only=True),
                                prompt=prompt))
    assert _ids(ex) == _ids(cot) and ex[-1].text == cot[-1].text
    assert ex[-1].finish_reason == cot[-1].finish_reason
    assert all(t.mode == "discrete" for t in _tokens(ex)) and ex[-1].extra["latent_tokens"] == 0
    for seed in (3, 4):
        sampled = SamplingConfig(temperature=0.6, top_k=20, top_p=0.95, min_p=0.0)
        cot = list(run_cot(smol, Q, CotConfig(max_tokens=40, **asdict(sampled), seed=seed), prompt=prompt))
        ex = list(run_swi_reasoning(smol, Q, SwiReasoningConfig(max_tokens=40, explicit_only=True, seed=seed),
                                    prompt=prompt))
        assert _ids(ex) == _ids(cot), seed


def test_modes_follow_the_controller_on_real_entropies(smol):
    """Unscripted: replaying the events' own entropies through the rule gives the modes the run
    reported (window 3, so blocks alternate within 40 positions on most builds)."""
    model = smol.model
    cfg = SwiReasoningConfig(max_tokens=40, window=3, seed=5, stop_after_answer=False)
    events = list(run_swi_reasoning(smol, Q, cfg))
    toks = _tokens(events)
    c = SwitchController(window=3)
    math = math_token_ids(model)
    watch = MarkerWatch("Final answer:")  # the text-marker end of thinking locks explicit mode
    switches = []
    for i, t in enumerate(toks):
        c.choose(t.token_id)
        if watch.push(t.text):
            c.lock()
        s = c.observe(t.entropy)
        if s.to_explicit or s.to_latent:
            switches.append([i, "explicit" if s.to_explicit else "latent"])
        latent = s.latent and not c.locked and t.token_id not in math
        assert t.mode == ("soft" if latent else "discrete"), i
        if t.mode == "soft":  # the mixture's largest weights, in order
            weights = [w for _, w in t.top]
            assert weights and weights == sorted(weights, reverse=True) and sum(weights) <= 1 + 1e-6
    assert events[-1].extra["switch_steps"] == switches
    assert events[-1].extra["switches_to_explicit"] == sum(d == "explicit" for _, d in switches)


def test_seeded(smol):
    def run(seed):
        cfg = SwiReasoningConfig(max_tokens=16, window=2, seed=seed, stop_after_answer=False)
        return [(t.token_id, t.mode) for t in _tokens(run_swi_reasoning(smol, Q, cfg))]

    a = run(1)
    assert a == run(1)
    # sampling at T 0.6 can give two seeds the same few tokens; some seed must differ
    assert any(run(seed) != a for seed in range(2, 7))


def test_cap_zero_injects_the_answer_marker_and_stops_after_the_budget(smol, monkeypatch):
    """On a model without </think> the termination words are the answer marker; the run ends
    termination_max_tokens positions after the switch (scripted at position 2)."""
    model = smol.model
    monkeypatch.setattr(model, "is_eog", lambda t: False)
    _script(monkeypatch, [2.0, 3.0, 1.0, 1.0])
    cfg = SwiReasoningConfig(max_tokens=40, max_switch_count=0, termination_max_tokens=8, seed=1,
                             stop_after_answer=False)
    events = list(run_swi_reasoning(smol, Q, cfg))
    toks = _tokens(events)
    s = events[-1]
    text_before = "".join(t.text for t in toks[:3])
    marker = forced_end_tokens(model, reasoning_format(model), text_before)
    assert [t.token_id for t in toks[3:3 + len(marker)]] == marker
    assert s.extra["end_reason"] == "switch_cap" and s.extra["switch_cap_injections"] == 1
    assert s.extra["thinking_tokens"] == 3 + len(marker)
    change = [e for e in events if isinstance(e, PhaseChange)]
    assert len(change) == 1 and change[0].reason == "switch_cap"
    assert "Final answer:" in s.text
    assert s.finish_reason == "switch_cap" and len(toks) == 2 + 8


# ---------------------------------------------------------------------------------------------
# a model with a native </think>
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def think(smol_path):
    engine = Engine(Model(think_model_path(smol_path)), n_ctx=2048, n_seq_max=1, n_threads=1)
    yield engine
    engine.close()


@pytest.fixture(autouse=True)
def _parity_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _split(toks):
    phases = [t.phase for t in toks]
    n = phases.count("think")
    assert phases == ["think"] * n + ["answer"] * (len(toks) - n), "phases interleave"
    return toks[:n], toks[n:]


def test_thinking_budget_forces_think_end_as_a_token(think, monkeypatch):
    """--max-tokens 30, --answer-reserve 10: </think> at position 19 at the latest, fed as a token,
    explicit from then on; the answer is read after it."""
    calls = _Calls(monkeypatch, think)
    cfg = SwiReasoningConfig(max_tokens=30, answer_reserve=10, window=2, seed=1, stop_after_answer=False)
    events = list(run_swi_reasoning(think, Q, cfg))
    toks = _tokens(events)
    s = events[-1]
    thinking, answer = _split(toks)
    assert thinking[-1].token_id == END and _ids(events).count(END) == 1 and answer
    assert s.extra["think_end"] in ("budget", "eos") and len(thinking) <= 20
    if s.extra["think_end"] == "budget":
        assert len(thinking) == 20
    assert s.extra["thinking_tokens"] == len(thinking) and s.extra["answer_tokens"] == len(answer)
    assert thinking[-1].mode == "discrete" and all(t.mode == "discrete" for t in answer)
    fed = [x for x in calls.log if x[0] != "logits"][1:]
    assert fed[len(thinking) - 1] == ("tokens", [END])
    assert s.generated_tokens == len(toks) <= 30
    assert [e.reason for e in events if isinstance(e, PhaseChange)] == [s.extra["think_end"]]


def test_blends_with_think_tokens_and_convergence_words(think, monkeypatch):
    """Scripted on the think-token model, window 2, alpha 0.5, cap 1: a switch to explicit at 3
    feeds beta_t * soft + (1 - beta_t) * E[</think>] and queues </think> for position 4 (the
    convergence words, which close thinking without locking); a switch to latent at 6 feeds
    alpha_t * soft + (1 - alpha_t) * E[<think>]."""
    model = think.model
    _script(monkeypatch, [2.0, 3.0, 3.0, 1.0, 1.0, 1.0, 5.0, 5.0, 5.0])
    calls = _Calls(monkeypatch, think)
    n = 20
    cfg = SwiReasoningConfig(max_tokens=n, window=2, alpha=0.5, max_switch_count=1, math_explicit=False,
                             onehot_tokens=False, seed=1, stop_after_answer=False)
    events = list(run_swi_reasoning(think, Q, cfg))
    toks = _tokens(events)
    s = events[-1]
    assert s.extra["switch_steps"][:2] == [[3, "explicit"], [6, "latent"]]
    # run.py:458: "</think>" for Qwen models, "\n\n</think>\n\n" for the others (this one is llama)
    conv = model.tokenize("\n\n</think>\n\n", add_special=False, parse_special=True)
    assert model.arch == "llama" and END in conv
    j = conv.index(END)
    assert [t.token_id for t in toks[4:4 + len(conv)]] == conv
    assert toks[4 + j].phase == "think" and toks[5 + j].phase == "answer"
    assert s.extra["think_end"] == "switch_cap" and s.extra["thinking_tokens"] == 5 + j
    # latent again after the injected </think>: injected words do not lock explicit mode
    assert 6 > 4 + j and toks[6].mode == "soft" and toks[6].phase == "answer"
    steps = calls.steps()
    E = model.embeddings
    beta = 0.7 + 0.3 * 3 / n
    _close(steps[3][1][1], beta * _reference_mix(model, steps[3][0]) + (1 - beta) * E.row(END))
    alpha = 0.5 + 0.5 * 6 / n
    _close(steps[6][1][1], alpha * _reference_mix(model, steps[6][0]) + (1 - alpha) * E.row(START))
    assert steps[4][1] == ("tokens", [conv[0]])


@pytest.mark.parametrize("stops", [False, True])
def test_a_closed_thinking_span_keeps_or_ends_the_switch_control(think, monkeypatch, stops):
    """</think> sampled at position 2 while latent (scripted entropies keep the run latent), a
    low entropy at 5, cap 1. As in the code (gu:303-370) the lock only bars switches back to
    latent: 5 is counted as a switch to explicit and the convergence words, </think> included,
    are injected into the answer. ``closed_stops_switching`` ends the control at the lock:
    nothing counted, nothing injected, one </think>."""
    model = think.model
    monkeypatch.setattr(model, "is_eog", lambda t: False)
    _script(monkeypatch, [2.0, 3.0, 3.0, 3.0, 3.0, 1.0, 1.0, 1.0, 1.0])
    real, calls = swir.sample_token, []

    def sample(logits, cfg, rng):
        calls.append(1)
        tok, p = real(logits, cfg, rng)
        return (END, p) if len(calls) == 3 else (tok, p)

    monkeypatch.setattr(swir, "sample_token", sample)
    cfg = SwiReasoningConfig(max_tokens=14, window=2, max_switch_count=1, math_explicit=False, seed=1,
                             stop_after_answer=False, closed_stops_switching=stops)
    events = list(run_swi_reasoning(think, Q, cfg))
    ids, s = [t.token_id for t in _tokens(events)], events[-1]
    assert ids[2] == END and s.extra["think_end"] == "marker" and s.extra["thinking_tokens"] == 3
    if stops:
        assert s.extra["switch_steps"] == [] and s.extra["switch_cap_injections"] == 0
        assert ids.count(END) == 1
    else:
        assert s.extra["switch_steps"] == [[5, "explicit"]] and s.extra["switch_cap_injections"] == 1
        conv = model.tokenize("\n\n</think>\n\n", add_special=False, parse_special=True)
        assert ids[6:6 + len(conv)] == conv and ids.count(END) == 2


# ---------------------------------------------------------------------------------------------
# options, registry, CLI, forms
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, flag",
    [
        ("temperature", -1.0, "--temperature"),
        ("top_p", 1.5, "--top-p"),  # 0 is valid: the top token only
        ("alpha", 1.5, "--swir-alpha"),
        ("beta", -0.1, "--swir-beta"),
        ("window", -1, "--switch-window"),
        ("max_switch_count", -1, "--max-switch-count"),
        ("termination_max_tokens", 0, "--termination-max-tokens"),
        ("latent_rows", 0, "--latent-rows"),
        ("latent_mass", 0.0, "--latent-mass"),
        ("max_tokens", 0, "--max-tokens"),
    ],
)
def test_bad_options_are_clear_errors(field, value, flag):
    with pytest.raises(LatentLocalError, match=flag):
        SwiReasoningConfig(**{field: value})


def test_registry_defaults_are_the_codes():
    assert "swi-reasoning" in method_names() and canonical("swir") == canonical("SwiR") == "swi-reasoning"
    cfg = config_from_options("swi-reasoning", {"seed": 0})
    assert (cfg.temperature, cfg.top_k, cfg.top_p, cfg.min_p) == (0.6, 20, 0.95, 0.0)
    assert (cfg.alpha, cfg.beta, cfg.window, cfg.max_switch_count, cfg.termination_max_tokens) == \
        (1.0, 0.7, 512, None, 32)
    assert not cfg.explicit_only
    with pytest.raises(LatentLocalError, match="--switch-window"):
        make_runner("swi-reasoning", argparse.Namespace(switch_window=-2))
    from latentlocal.eval.runner import parse_method_spec
    from tui import forms

    label, method, options = parse_method_spec("swi-reasoning:max_switch_count=2;switch_window=8",
                                               argparse.Namespace())
    cfg = config_from_options(method, options)
    assert method == "swi-reasoning" and (cfg.max_switch_count, cfg.window) == (2, 8)
    fields = {f.name: f for f in forms.fields_for("swi-reasoning")}
    assert fields["switch_window"].default_text == "512"
    assert fields["max_switch_count"].default_text.startswith("none")
    assert fields["swir_alpha"].default_text.startswith("1.0") and fields["explicit_only"].kind == "bool"


def test_cli_json_run(capsys):
    from latentlocal.cli import main

    argv = ["run", "What is 2+3?", "--method", "swi-reasoning", "--max-tokens", "30", "--json",
            "--threads", "2", "--n-ctx", "512", "--parallel", "1", "--switch-window", "3"]
    assert main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    summary = lines[-1]
    assert summary["type"] == "summary" and summary["method"] == "swi-reasoning"
    assert {"thinking_tokens", "answer_tokens", "switches", "switches_to_explicit", "switches_to_latent",
            "latent_tokens", "switch_steps"} <= summary.keys()
    tokens = [e for e in lines if e["type"] == "token"]
    assert summary["generated_tokens"] == len(tokens) == summary["thinking_tokens"] + summary["answer_tokens"]
    assert summary["text"] == "".join(t["text"] for t in tokens)
    assert {t["mode"] for t in tokens} <= {"soft", "discrete"}
    assert summary["latent_tokens"] == sum(t["mode"] == "soft" for t in tokens)
    assert summary["switches"] == len(summary["switch_steps"])


def test_summary_counts(smol):
    s = list(run_swi_reasoning(smol, Q, SwiReasoningConfig(max_tokens=24, window=2, seed=1)))[-1]
    assert isinstance(s, Summary) and s.method == "swi-reasoning"
    assert s.generated_tokens == s.extra["thinking_tokens"] + s.extra["answer_tokens"]
    assert s.generated_tokens == s.extra["latent_tokens"] + s.extra["explicit_tokens"]
    assert s.extra["switches"] == s.extra["switches_to_explicit"] + s.extra["switches_to_latent"]
    assert s.finish_reason in ("answer", "eos", "length")
