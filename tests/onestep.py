"""One decode step of two sequences fed as tokens and again as their embedding rows, for the
parity tests of a local engine (test_engine) and one whose layers sit on RPC workers (test_rpc)."""

from __future__ import annotations

import numpy as np


def token_and_row_logits(engine, prompt: list[int], nxt: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Both sequences hold ``prompt``; step them once with the tokens ``nxt``, rewind that step,
    and step them with the tokens' embedding rows. Returns (logits by token, logits by row)."""
    engine.clear()
    engine.decode_tokens(prompt, seq=0)
    engine.seq_copy(0, 1)
    engine.decode_step([0, 1], tokens=nxt)
    by_token = np.array([engine.logits(0), engine.logits(1)])
    engine.seq_remove(0, len(prompt))
    engine.seq_remove(1, len(prompt))
    engine.decode_step([0, 1], rows=engine.model.embeddings.rows(nxt))
    return by_token, np.array([engine.logits(0), engine.logits(1)])
