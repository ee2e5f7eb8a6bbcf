"""Baselines: greedy/sampled chain of thought and self-consistency over parallel sequences."""

from __future__ import annotations

from latentlocal.events import SequenceDone, Summary, Token
from latentlocal.methods.cot import CotConfig, SelfConsistencyConfig, run_cot, run_self_consistency
from latentlocal.sampling import SamplingConfig

Q = "Sara has 4 boxes with 6 pens each. How many pens does she have?"


def _ids(events, seq=0):
    return [e.token_id for e in events if isinstance(e, Token) and e.seq == seq]


def test_greedy_self_consistency_chains_equal_greedy_cot(smol):
    """Batched parallel decoding over a shared prompt is exact on SmolLM2: every greedy chain
    decoded together equals the greedy chain decoded alone."""
    greedy = _ids(run_cot(smol, Q, CotConfig(max_tokens=40, stop_after_answer=False)))
    cfg = SelfConsistencyConfig(samples=3, max_tokens=40, sampling=SamplingConfig(), stop_after_answer=False)
    events = list(run_self_consistency(smol, Q, cfg))
    for s in range(3):
        assert _ids(events, s) == greedy
    summary = events[-1]
    assert isinstance(summary, Summary) and summary.generated_tokens == 3 * len(greedy)


def test_sampled_chains_differ_vote_and_reproduce(smol):
    cfg = SelfConsistencyConfig(samples=4, max_tokens=30, seed=7)
    a = list(run_self_consistency(smol, Q, cfg))
    b = list(run_self_consistency(smol, Q, cfg))
    assert [_ids(a, s) for s in range(4)] == [_ids(b, s) for s in range(4)]
    assert len({tuple(_ids(a, s)) for s in range(4)}) > 1
    done = [e for e in a if isinstance(e, SequenceDone)]
    assert sorted(e.seq for e in done) == [0, 1, 2, 3]
    summary = a[-1]
    answers = [e.answer for e in sorted(done, key=lambda e: e.seq)]
    assert summary.extra["answers"] == answers
    counted = [x for x in answers if x is not None]
    if counted:
        assert answers.count(summary.answer) == max(answers.count(x) for x in counted)


def test_sampled_cot_depends_on_the_seed(smol):
    sampling = SamplingConfig(temperature=1.0, top_k=50, top_p=0.95)
    one = _ids(run_cot(smol, Q, CotConfig(max_tokens=20, sampling=sampling, seed=1)))
    again = _ids(run_cot(smol, Q, CotConfig(max_tokens=20, sampling=sampling, seed=1)))
    other = _ids(run_cot(smol, Q, CotConfig(max_tokens=20, sampling=sampling, seed=2)))
    assert one == again and one != other


def test_stop_strings_end_generation(smol):
    events = list(run_cot(smol, Q, CotConfig(max_tokens=60, stop=(" ",))))
    summary = events[-1]
    assert summary.finish_reason == "stop" and summary.generated_tokens <= 3
