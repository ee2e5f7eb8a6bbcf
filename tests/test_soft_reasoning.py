"""Soft Reasoning on real models: batched candidates, reuse, rounds, the vote."""

from __future__ import annotations

import numpy as np
import pytest

from latentlocal.errors import LatentLocalError
from latentlocal.events import Round, SequenceDone, Summary, Token
from latentlocal.methods import soft_reasoning as sr
from latentlocal.methods.cot import CotConfig, prompt_tokens, run_cot

Q = "Sara has 4 boxes with 6 pens each. How many pens does she have?"


def _candidates(engine, n, sigma, seed=0, max_tokens=40):
    cfg = sr.SoftReasoningConfig(candidates=n, max_tokens=max_tokens, reuse_prefix=0)
    toks = prompt_tokens(engine, Q, cfg.system)
    engine.clear()
    engine.decode_tokens(toks, seq=0)
    z = int(np.argmax(engine.logits(-1)))
    e_z = engine.model.embeddings.row(z)
    rng = np.random.default_rng(seed)
    xs = [e_z + sigma * np.sqrt(np.mean(e_z**2)) * rng.normal(size=e_z.shape) for _ in range(n)]
    xs[0] = e_z
    return cfg, toks, [sr._Cand(i, None, x.astype(np.float32), [], []) for i, x in enumerate(xs)]


def _decode(engine, cfg, toks, cands, earlier=()):
    return [e for e in sr._decode_candidates(engine, cands, len(toks), cfg, list(earlier), None)]


def test_candidates_decoded_together_match_one_by_one(smol):
    cfg, toks, together = _candidates(smol, 4, sigma=1.0)
    _decode(smol, cfg, toks, together)
    assert len({tuple(c.tokens) for c in together}) > 1, "perturbations should change some chains"
    for c in together:
        alone = sr._Cand(0, None, c.x, [], [])
        _decode(smol, cfg, toks, [alone])
        assert alone.tokens == c.tokens
        np.testing.assert_allclose(alone.probs, c.probs, atol=1e-5)


@pytest.mark.parametrize("space", ["subspace", "around-token"])
def test_perturbation_size_is_sigma_times_the_embedding_norm(space):
    """sigma is relative to |e_z| in both spaces, so one default fits models whose embedding
    norms differ by orders of magnitude (the default was chosen by how often it moves the chain)."""
    rng = np.random.default_rng(1)
    for scale in (0.01, 30.0):
        e_z = (scale * rng.normal(size=576)).astype(np.float32)
        for sigma in (0.5, 2.0):
            cfg = sr.SoftReasoningConfig(space=space, sigma=sigma)
            sp = sr._Space(cfg, e_z, np.random.default_rng(0))
            if space == "subspace":
                xs = np.stack([sp.embed(u) for u in rng.uniform(-1.0, 1.0, size=(200, cfg.dim))])
                assert np.array_equal(sp.embed(np.zeros(cfg.dim)), e_z)
            else:
                xs = sp.random_around(200)
            ratio = np.linalg.norm(xs - e_z, axis=1).mean() / np.linalg.norm(e_z)
            assert ratio == pytest.approx(sigma, rel=0.1)


def test_the_official_space_is_u_times_an_unscaled_gaussian_matrix():
    """space=official follows Search.py: x = u A with A ~ N(0, 1) (no e_z, no sigma), the first
    round's u ~ N(0, I), the unit cube afterwards."""
    e_z = np.full(576, 0.01, np.float32)
    for sigma in (0.5, 2.0):  # sigma plays no part
        sp = sr._Space(sr.SoftReasoningConfig(space="official", sigma=sigma), e_z, np.random.default_rng(0))
        assert sp.A.shape == (50, 576) and sp.A.std() == pytest.approx(1.0, rel=0.05)
        assert abs(sp.A.mean()) < 0.02
        u = np.random.default_rng(3).uniform(size=50)
        np.testing.assert_allclose(sp.embed(u), (u @ sp.A).astype(np.float32), rtol=1e-6)
        assert not np.any(sp.embed(np.zeros(50)))  # no greedy anchor
        assert sp.bounds.tolist() == [[0.0, 1.0]] * 50
        first = sp.first_round(400)
        assert first.shape == (400, 50) and first.std() == pytest.approx(1.0, rel=0.05)
        assert (first < 0).mean() > 0.4  # N(0, I), not the cube


