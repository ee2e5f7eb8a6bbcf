"""Continuous batching: independent decoding chains share every ``llama_decode`` step.

Each chain (a method's per-problem decoding as steps, :mod:`latentlocal.methods.chain`: cot's,
Soft Thinking's) holds one sequence of one context. A :meth:`StepBatcher.step` runs the step of
every chain on the logits of its previous decode and feeds what they ask for together: the
single-token feeds in one batch, the embedding rows in another (llama.cpp decodes either token
ids or embeddings in one batch, never both). When a step has both, its tokens go in as their
embedding rows, so every step is one decode (Soft Thinking feeds a one-candidate concept and its
answer as tokens while other chains feed mixtures). A feed of several tokens (Soft Thinking's
forced "Final answer:") is decoded on its own. Decoding ``k`` sequences in one step costs far less than
``k`` steps on a CPU. Chains join (:meth:`StepBatcher.add_chain`, :meth:`StepBatcher.add` for a
cot prompt) and leave (finished or cancelled) between steps, so a server adds a request while
others decode and a benchmark keeps the context full of problems.

A chain is the same object a lone run (``run_cot``, ``run_soft_thinking``) steps through
``methods.chain.run_alone``, so the stop rules, sampling and Summary are the lone run's; only the
batch around it differs.

KV cells: one context's cache (``kv_unified``) holds every sequence, so a chain is admitted only
when its prompt plus its token budget fit beside what the running chains may still use
(:meth:`StepBatcher.fits`); a running chain can then never find the context full.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from latentlocal.engine import Engine
from latentlocal.events import Event, Summary
from latentlocal.methods.chain import Chain, Feed
from latentlocal.methods.cot import CotChain, CotConfig
from latentlocal.phases import Budget, fit_context


@dataclass
class _Slot:
    key: Hashable
    seq: int
    chain: Chain
    cancel: threading.Event | None
    logits: np.ndarray | None  # a private copy while the engine's rows belong to another decode
    ended: bool = False        # StepBatcher.cancel: this chain only (``cancel`` may be shared)


class StepBatcher:
    """Chains decoded together, one step each per :meth:`step`, in one engine's sequences.

    The batcher owns the sequences it uses (``0 .. sequences - 1``); nothing else may decode in
    the engine while it has chains. Events come back tagged with the key passed to
    :meth:`add_chain`; every chain ends with the Summary its lone run gives.
    """

    def __init__(self, engine: Engine, sequences: int | None = None) -> None:
        self.engine = engine
        self.capacity = max(1, min(sequences or engine.n_seq_max, engine.n_seq_max))
        self._slots: dict[int, _Slot] = {}   # seq -> slot, in admission order
        self._row: dict[int, int] = {}       # seq -> its logits row in the last decode
        self._reserved = 0
        self.decodes = 0                     # llama_decode batches of steps (not prompts)

    # admission --------------------------------------------------------------------------------
    @property
    def active(self) -> int:
        return len(self._slots)

    def keys(self) -> list[Hashable]:
        return [c.key for c in self._slots.values()]

    def budget_for(self, prompt_len: int, cfg: CotConfig) -> Budget:
        """The token budget a cot chain with this prompt gets (cut to what the context holds
        alone); raises ``LatentLocalError`` when the prompt leaves no room in the context."""
        return fit_context(cfg.budget, self.engine.n_ctx, prompt_len)[0]

    def fits(self, prompt_len: int, cfg: CotConfig, count: int = 1) -> bool:
        """Whether ``count`` cot chains of this prompt can join now: free sequences, and KV cells
        for their prompts and budgets beside the running chains' reservations."""
        return self.fits_cells(count * (prompt_len + self.budget_for(prompt_len, cfg).max_tokens), count)

    def fits_cells(self, cells: int, count: int = 1) -> bool:
        """Whether ``count`` chains needing ``cells`` KV cells in all can join now."""
        if len(self._slots) + count > self.capacity:
            return False
        return self._reserved + cells <= self.engine.n_ctx

    def add(
        self,
        key: Hashable,
        prompt: Sequence[int],
        cfg: CotConfig,
        cancel: threading.Event | None = None,
        seed: int | None = None,
    ) -> list[tuple[Hashable, Event]]:
        """Start a cot chain on ``prompt`` (``seed`` overrides ``cfg.seed``): :meth:`add_chain`."""
        return self.add_chain(key, CotChain(self.engine, cfg, prompt, seed=seed), cancel)

    def add_chain(
        self, key: Hashable, chain: Chain, cancel: threading.Event | None = None
    ) -> list[tuple[Hashable, Event]]:
        """Decode ``chain.prompt`` into a free sequence and start the chain; returns its first
        events (a ``Notice`` when its budget was cut to the context)."""
        engine = self.engine
        seq = next(s for s in range(self.capacity) if s not in self._slots)
        self._keep_pending()  # the prompt's decode replaces the logits not sampled from yet
        engine.seq_remove(seq)
        engine.decode_tokens(list(chain.prompt), seq=seq)
        slot = _Slot(key=key, seq=seq, chain=chain, cancel=cancel,
                     logits=np.array(engine.logits(-1), copy=True))
        self._slots[seq] = slot
        self._reserved += chain.cells
        return [(key, n) for n in chain.notes]

    def cancel(self, key: Hashable) -> None:
        """End the chain ``key`` (its Summary comes with the next step, finish reason
        ``cancelled``), leaving any other chain that shares its cancel event running."""
        for slot in self._slots.values():
            if slot.key == key:
                slot.ended = True

    # decoding ---------------------------------------------------------------------------------
    def _keep_pending(self) -> None:
        """Copy the logits rows of the last decode that their chains have not stepped on yet."""
        for s, slot in self._slots.items():
            if slot.logits is None and s in self._row:
                slot.logits = np.array(self.engine.logits(self._row[s]), copy=True)
        self._row = {}

    def step(self) -> list[tuple[Hashable, Event]]:
        """One step of every chain, its feeds decoded together; the events it produced."""
        engine = self.engine
        out: list[tuple[Hashable, Event]] = []
        tokens: dict[int, int] = {}
        rows: dict[int, np.ndarray] = {}
        several: dict[int, Feed] = {}
        for seq, slot in list(self._slots.items()):
            ch = slot.chain
            if slot.ended or (slot.cancel is not None and slot.cancel.is_set()):
                ch.cancel()
                feed = None
            else:
                lg = None
                if ch.wants_logits:
                    lg = slot.logits if slot.logits is not None else engine.logits(self._row[seq])
                events, feed = ch.step(lg)
                out.extend((slot.key, e) for e in events)
            slot.logits = None
            if feed is None:
                out.append((slot.key, self._finish(slot)))
            elif feed.row is not None:
                rows[seq] = np.asarray(feed.row, dtype=np.float32).reshape(-1)
            elif len(feed.tokens) == 1:
                tokens[seq] = feed.tokens[0]
            else:
                several[seq] = feed
        if tokens and rows:
            # One decode, not two: a token's input is its embedding row (the chains feeding rows
            # passed the model's embedding-input parity check), so the token feeds join the rows.
            embedded = self.engine.model.embeddings.rows(list(tokens.values()))
            rows.update(zip(tokens, embedded))
            tokens = {}
        self._row = {}
        for seq, feed in several.items():
            self._keep_pending()
            feed.decode(engine, seq)
            self._row = {seq: -1}
        if tokens:
            self._keep_pending()
            engine.decode_step(list(tokens), tokens=list(tokens.values()))
            self._row = {s: i for i, s in enumerate(tokens)}
            self.decodes += 1
        if rows:
            self._keep_pending()
            engine.decode_step(list(rows), rows=np.stack(list(rows.values())))
            self._row = {s: i for i, s in enumerate(rows)}
            self.decodes += 1
        return out

    def _finish(self, slot: _Slot) -> Summary:
        del self._slots[slot.seq]
        self._reserved -= slot.chain.cells
        self.engine.seq_remove(slot.seq)
        return slot.chain.summary()

    def close(self) -> None:
        """Drop every chain without a Summary (the engine is about to be used otherwise)."""
        for seq in list(self._slots):
            self.engine.seq_remove(seq)
        self._slots.clear()
        self._row.clear()
        self._reserved = 0


def decode_batched(
    engine: Engine,
    prompts: Iterable[tuple[Hashable, Sequence[int]]],
    cfg: CotConfig,
    sequences: int | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[tuple[Hashable, Event]]:
    """Chains of thought for many prompts, continuously batched: a new prompt joins as soon as a
    running chain leaves room. Events come tagged with each prompt's key, in decode order."""
    engine.clear()
    batch = StepBatcher(engine, sequences)
    pending = iter(prompts)
    waiting: tuple[Hashable, Sequence[int]] | None = next(pending, None)
    while waiting is not None or batch.active:
        while waiting is not None and (batch.fits(len(waiting[1]), cfg) or not batch.active):
            yield from batch.add(waiting[0], waiting[1], cfg, cancel)
            waiting = next(pending, None)
        yield from batch.step()
