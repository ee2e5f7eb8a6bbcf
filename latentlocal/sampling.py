"""Probabilities, entropy and the top-k / top-p / min-p filter chain shared by all methods."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingConfig:
    """Temperature 0 means greedy; 0 / 1.0 / 0.0 switch top-k / top-p / min-p off."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


class Sampled:
    """Mixed into a method's frozen config that declares ``temperature``, ``top_k``, ``top_p``
    and ``min_p`` settings: the one place those become the config's ``SamplingConfig``."""

    temperature: float
    top_k: int
    top_p: float
    min_p: float

    @functools.cached_property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(self.temperature, self.top_k, self.top_p, self.min_p)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Full-vocabulary probabilities in float64 (entropy sums over 150k terms)."""
    z = np.asarray(logits, dtype=np.float64)
    if temperature != 1.0:
        z = z / temperature
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


def entropy(p: np.ndarray) -> float:
    """Shannon entropy in nats."""
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum())


def filter_chain(
    p: np.ndarray,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    max_keep: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k, then top-p, then min-p (relative to the largest p), then the ``max_keep`` largest.

    Returns token ids sorted by descending probability and their renormalised weights.
    """
    n = p.shape[0]
    if 0 < top_k < n:
        ids = np.argpartition(-p, top_k - 1)[:top_k]
    else:
        ids = np.arange(n)
    ids = ids[np.argsort(-p[ids], kind="stable")]
    w = p[ids]
    if top_p < 1.0:
        # Keep the smallest prefix whose mass reaches top_p (the token that crosses it stays).
        csum = np.cumsum(w) / w.sum()
        keep = int(np.searchsorted(csum, top_p, side="left")) + 1
        ids, w = ids[:keep], w[:keep]
    if min_p > 0.0:
        mask = w >= min_p * w[0]
        ids, w = ids[mask], w[mask]
    if max_keep is not None and max_keep > 0:
        ids, w = ids[:max_keep], w[:max_keep]
    return ids, w / w.sum()


def sample_token(
    logits: np.ndarray, cfg: SamplingConfig, rng: np.random.Generator
) -> tuple[int, float]:
    """One token id and its probability under the (filtered) distribution."""
    if cfg.greedy:
        tok = int(np.argmax(logits))
        # the top token's probability is 1 / sum(exp(z - z_top)): one float32 pass, where a full
        # float64 softmax cost 1-4 ms a token over a 150k vocabulary (most of a batched step's
        # Python time); the float64 sum keeps it to float32 rounding of each term
        z = np.asarray(logits, dtype=np.float32) - np.float32(logits[tok])
        return tok, float(1.0 / np.exp(z).sum(dtype=np.float64))
    p = softmax(logits, cfg.temperature)
    ids, w = filter_chain(p, cfg.top_k, cfg.top_p, cfg.min_p)
    j = int(rng.choice(len(ids), p=w))
    return int(ids[j]), float(w[j])
