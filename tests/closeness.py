"""When two logits rows are the same next-token distribution up to llama.cpp's batch numerics.

A row's logits depend a little on the batch around it (which cells its KV sits in, how many rows
share the decode): on this build two correct paths to one prompt's last row differ by up to ~1
logit in the worst vocabulary entry but by KL <= 0.005 (SmolLM2), while a prefix copied one
position short or long gives KL 0.05-0.7, and another prompt's row far more.
"""

from __future__ import annotations

import numpy as np

KL_MAX = 0.02   # nats, softmax(a) against softmax(b)
TIE = 0.25      # b's top token must be a's top to within this many logits


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def assert_same_distribution(a: np.ndarray, b: np.ndarray, what: str = "") -> None:
    la, lb = _log_softmax(a), _log_softmax(b)
    kl = float((np.exp(la) * (la - lb)).sum())
    gap = float(np.max(a) - a[int(np.argmax(b))])
    assert kl < KL_MAX and gap < TIE, f"{what}: KL {kl:.4f} (< {KL_MAX}), top-token gap {gap:.3f} (< {TIE})"