def test_gemma_first_step_logits_match_batched(gemma):
    """llama.cpp does not promise batch-invariant numerics: on Gemma 3 270M greedy chains may split
    after a few tokens when batched, so here the first step's logits are compared to a tolerance."""
    cfg, toks, cands = _candidates(gemma, 3, sigma=0.5)
    seqs = [1, 2, 3]
    for s in seqs:
        gemma.seq_copy(0, s)
    gemma.decode_step(seqs, rows=np.stack([c.x for c in cands]))
    batched = np.array([gemma.logits(i) for i in range(3)])
    for i, c in enumerate(cands):
        gemma.seq_remove(seqs[i], len(toks))
        gemma.decode_step([seqs[i]], rows=c.x[None, :])
        one = np.array(gemma.logits(0))
        scale = one.max() - one.min()
        assert np.abs(one - batched[i]).max() <= 1e-2 * scale
        assert one.argmax() == batched[i].argmax()


def test_greedy_embedding_candidate_is_greedy_cot(smol):
    cfg, toks, cands = _candidates(smol, 1, sigma=0.0)
    _decode(smol, cfg, toks, cands)
    greedy = [e.token_id for e in run_cot(smol, Q, CotConfig(max_tokens=41)) if isinstance(e, Token)]
    assert cands[0].tokens == greedy[1 : 1 + len(cands[0].tokens)]


def test_a_twin_candidate_is_reused_not_decoded_again(smol):
    cfg, toks, first = _candidates(smol, 1, sigma=0.0, max_tokens=60)
    _decode(smol, cfg, toks, first)
    cfg2 = sr.SoftReasoningConfig(candidates=1, max_tokens=60, reuse_prefix=8)
    twin = sr._Cand(1, None, first[0].x.copy(), [], [])
    first[0].text = "the earlier candidate's whole text. Final answer: 24"
    events = _decode(smol, cfg2, toks, [twin], earlier=first)
    assert twin.reused_from == 0 and len(twin.tokens) == 8 and twin.finish == "reused"
    # its SequenceDone carries the twin's text and answer, not the 8-token prefix's
    done = [e for e in events if isinstance(e, SequenceDone)]
    assert len(done) == 1 and done[0].text == first[0].text and done[0].answer == "24"


def test_rounds_events_and_summary(smol):
    cfg = sr.SoftReasoningConfig(candidates=3, rounds=3, dim=8, max_tokens=40, verifier_max_tokens=40,
                                 min_improvement=-1.0)  # never converge: run every round
    events = list(sr.run_soft_reasoning(smol, Q, cfg))
    rounds = [e for e in events if isinstance(e, Round)]
    summary = events[-1]
    assert isinstance(summary, Summary) and summary.extra["rounds"] == len(rounds) == 3
    assert summary.finish_reason == "max_rounds"
    assert [len(r.candidates) for r in rounds] == [3, 3, 3]
    assert rounds[0].predicted_mean == ()  # the first round is the initial design
    assert len(rounds[1].predicted_mean) == 3 and all(s >= 0 for s in rounds[1].predicted_std)
    # each round's best is the best reward of every candidate so far, recomputed from the events
    rewards = [[c.reward for c in r.candidates] for r in rounds]
    for i, r in enumerate(rounds):
        assert r.best_reward == pytest.approx(max(x for rs in rewards[: i + 1] for x in rs))
    assert summary.extra["best_reward"] == pytest.approx(rounds[-1].best_reward)
    for r in rounds:
        for c in r.candidates:
            assert c.reward == pytest.approx(c.verifier + c.coherence)
            assert 0.0 < c.coherence <= 1.0
            assert c.verifier == (1.0 if c.answer is not None and sr._same(c.answer, r.verifier_answer) else 0.0)
    assert summary.extra["candidates_decoded"] + summary.extra["candidates_reused"] == 9
    again = list(sr.run_soft_reasoning(smol, Q, cfg))
    assert again[-1].answer == summary.answer and again[-1].text == summary.text


