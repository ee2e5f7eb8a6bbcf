"""Continuous batching (latentlocal.batching): chains of different prompts share decode steps and
decode as they do alone (to within batch numerics)."""

from __future__ import annotations

import threading

import numpy as np

from closeness import TIE, assert_same_distribution
from latentlocal.batching import StepBatcher, decode_batched
from latentlocal.events import Summary, Token
from latentlocal.methods.cot import CotChain, CotConfig, prompt_tokens, run_cot
from latentlocal.prompts import COT_SYSTEM
from spies import count_steps

QUESTIONS = [
    "Sara has 4 boxes with 6 pens each. How many pens does she have?",
    "What is 12 minus 5?",
    "A train travels 60 km in 1 hour. How far does it go in 3 hours?",
]


# llama.cpp's numerics depend a little on the batch around a row (chains of other lengths change
# the attention's reduction order): here up to ~0.1 logit at near ties, so a batched greedy chain
# may take the other branch of a tie that its lone decode takes. A mixed-up logits row is off by
# whole logits. So each batched token is checked against the chain decoded alone, fed the same
# tokens: it must be that decode's top token to within TIE (closeness.TIE).


def _worst_gap(engine, prompt, ids) -> float:
    """How far below the lone decode's top logit the batched chain's tokens ever were."""
    engine.clear()
    engine.decode_tokens(prompt)
    worst = 0.0
    for t in ids:
        lg = engine.logits(-1)
        worst = max(worst, float(lg.max() - lg[t]))
        engine.decode_tokens([t])
    return worst


def _batched(engine, cfg, sequences=None):
    prompts = [(i, prompt_tokens(engine, q, COT_SYSTEM)) for i, q in enumerate(QUESTIONS)]
    ids: dict[int, list[int]] = {i: [] for i in range(len(QUESTIONS))}
    summaries: dict[int, Summary] = {}
    for key, ev in decode_batched(engine, prompts, cfg, sequences=sequences):
        if isinstance(ev, Token):
            ids[key].append(ev.token_id)
        elif isinstance(ev, Summary):
            summaries[key] = ev
    return dict(prompts), ids, summaries


def test_batched_greedy_chains_follow_each_chain_alone(smol, monkeypatch):
    """Catches a batcher that mixes up logits rows between sequences (a chain would continue
    another prompt's text) or that decodes the chains one after another instead of together."""
    cfg = CotConfig(max_tokens=24, stop_after_answer=False)
    sizes = count_steps(smol, monkeypatch)
    prompts, ids, summaries = _batched(smol, cfg)
    assert max(sizes) == len(QUESTIONS)  # all three in one llama_decode per step
    first = [next(e.token_id for e in run_cot(smol, q, CotConfig(max_tokens=1)) if isinstance(e, Token))
             for q in QUESTIONS]
    for i in range(len(QUESTIONS)):
        assert ids[i][0] == first[i]      # sampled from the prompt's own decode: exact
        assert summaries[i].generated_tokens == len(ids[i])
        assert summaries[i].extra["prompt_tokens"] == len(prompts[i])
        assert _worst_gap(smol, prompts[i], ids[i]) < TIE
    assert len(sizes) == max(map(len, ids.values())) - 1  # one step per position after the first


def test_a_chain_joins_when_another_leaves(smol):
    """Two sequences for three prompts: the third starts when one leaves, mid-run of the other
    (its prompt decode must not clobber the running chain's pending logits)."""
    short = CotConfig(max_tokens=6, stop_after_answer=False)
    long = CotConfig(max_tokens=14, stop_after_answer=False)
    smol.clear()
    batch = StepBatcher(smol, sequences=2)
    toks = [prompt_tokens(smol, q, COT_SYSTEM) for q in QUESTIONS]
    batch.add(0, toks[0], long)
    batch.add(1, toks[1], short)
    assert not batch.fits(len(toks[2]), short)  # both sequences taken
    got: dict[int, list[int]] = {0: [], 1: [], 2: []}
    joined_at = None
    while batch.active:
        for key, ev in batch.step():
            if isinstance(ev, Token):
                got[key].append(ev.token_id)
            elif isinstance(ev, Summary) and key == 1:
                assert batch.fits(len(toks[2]), short)
                batch.add(2, toks[2], short)
                joined_at = len(got[0])
    assert joined_at is not None and joined_at < 14
    assert batch.shared > 0  # the third copied the prefix the second left: still its own answer
    assert [len(got[k]) for k in range(3)] == [14, 6, 6]
    for k in range(3):
        assert _worst_gap(smol, toks[k], got[k]) < TIE


def test_admission_reserves_kv_cells_for_each_budget(smol_model):
    from latentlocal.engine import Engine

    with Engine(smol_model, n_ctx=256, n_seq_max=4, n_threads=2) as small:
        batch = StepBatcher(small)
        prompt = prompt_tokens(small, QUESTIONS[0], COT_SYSTEM)
        cfg = CotConfig(max_tokens=256 - len(prompt) - 10)
        assert batch.fits(len(prompt), cfg)
        batch.add("a", prompt, cfg)
        assert not batch.fits(len(prompt), cfg)  # a second would overfill the shared cache
        assert batch.fits(1, CotConfig(max_tokens=8))


