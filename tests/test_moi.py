"""Mixture of Inputs as its reference computes it, and Dirichlet noise where the official Soft
Thinking code applies it (latentlocal/methods/soft_thinking.py, module docstring).

MoI reference: EvanZhuang/mixinputs, mixinputs/gpu_model_runner.py lines 1192-1228: the prior is
softmax over vLLM's top-20 *raw* logprobs (before temperature and top-p), H_n = H(prior) / ln 20,
input = H_n * sum_i (prior_i + beta [i = s]) / (1 + beta) e_i + (1 - H_n) e_s.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest

from latentlocal.errors import LatentLocalError
from latentlocal.events import Token
from latentlocal.methods import registry
from latentlocal.methods.soft_thinking import (
    ConceptFilter,
    SoftThinkingConfig,
    dirichlet_concept,
    moi_mixture,
    moi_raw_prior,
    moi_weights,
    run_soft_thinking,
)
from latentlocal.prompts import build_prompt
from spies import EngineSpy

Q = "Tom has 3 apples and buys 5 more. How many apples does he have?"

# A small vocabulary whose raw top-4 is p = [4, 2, 1, 1] / 8 (then two tokens the top-4 leaves
# out), so every MoI number below is exact in binary: H = 1.75 ln 2, H_n = H / ln 4 = 0.875.
LOGITS = np.log(np.array([1.0, 4.0, 0.5, 2.0, 1.0, 0.5])) + 3.0
TOP4 = [1, 3, 0, 4]        # raw top-4 by logit (0 and 4 tie at 1/8; either order is the same set)
PRIOR = {1: 0.5, 3: 0.25, 0: 0.125, 4: 0.125}
H_N = 0.875


def _as_dict(ids, w) -> dict[int, float]:
    out: dict[int, float] = {}
    for i, x in zip(ids, w):
        out[int(i)] = out.get(int(i), 0.0) + float(x)
    return out


def _approx(d: dict[int, float]):
    return pytest.approx(d, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# the weights, against numbers worked out by hand
# ---------------------------------------------------------------------------------------------


def test_raw_prior_is_the_softmax_of_the_top_n_raw_logits():
    ids, prior = moi_raw_prior(LOGITS, 4)
    assert sorted(ids.tolist()) == sorted(TOP4) and ids[0] == 1
    assert _as_dict(ids, prior) == _approx(PRIOR)
    # the same with a (positive) offset and in float32, as llama.cpp returns logits
    ids32, prior32 = moi_raw_prior((LOGITS + 40.0).astype(np.float32), 4)
    assert _as_dict(ids32, prior32) == pytest.approx(PRIOR, abs=1e-6)
    # n larger than the vocabulary: every token
    ids_all, prior_all = moi_raw_prior(LOGITS, 20)
    assert sorted(ids_all.tolist()) == list(range(6)) and prior_all.sum() == pytest.approx(1.0)


def test_mixture_weights_match_the_hand_computed_reference():
    """s = token 3 (prior 1/4), beta 1: post = (p + onehot) / 2 = [1/4, 5/8, 1/16, 1/16] over
    [1, 3, 0, 4]; input = 0.875 post + 0.125 onehot(3)."""
    ids, prior = moi_raw_prior(LOGITS, 4)
    got = _as_dict(*moi_mixture(ids, prior, 3, 1.0, 4))
    assert got == _approx({1: 0.21875, 3: 0.671875, 0: 0.0546875, 4: 0.0546875})
    assert sum(got.values()) == pytest.approx(1.0)


def test_the_entropy_comes_from_the_raw_top_n_not_the_sharpened_candidates():
    """The previous form took H_n from the temperature-sharpened, top-p-filtered candidates: here
    T 0.5 squares the odds (p = [16, 4, 1, 1, 1/4, 1/4] / 22.5) and top-p 0.85 keeps the first two,
    renormalised to [0.8, 0.2]: H_n = H / ln 4 = 0.36, not 0.875, so its weights differ from the
    reference's. A formula using the sharpened entropy fails the first assert."""
    ids, prior = moi_raw_prior(LOGITS, 4)
    want = {1: 0.21875, 3: 0.671875, 0: 0.0546875, 4: 0.0546875}
    assert _as_dict(*moi_mixture(ids, prior, 3, 1.0, 4)) == _approx(want)
    # the sharpened, filtered candidates and their (old-form) mixture, written out by hand
    z = LOGITS / 0.5
    p = np.exp(z - z.max())
    p /= p.sum()
    cids, cw, _ = ConceptFilter(0.5, 30, 0.85, 0.0, 4)(LOGITS)
    assert cids.tolist() == [1, 3]  # top-p 0.85: 16/22.5 = 0.71, then 20/22.5 = 0.89
    np.testing.assert_allclose(cw, p[[1, 3]] / p[[1, 3]].sum())
    np.testing.assert_allclose(cw, [0.8, 0.2])
    h_c = -(cw * np.log(cw)).sum() / math.log(4)
    assert abs(h_c - H_N) > 0.3
    old = _as_dict(*moi_mixture(cids, cw, 3, 1.0, 4))
    assert old == _approx({1: h_c * cw[0] / 2, 3: h_c * (cw[1] + 1) / 2 + (1 - h_c)})
    assert old != _approx(want)