def test_each_round_decodes_the_proposals_asked_after_the_last_tell(smol, monkeypatch):
    """The GP loop is closed: round r's rewards are told to the optimiser before round r+1 is
    asked, and the first positions decoded in round r+1 are exactly the embeddings of what that
    ask proposed (round 0: the Sobol design, candidate 0 pinned to greedy)."""
    from latentlocal.bayesopt import BayesOpt

    log: list[tuple] = []
    real_ask, real_tell, real_init = BayesOpt.ask, BayesOpt.tell, sr._Space.__init__
    spaces = []

    def ask(self, q=1):
        U = real_ask(self, q)
        log.append(("ask", U.copy(), self.last_proposal))
        return U

    def tell(self, X, y):
        log.append(("tell", np.array(X, copy=True), np.array(y, copy=True)))
        return real_tell(self, X, y)

    def init(self, *a, **k):
        real_init(self, *a, **k)
        spaces.append(self)

    real_step = smol.decode_step

    def step(seqs, tokens=None, rows=None):
        if rows is not None:
            log.append(("rows", list(seqs), np.array(rows, copy=True)))
        return real_step(seqs, tokens=tokens, rows=rows)

    monkeypatch.setattr(BayesOpt, "ask", ask)
    monkeypatch.setattr(BayesOpt, "tell", tell)
    monkeypatch.setattr(sr._Space, "__init__", init)
    monkeypatch.setattr(smol, "decode_step", step)
    cfg = sr.SoftReasoningConfig(candidates=3, rounds=3, dim=8, max_tokens=24, verifier_max_tokens=24,
                                 min_improvement=-1.0)
    events = list(sr.run_soft_reasoning(smol, Q, cfg))
    rounds = [e for e in events if isinstance(e, Round)]
    assert len(rounds) == 3 and len(spaces) == 1
    assert [entry[0] for entry in log] == ["ask", "rows", "tell"] * 3
    space = spaces[0]
    # greedy's first token is what candidate 0 of round 0 stands in for
    toks = prompt_tokens(smol, Q, cfg.system)
    smol.clear()
    smol.decode_tokens(toks)
    np.testing.assert_array_equal(space.e_z, smol.model.embeddings.row(int(np.argmax(smol.logits(-1)))))
    for r in range(3):
        (_, U, proposal), (_, seqs, rows), (_, X, y) = log[3 * r: 3 * r + 3]
        used = U.copy()
        if r == 0:
            used[0] = 0.0
        assert seqs == [1, 2, 3]
        np.testing.assert_array_equal(rows, np.stack([space.embed(u) for u in used]))
        np.testing.assert_array_equal(X, used)  # told the points that were decoded ...
        assert list(y) == pytest.approx([c.reward for c in rounds[r].candidates])  # ... with their rewards
        if r == 0:
            assert not proposal.from_model and rounds[0].predicted_mean == ()
        else:  # a GP fitted to the earlier rounds chose these points
            assert proposal.from_model
            assert rounds[r].predicted_mean == pytest.approx(tuple(proposal.mean))
    np.testing.assert_array_equal(log[1][2][0], space.e_z)


def test_the_official_space_searches_the_cube_after_normal_draws(smol, monkeypatch):
    """Round 0 decodes u ~ N(0, I) (no greedy candidate), is told to the optimiser as drawn, and
    the rounds after it decode the GP's proposals from the unit cube."""
    from latentlocal.bayesopt import BayesOpt

    told, spaces = [], []
    real_tell, real_init = BayesOpt.tell, sr._Space.__init__

    def tell(self, X, y):
        told.append(np.array(X, copy=True))
        return real_tell(self, X, y)

    def init(self, *a, **k):
        real_init(self, *a, **k)
        spaces.append(self)

    rows_fed = []
    real_step = smol.decode_step

    def step(seqs, tokens=None, rows=None):
        if rows is not None:
            rows_fed.append(np.array(rows, copy=True))
        return real_step(seqs, tokens=tokens, rows=rows)

    stood_for = []
    real_decode = sr._decode_candidates

    def decode(*a, first_token=None, **k):
        stood_for.append(first_token)
        return real_decode(*a, first_token=first_token, **k)

    monkeypatch.setattr(BayesOpt, "tell", tell)
    monkeypatch.setattr(sr._Space, "__init__", init)
    monkeypatch.setattr(smol, "decode_step", step)
    monkeypatch.setattr(sr, "_decode_candidates", decode)
    cfg = sr.SoftReasoningConfig(space="official", candidates=3, rounds=2, dim=6, max_tokens=16,
                                 verifier_max_tokens=16, min_improvement=-1.0)
    events = list(sr.run_soft_reasoning(smol, Q, cfg))
    assert isinstance(events[-1], Summary) and events[-1].extra["space"] == "official"
    # the free position is no token's stand-in: nothing is put in front of what was decoded
    assert stood_for == [None, None]
    assert len(told) == 2 and len(rows_fed) == 2
    space = spaces[0]
    assert (told[0] < 0).any() or (told[0] > 1).any()  # normal draws, not the cube
    assert np.all((told[1] >= 0) & (told[1] <= 1))  # then the GP's proposals in the cube
    for U, rows in zip(told, rows_fed):
        np.testing.assert_array_equal(rows, np.stack([space.embed(u) for u in U]))
    assert not np.any(np.all(rows_fed[0] == space.e_z, axis=1))  # no greedy candidate


def test_stops_when_the_best_reward_stalls(smol):
    cfg = sr.SoftReasoningConfig(candidates=2, rounds=5, dim=4, max_tokens=24, verifier_max_tokens=24,
                                 min_improvement=10.0)
    summary = list(sr.run_soft_reasoning(smol, Q, cfg))[-1]
    assert summary.finish_reason == "converged" and summary.extra["rounds"] == 2


