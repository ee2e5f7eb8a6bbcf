"""Baselines: greedy/sampled chain of thought and self-consistency over parallel sequences."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from latentlocal.answers import majority_vote
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
    cfg = SelfConsistencyConfig(samples=3, max_tokens=40, **asdict(SamplingConfig()), stop_after_answer=False)
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
    # whatever the chains say (None included), the summary's answer is their vote; the vote
    # itself is pinned on scripted chains below
    assert summary.answer == majority_vote(answers)


def test_self_consistency_answers_with_the_majority(smol, monkeypatch):
    """Three chains scripted to answer 3, 7, 7 (the sampler is replaced; the engine decodes them
    together as usual): the summary answers 7, with the text of the first chain that said 7."""
    import latentlocal.methods.cot as cot

    texts = ["So it is 3.\nFinal answer: 3\n", "So it is 7.\nFinal answer: 7\n", "So it is 7.\nFinal answer: 7\n"]
    scripts = [smol.model.tokenize(t, add_special=False) for t in texts]
    assert len({len(x) for x in scripts}) == 1  # the chains end at the same step
    calls = []

    def scripted(logits, sampling, rng):
        assert len(logits) == smol.n_vocab
        seq, step = len(calls) % 3, len(calls) // 3
        calls.append(seq)
        return scripts[seq][step], 1.0

    monkeypatch.setattr(cot, "sample_token", scripted)
    cfg = SelfConsistencyConfig(samples=3, max_tokens=40, seed=0)
    events = list(run_self_consistency(smol, Q, cfg))
    assert [_ids(events, s) for s in range(3)] == scripts
    done = sorted((e for e in events if isinstance(e, SequenceDone)), key=lambda e: e.seq)
    assert [(e.answer, e.finish_reason) for e in done] == [("3", "answer"), ("7", "answer"), ("7", "answer")]
    summary = events[-1]
    assert summary.extra["answers"] == ["3", "7", "7"]
    assert summary.answer == "7" and summary.text == texts[1]
    assert summary.generated_tokens == 3 * len(scripts[0])


def test_sampled_cot_depends_on_the_seed(smol):
    sampling = SamplingConfig(temperature=1.0, top_k=50, top_p=0.95)
    one = _ids(run_cot(smol, Q, CotConfig(max_tokens=20, **asdict(sampling), seed=1)))
    again = _ids(run_cot(smol, Q, CotConfig(max_tokens=20, **asdict(sampling), seed=1)))
    other = _ids(run_cot(smol, Q, CotConfig(max_tokens=20, **asdict(sampling), seed=2)))
    assert one == again and one != other


def test_stop_strings_end_generation(smol):
    events = list(run_cot(smol, Q, CotConfig(max_tokens=60, stop=(" ",))))
    summary = events[-1]
    tokens = [e for e in events if isinstance(e, Token)]
    # it stops at the first token that brings a space into the text, whichever token that is
    assert summary.finish_reason == "stop" and summary.generated_tokens == len(tokens)
    assert " " in summary.text and " " not in "".join(t.text for t in tokens[:-1])


def test_the_shared_decoding_loop_matches_the_batched_one_and_cancels(smol):
    """cot and SEAL decode through ``_Stream.steps``; self-consistency has its own batched loop.
    Sampled with one seed, one chain of each gives the same tokens (SEAL with a zero vector adds
    nothing at its delimiters), so a step that fed a token twice, skipped one or drew the random
    stream out of order in the shared loop shows here. A cancel before the first step stops both
    with no token generated."""
    import threading

    from latentlocal.methods.seal import SealConfig, run_seal

    sampling = SamplingConfig(temperature=0.9, top_k=40)
    cot = CotConfig(max_tokens=24, **asdict(sampling), seed=3, stop_after_answer=False)
    sc = SelfConsistencyConfig(samples=1, max_tokens=24, **asdict(sampling), seed=3, stop_after_answer=False)
    seal = SealConfig(directions={5: np.zeros(smol.n_embd, np.float32)}, alpha=0.0, max_tokens=24,
                      **asdict(sampling), seed=3, stop_after_answer=False)
    batched = _ids(run_self_consistency(smol, Q, sc), 0)
    assert batched
    assert _ids(run_cot(smol, Q, cot)) == batched
    assert _ids(run_seal(smol, Q, seal)) == batched
    cancel = threading.Event()
    cancel.set()
    for events in (list(run_cot(smol, Q, cot, cancel)), list(run_seal(smol, Q, seal, cancel))):
        summary = events[-1]
        assert isinstance(summary, Summary)
        assert (summary.finish_reason, summary.generated_tokens) == ("cancelled", 0)


def test_each_sampled_method_builds_its_sampling_from_its_own_settings():
    """cot, sc, SEAL and SwiReasoning get ``sampling`` from one mixin (latentlocal.sampling.Sampled);
    a swapped or dropped setting there would decode every method with the wrong filter."""
    from latentlocal.methods.seal import SealConfig
    from latentlocal.methods.swi_reasoning import SwiReasoningConfig

    want = SamplingConfig(temperature=0.3, top_k=7, top_p=0.8, min_p=0.01)
    given = dict(temperature=0.3, top_k=7, top_p=0.8, min_p=0.01)
    configs = [CotConfig(**given), SelfConsistencyConfig(**given), SwiReasoningConfig(**given),
               SealConfig(directions={5: np.zeros(4, np.float32)}, **given)]
    for cfg in configs:
        assert cfg.sampling == want, type(cfg).__name__