@pytest.mark.parametrize("beta", [0.0, 0.5, 3.0])
def test_beta_moves_the_posterior_toward_the_sampled_token_as_the_formula_says(beta):
    """post = (p + beta onehot(s)) / (1 + beta); beta 0 mixes the prior itself, beta 3 gives s
    (3/4 + 1/16) of the posterior. Input weight of s = H_n post_s + (1 - H_n)."""
    ids, prior = moi_raw_prior(LOGITS, 4)
    got = _as_dict(*moi_mixture(ids, prior, 1, beta, 4))
    post = {i: (p + (beta if i == 1 else 0.0)) / (1.0 + beta) for i, p in PRIOR.items()}
    want = {i: H_N * x + (1.0 - H_N if i == 1 else 0.0) for i, x in post.items()}
    assert got == _approx(want)
    if beta == 3.0:  # by hand: post_s = (1/2 + 3) / 4 = 7/8; weight = 0.875 * 7/8 + 0.125
        assert got[1] == pytest.approx(0.890625, abs=1e-12)
        assert got[3] == pytest.approx(0.875 * 0.25 / 4, abs=1e-12)
    if beta == 0.0:  # no update: H_n p + (1 - H_n) onehot
        assert got[3] == pytest.approx(0.875 * 0.25, abs=1e-12)


def test_a_sampled_token_outside_the_top_n_gets_only_the_token_share():
    """As the reference's observed_mask: s outside the top-20 leaves the posterior at p / (1 + beta)
    and adds (1 - H_n) e_s, so the weights sum to H_n / (1 + beta) + 1 - H_n, not 1."""
    ids, prior = moi_raw_prior(LOGITS, 4)
    got = _as_dict(*moi_mixture(ids, prior, 5, 1.0, 4))
    want = {i: H_N * p / 2 for i, p in PRIOR.items()}
    want[5] = 1 - H_N
    assert got == _approx(want)
    assert sum(got.values()) == pytest.approx(H_N / 2 + 1 - H_N)


def test_filtered_form_keeps_the_previous_weights():
    """moi_prior="filtered": candidates w, sampled index j, H_n = H(w) / ln(top_k) clipped."""
    w = np.array([0.6, 0.25, 0.1, 0.05])
    out, j = moi_weights(w.copy(), 1.0, 20, np.random.default_rng(7))
    u = np.random.default_rng(7).random()
    assert j == int(np.searchsorted(np.cumsum(w), u * w.sum(), side="right"))
    hn = -(w * np.log(w)).sum() / math.log(20)
    onehot = np.eye(4)[j]
    np.testing.assert_allclose(out, hn * (w + onehot) / 2 + (1 - hn) * onehot)


# ---------------------------------------------------------------------------------------------
# Dirichlet noise: on the whole filtered distribution, then max_topk
# ---------------------------------------------------------------------------------------------