def test_final_vote():
    # majority across candidates and verifiers, with "16" and "16.0" one answer
    assert sr.final_vote(["16", "16.0", "12"], [0.1, 0.2, 0.9], [])[0] in ("16", "16.0")
    # verifier answers vote too: 2 against 2, and the tie goes to the higher reward
    assert sr.final_vote(["16", "16.0", "12"], [0.1, 0.2, 0.9], ["12"])[0] == "12"
    final, pick = sr.final_vote(["16", "16.0", "12"], [0.1, 0.2, 0.9], ["12", "12"])
    assert final == "12" and pick == 2
    # a tie goes to the answer with the highest reward
    final, pick = sr.final_vote(["3", "5"], [0.4, 0.7], [])
    assert final == "5" and pick == 1
    assert sr.final_vote([], [], ["3"]) == (None, None)
    # an answer only the verifiers gave has no candidate to go with it (the text would be another
    # answer's)
    assert sr.final_vote(["3", "5"], [0.4, 0.7], ["7", "7"]) == ("7", None)
    assert sr.final_vote([None, None], [0.4, 0.7], [None]) == (None, 1)


def test_a_verdict_without_its_answer_line_is_no_vote():
    # "2" is a solution's label, not an answer: the official code votes nothing here (Search.py)
    assert sr.verdict_answer("Checking: 4*6=24. Solution 2 is right.") is None
    assert sr.verdict_answer("Checking: 4*6=24.\nFinal answer: 24") == "24"


def test_an_answer_from_the_verifiers_alone_comes_with_their_text(smol, monkeypatch):
    monkeypatch.setattr(sr, "final_answer", lambda text, fmt, strict=False: None)
    monkeypatch.setattr(sr, "_verify", lambda *a: ("424242", "All wrong.\nFinal answer: 424242", 3))
    cfg = sr.SoftReasoningConfig(candidates=2, rounds=1, dim=4, max_tokens=8)
    summary = list(sr.run_soft_reasoning(smol, Q, cfg))[-1]
    assert summary.answer == "424242" and summary.text.endswith("Final answer: 424242")


def _answered(n, chars):
    return [sr._Cand(i, None, np.zeros(1, np.float32), [], [], text="x" * chars + f"\nFinal answer: {i}")
            for i in range(n)]


def test_the_verifier_prompt_fits_the_free_context(smol, monkeypatch):
    """Shown only answered candidates, shortened until the prompt fits the cells the prompt's
    sequence leaves free (it used to be cut to half the context, and could still overflow)."""
    cfg = sr.SoftReasoningConfig(candidates=2, max_tokens=8, verifier_max_tokens=4)
    smol.clear()
    smol.decode_tokens(smol.model.tokenize("x " * 1700), seq=0)  # ~1700 of the 2048 cells taken
    room = smol.n_ctx - smol.pos(0) - 8 - cfg.verifier_max_tokens
    fed = []
    real = smol.decode_tokens
    monkeypatch.setattr(smol, "decode_tokens", lambda toks, seq=0: (fed.append((len(toks), seq)), real(toks, seq=seq)))
    cands = _answered(4, 400) + [sr._Cand(9, None, np.zeros(1, np.float32), [], [], text="no answer")]
    answer, said, n = sr._verify(smol, Q, cands, cfg, seq=5)
    # four full excerpts take ~470 tokens here: they had to be shortened
    assert fed and fed[0][1] == 5 and fed[0][0] <= room and 1 <= n <= cfg.verifier_max_tokens
    assert fed[0][0] < len(smol.model.tokenize(sr.verifier_prompt(
        smol.model, "\n\n".join(sr._shown(c.text, sr.reasoning_format(smol.model)) for c in cands))))
    # nothing answered: no verdict, nothing decoded
    fed.clear()
    assert sr._verify(smol, Q, cands[-1:], cfg, seq=5) == (None, "", 0) and not fed
    # even the shortest excerpts do not fit: no verdict rather than a prompt cut through its head
    smol.decode_tokens(smol.model.tokenize("x " * 250), seq=0)
    fed.clear()
    assert sr._verify(smol, Q, _answered(5, 400), cfg, seq=5) == (None, "", 0) and not fed
    smol.clear()


def test_bad_options(smol):
    with pytest.raises(LatentLocalError, match="parallel sequences"):
        list(sr.run_soft_reasoning(smol, Q, sr.SoftReasoningConfig(candidates=7)))
    with pytest.raises(LatentLocalError, match="space"):
        list(sr.run_soft_reasoning(smol, Q, sr.SoftReasoningConfig(space="elsewhere")))
