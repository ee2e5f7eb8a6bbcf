"""Sequences decoded in one batch do not see each other.

A batched run's greedy text can differ from the same problem decoded alone: llama.cpp's CPU
attention takes another path for a step of several rows, and (in the unified cache) its float
sums depend on where a sequence's cells lie among the others' (measured on Qwen2.5-Coder-0.5B,
README "Batched bench"). That is numerics. What must hold on any build is isolation: with the
batch's shape and the cache's layout fixed, a sequence's logits do not depend on what the other
sequences hold or are fed. This catches a KV mask that lets a sequence attend to another's cells, tokens given another
sequence's id or position, and logits rows handed to the wrong sequence.
"""

from __future__ import annotations

import numpy as np

from latentlocal.methods.cot import COT_SYSTEM, prompt_tokens

QUESTIONS = (
    "A baker makes 24 muffins and sells 3 boxes of 6. How many muffins are left?",
    "Tom has 3 apples and buys 5 more. How many apples does he have?",
    "A train travels 60 km in one hour. How far does it go in 4 hours?",
    "Sara had 12 stickers and gave away 7. How many does she have now?",
)
STEPS = 10
# Same shapes, same kernels: on the builds measured the logits are bit-identical; the tolerance
# only allows a backend whose reductions are not deterministic run to run.
ATOL = 1e-4


def _seq0_logits(engine, others: list[list[int]], other_feed, feed0: list[int] | None = None
                 ) -> tuple[list[np.ndarray], list[int]]:
    """Steps of sequence 0 beside three others (``other_feed(k, i)`` feeds sequence k+1): its
    greedy tokens, or ``feed0`` (so a second run feeds the same whatever its numerics)."""
    engine.clear()
    for s, toks in enumerate(others, start=1):
        engine.decode_tokens(toks, seq=s)
    engine.decode_tokens(prompt_tokens(engine, QUESTIONS[0], COT_SYSTEM), seq=0)
    out = [np.array(engine.logits(-1), copy=True)]
    fed: list[int] = []
    for i in range(STEPS):
        fed.append(int(np.argmax(out[-1])) if feed0 is None else feed0[i])
        engine.decode_step([0, 1, 2, 3], tokens=[fed[-1]] + [other_feed(k, i) for k in range(3)])
        out.append(np.array(engine.logits(0), copy=True))
    return out, fed


def test_a_sequence_in_a_batch_does_not_see_the_others(smol):
    prompts = [prompt_tokens(smol, q, COT_SYSTEM) for q in QUESTIONS[1:]]
    vocab = smol.model.n_vocab
    a, fed = _seq0_logits(smol, prompts, lambda k, i: (1000 + 37 * i + k) % vocab)
    # other questions in the other sequences (rotated: sequence 0's cells stay where they were,
    # after the same number of the others' cells) and other tokens fed beside it
    b, _ = _seq0_logits(smol, prompts[1:] + prompts[:1], lambda k, i: (5000 + 11 * i + 3 * k) % vocab, fed)
    for i, (x, y) in enumerate(zip(a, b)):
        assert np.allclose(x, y, rtol=0, atol=ATOL), f"step {i}: max diff {np.abs(x - y).max():.3g}"
    # and the sequence decodes for real: its logits change from step to step
    assert all(np.abs(a[i + 1] - a[i]).max() > 1.0 for i in range(STEPS))
