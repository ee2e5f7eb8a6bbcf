"""Recording wrappers around an engine, shared by the tests: what a method reads and feeds, and
how many sequences each batched decode step carries."""

from __future__ import annotations

import numpy as np


class EngineSpy:
    """Records, in order, the logits a method reads and the tokens and rows it feeds
    (``log`` holds ("logits" | "tokens" | "rows", value) pairs); the engine still does the work."""

    def __init__(self, monkeypatch, engine) -> None:
        self.log: list[tuple[str, object]] = []
        real_logits, real_tokens, real_rows = engine.logits, engine.decode_tokens, engine.decode_embeddings

        def logits(i=-1):
            out = real_logits(i)
            self.log.append(("logits", np.array(out)))
            return out

        def tokens(toks, *a, **k):
            self.log.append(("tokens", [int(t) for t in toks]))
            return real_tokens(toks, *a, **k)

        def rows(r, *a, **k):
            self.log.append(("rows", np.atleast_2d(np.array(r, dtype=np.float32))))
            return real_rows(r, *a, **k)

        monkeypatch.setattr(engine, "logits", logits)
        monkeypatch.setattr(engine, "decode_tokens", tokens)
        monkeypatch.setattr(engine, "decode_embeddings", rows)


def count_steps(engine, monkeypatch) -> list[int]:
    """The number of sequences of every ``engine.decode_step`` from now on (it still decodes)."""
    sizes: list[int] = []
    real = engine.decode_step

    def step(seqs, tokens=None, rows=None):
        sizes.append(len(seqs))
        return real(seqs, tokens=tokens, rows=rows)

    monkeypatch.setattr(engine, "decode_step", step)
    return sizes