def test_cancelling_one_chain_leaves_the_others_running(smol):
    cfg = CotConfig(max_tokens=12, stop_after_answer=False)
    smol.clear()
    batch = StepBatcher(smol)
    stop = threading.Event()
    toks = [prompt_tokens(smol, q, COT_SYSTEM) for q in QUESTIONS[:2]]
    batch.add("kept", toks[0], cfg)
    batch.add("dropped", toks[1], cfg, cancel=stop)
    batch.step()
    stop.set()
    ends: dict[str, Summary] = {}
    while batch.active:
        for key, ev in batch.step():
            if isinstance(ev, Summary):
                ends[key] = ev
    assert ends["dropped"].finish_reason == "cancelled" and ends["dropped"].generated_tokens == 1
    assert ends["kept"].finish_reason == "length" and ends["kept"].generated_tokens == 12


def _first_logits(chain) -> list:
    """Record the logits each step of ``chain`` is given (a copy: the engine's rows move on)."""
    seen: list = []
    real = chain.step

    def step(logits):
        seen.append(None if logits is None else np.array(logits))
        return real(logits)

    chain.step = step
    return seen


def _alone_logits(engine, prompt):
    engine.clear()
    engine.decode_tokens(prompt)
    return np.array(engine.logits(-1))


def _run(batch):
    out: dict = {}
    while batch.active:
        for key, ev in batch.step():
            if isinstance(ev, Token):
                out.setdefault(key, []).append(ev.token_id)
    return out


def test_a_new_prompt_reuses_the_prompt_a_finished_chain_left(smol):
    """A chain admitted after another finished copies the chat-template prefix they share
    instead of decoding it, and still starts from its own prompt's logits and follows its own
    lone decode (catches a copy of the wrong length, or of the wrong sequence)."""
    cfg = CotConfig(max_tokens=4, stop_after_answer=False)
    a, b = (prompt_tokens(smol, q, COT_SYSTEM) for q in QUESTIONS[:2])
    n = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    ref = _alone_logits(smol, b)
    smol.clear()
    batch = StepBatcher(smol)
    batch.add("a", a, cfg)
    _run(batch)
    chain = CotChain(smol, CotConfig(max_tokens=8, stop_after_answer=False), b)
    seen = _first_logits(chain)
    batch.add_chain("b", chain)
    ids = _run(batch)["b"]
    assert batch.shared == n and batch.prefilled == len(a) + len(b) - n
    assert_same_distribution(ref, seen[0], "the first logits of a prompt with a copied prefix")
    assert _worst_gap(smol, b, ids) < TIE


def test_prompts_admitted_together_decode_their_shared_prefix_once(smol, monkeypatch):
    """Three prompts admitted at once into an empty context: the first is prefilled alone, the
    other two copy its chat-template prefix and are prefilled together; each chain's first
    logits are its own prompt's."""
    toks = [prompt_tokens(smol, q, COT_SYSTEM) for q in QUESTIONS]
    refs = [_alone_logits(smol, t) for t in toks]
    common = [next(i for i, (x, y) in enumerate(zip(toks[0], t)) if x != y) for t in toks[1:]]
    decodes: list[int] = []
    real = smol.decode_many
    monkeypatch.setattr(smol, "decode_many", lambda feeds: decodes.append(len(feeds)) or real(feeds))
    smol.clear()
    batch = StepBatcher(smol)
    seen = []
    for i, t in enumerate(toks):
        chain = CotChain(smol, CotConfig(max_tokens=2, stop_after_answer=False), t)
        seen.append(_first_logits(chain))
        batch.add_chain(i, chain)
    batch.step()
    assert decodes == [1, 2]
    assert batch.shared == sum(common) and batch.prefilled == sum(map(len, toks)) - sum(common)
    for i in range(3):
        assert_same_distribution(refs[i], seen[i][0], f"prompt {i}")
    _run(batch)


def test_kept_prompts_give_way_to_a_chain_that_needs_their_cells(smol_model):
    """A finished chain's prompt stays in its sequence only while the context has room for it
    beside every running chain's reservation (catches a kept prompt that would let the new
    chain overfill the cache)."""
    from latentlocal.engine import Engine

    with Engine(smol_model, n_ctx=256, n_seq_max=4, n_threads=2) as small:
        batch = StepBatcher(small)
        a = prompt_tokens(small, QUESTIONS[0], COT_SYSTEM)
        batch.add("a", a, CotConfig(max_tokens=2, stop_after_answer=False))
        _run(batch)
        assert small.pos(0) == len(a)       # kept, cut back to the prompt
        b = list(reversed(a))               # shares no prefix: it cannot use the kept cells
        batch.add("b", b, CotConfig(max_tokens=40))
        assert small.pos(0) == len(a)       # both fit: still kept
        c = [a[-1]] + a[:-1]
        batch.add("c", c, CotConfig(max_tokens=256 - 2 * len(a) - 44))
        assert small.pos(0) == 0            # its reservation needs the kept prompt's cells
        _run(batch)


def test_kept_prompts_are_forgotten_when_the_engine_is_cleared(smol):
    """Another user of the engine cleared it and decoded its own prompt into sequence 0: the
    next chain decodes its whole prompt (catches a copy from cells that now hold another text)."""
    cfg = CotConfig(max_tokens=2, stop_after_answer=False)
    a = prompt_tokens(smol, QUESTIONS[0], COT_SYSTEM)
    ref = _alone_logits(smol, a)
    smol.clear()
    batch = StepBatcher(smol)
    batch.add("a", a, cfg)
    _run(batch)
    smol.clear()
    smol.decode_tokens(prompt_tokens(smol, QUESTIONS[1], COT_SYSTEM))
    chain = CotChain(smol, cfg, a)
    seen = _first_logits(chain)
    batch.add_chain("again", chain)
    _run(batch)
    assert batch.shared == 0 and batch.prefilled == 2 * len(a)
    assert_same_distribution(ref, seen[0], "after the clear")