def test_dirichlet_is_drawn_over_the_filtered_distribution_then_max_topk_kept():
    """Official code (sampler.py 160-170): probs' = Dir(alpha * probs) over the filter chain, then
    the max_topk largest, renormalised. With 5 candidates and max_topk 2 the kept pair can hold
    a candidate outside the noiseless top 2, which noise applied after max_topk never does."""
    ids = np.array([7, 3, 9, 1, 4])
    w = np.array([0.4, 0.3, 0.15, 0.1, 0.05])
    rng = np.random.default_rng(11)
    got_ids, got_w = dirichlet_concept(ids, w, 1.0, 2, np.random.default_rng(11))
    draw = rng.dirichlet(1.0 * w)
    top = np.argsort(-draw, kind="stable")[:2]
    assert got_ids.tolist() == ids[top].tolist()
    np.testing.assert_allclose(got_w, draw[top] / draw[top].sum())
    rng = np.random.default_rng(12)
    kept = [dirichlet_concept(ids, w, 1.0, 2, rng)[0] for _ in range(400)]
    assert all(len(k) <= 2 for k in kept)
    assert any(set(k.tolist()) - {7, 3} for k in kept)
    # the old placement ("kept"): noise on the max_topk kept only, so never outside them
    rng = np.random.default_rng(12)
    old = [dirichlet_concept(ids[:2], w[:2] / w[:2].sum(), 1.0, 2, rng)[0] for _ in range(50)]
    assert all(set(k.tolist()) <= {7, 3} for k in old)


# ---------------------------------------------------------------------------------------------
# the settings
# ---------------------------------------------------------------------------------------------


def test_settings_defaults_flags_and_validation():
    cfg = SoftThinkingConfig(mix="moi")
    assert (cfg.moi_prior, cfg.moi_top_k, cfg.moi_beta, cfg.dirichlet_on) == ("raw", 20, 1.0, "filtered")
    with pytest.raises(LatentLocalError, match="--moi-prior"):
        SoftThinkingConfig(mix="moi", moi_prior="sharp")
    with pytest.raises(LatentLocalError, match="--dirichlet-on"):
        SoftThinkingConfig(noise="dirichlet", dirichlet_on="everywhere")
    parser = argparse.ArgumentParser()
    registry.add_method_flags(parser)
    args = parser.parse_args(["--mix", "moi", "--moi-prior", "filtered", "--moi-beta", "2",
                              "--noise", "none", "--dirichlet-on", "kept"])
    cfg = registry.config_from_options("soft-thinking", registry.options_from_args("soft-thinking", args))
    assert (cfg.mix, cfg.moi_prior, cfg.moi_beta, cfg.dirichlet_on) == ("moi", "filtered", 2.0, "kept")
    assert registry.config_from_options("soft-thinking", {}).moi_prior == "raw"


# ---------------------------------------------------------------------------------------------
# the bundled model: what run_soft_thinking feeds
# ---------------------------------------------------------------------------------------------


class _Spy(EngineSpy):
    """The logits each step reads and what is fed right after."""

    def steps(self, prompt, n):
        """(logits, fed) for the first ``n`` reads after the prompt's decode."""
        start = max(i for i, (k, x) in enumerate(self.log) if k == "tokens" and x == list(prompt))
        log = self.log[start + 1:]
        reads = [i for i, (k, _) in enumerate(log) if k == "logits"][:n]
        return [(log[i][1], log[i + 1]) for i in reads]


def _think(engine, monkeypatch, cfg):
    prompt = engine.model.tokenize(build_prompt(engine.model, Q, None))
    spy = _Spy(monkeypatch, engine)
    events = list(run_soft_thinking(engine, Q, cfg, prompt=prompt))
    think = [e for e in events if isinstance(e, Token) and e.phase == "think"]
    return events, think, spy.steps(prompt, len(think))


def test_moi_feeds_exactly_the_reference_mixture(smol, monkeypatch):
    """Every thinking step feeds table.mix(ids, w) with (ids, w) recomputed from that step's
    logits by the reference form (raw top-20 prior, the sampled token s = the event's token);
    s is drawn from the run's own filtered sampling distribution, and the event shows s, its
    input weight, the mixture's weights and the full-vocabulary entropy at T. Feeding the
    previous (sharpened, filtered) mixture fails here: it differs at most steps."""
    cfg = SoftThinkingConfig(max_tokens=12, think_budget=10, mix="moi", seed=3, system=None, top_events=25)
    events, think, steps = _think(smol, monkeypatch, cfg)
    assert len(think) == len(steps) == 10
    table = smol.model.embeddings
    differs_from_filtered = 0
    for t, (logits, fed) in zip(think, steps):
        s = t.token_id
        sids, _, h = ConceptFilter(cfg.temperature, cfg.top_k, cfg.top_p, cfg.min_p, 0)(logits)
        assert s in sids.tolist()  # drawn from softmax(logits / T) through top-k, top-p, min-p
        assert t.entropy == pytest.approx(h)
        ids, w = moi_mixture(*moi_raw_prior(logits, cfg.moi_top_k), s, cfg.moi_beta, cfg.moi_top_k)
        assert t.prob == pytest.approx(_as_dict(ids, w)[s])
        assert [x for _, x in t.top] == pytest.approx(sorted(w, reverse=True))
        assert fed[0] == "rows" and fed[1].shape == (1, smol.n_embd), fed
        want = table.mix(ids, w)
        np.testing.assert_allclose(fed[1][0], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
        cids, cw, _ = ConceptFilter(cfg.temperature, cfg.top_k, cfg.top_p, cfg.min_p, cfg.moi_top_k)(logits)
        if s in cids.tolist():
            old = table.mix(*moi_mixture(cids, cw, s, cfg.moi_beta, cfg.moi_top_k))
            differs_from_filtered += not np.allclose(old, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
    assert differs_from_filtered >= 5
    assert events[-1].extra["mix"] == "moi" and events[-1].extra["moi_prior"] == "raw"


def test_moi_filtered_form_feeds_the_previous_mixture(smol, monkeypatch):
    """moi_prior="filtered": the candidates are the filter chain kept to moi_top_k (20)."""
    cfg = SoftThinkingConfig(max_tokens=8, think_budget=6, mix="moi", moi_prior="filtered", seed=3,
                             system=None, top_events=25)
    events, think, steps = _think(smol, monkeypatch, cfg)
    table = smol.model.embeddings
    for t, (logits, fed) in zip(think, steps):
        cids, cw, _ = ConceptFilter(cfg.temperature, cfg.top_k, cfg.top_p, cfg.min_p, cfg.moi_top_k)(logits)
        assert t.token_id in cids.tolist()
        ids, w = moi_mixture(cids, cw, t.token_id, cfg.moi_beta, cfg.moi_top_k)
        if len(ids) == 1:
            assert fed == ("tokens", [int(ids[0])])
        else:
            want = table.mix(ids, w)
            np.testing.assert_allclose(fed[1][0], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert events[-1].extra["moi_prior"] == "filtered"


def test_dirichlet_run_feeds_noise_drawn_over_the_filtered_distribution(smol, monkeypatch):
    """noise="dirichlet": each step's concept is dirichlet_concept over the whole filter chain
    (replayed with the run's seed), at most max_topk tokens, all from the filtered support."""
    cfg = SoftThinkingConfig(max_tokens=10, think_budget=8, noise="dirichlet", max_topk=2, seed=5,
                             system=None, top_events=5)
    events, think, steps = _think(smol, monkeypatch, cfg)
    rng = np.random.default_rng(cfg.seed)
    table = smol.model.embeddings
    for t, (logits, fed) in zip(think, steps):
        fids, fw, _ = ConceptFilter(cfg.temperature, cfg.top_k, cfg.top_p, cfg.min_p, 0)(logits)
        if len(fids) == 1:
            ids, w = fids, fw  # one candidate: no noise drawn
        else:
            ids, w = dirichlet_concept(fids, fw, cfg.dirichlet_alpha, cfg.max_topk, rng)
        assert len(ids) <= cfg.max_topk and set(ids.tolist()) <= set(fids.tolist())
        assert t.token_id == int(ids[0])
        if len(ids) == 1:
            assert fed == ("tokens", [int(ids[0])])
        else:
            want = table.mix(ids, w)
            np.testing.assert_allclose(fed[1][0], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert events[-1].extra["dirichlet_on"] == "filtered"
