"""Continuous batching: independent decoding chains share every ``llama_decode`` step.

Each chain (a method's per-problem decoding as steps, :mod:`latentlocal.methods.chain`: cot's,
Soft Thinking's) holds one sequence of one context. A :meth:`StepBatcher.step` runs the step of
every chain on the logits of its previous decode and feeds what they ask for together: the
single-token feeds in one batch, the embedding rows in another (llama.cpp decodes either token
ids or embeddings in one batch, never both), and the feeds under a control vector (SEAL's
delimiters, ``Feed.steering``) in a batch of their own with the vector set, since llama.cpp adds
it to every row of a decode: only the sequences that asked for it are steered. When a step has
token and row feeds, its tokens go in as their embedding rows, so every unsteered step is one
decode (Soft Thinking feeds a one-candidate concept and its answer as tokens while other chains
feed mixtures). A feed of several tokens (Soft Thinking's
forced "Final answer:") is decoded on its own. Decoding ``k`` sequences in one step costs far less than
``k`` steps on a CPU. Chains join (:meth:`StepBatcher.add_chain`, :meth:`StepBatcher.add` for a
cot prompt) and leave (finished or cancelled) between steps, so a server adds a request while
others decode and a benchmark keeps the context full of problems.

A chain is the same object a lone run (``run_cot``, ``run_soft_thinking``) steps through
``methods.chain.run_alone``, so the stop rules, sampling and Summary are the lone run's; only the
batch around it differs.

Prompts: a chain's prompt is prefilled at the start of the next step, together with every other
prompt admitted since the last one (one ``llama_decode`` for all, :meth:`Engine.decode_many`).
Prompts that start alike (a chat template and its system message) share that prefix's KV cells:
a new chain copies the longest prefix it has in common with a prompt already decoded (a running
chain's, or a finished chain's, whose prompt cells stay in its free sequence until the space is
needed) and decodes only the rest, as llama-server's prompt cache does. Prompts admitted
together with nothing decoded to copy from decode their shared prefix once: the first of them
goes in a decode of its own and the others then copy from it.

KV cells: one context's cache (``kv_unified``) holds every sequence, so a chain is admitted only
when its prompt plus its token budget fit beside what the running chains may still use
(:meth:`StepBatcher.fits`); a running chain can then never find the context full. Each chain
reserves its whole prompt even when it shares a prefix, and the kept prompts of finished chains
count too and are dropped, oldest first, when a new chain needs their room.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from latentlocal.engine import Engine
from latentlocal.events import Event, Summary
from latentlocal.methods.chain import Chain, Feed, Steering, apply_steering
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
    pending: list[int] = field(default_factory=list)  # prompt tokens the next step prefills


# A prefix shared among prompts admitted in the same step is decoded once (its first prompt
# decodes alone, the others copy from it) when that spares at least this many tokens per prompt:
# a llama_decode's fixed cost is a few prompt tokens' worth on a CPU.
SHARE_IN_STEP_MIN = 16


def _common(a: Sequence[int], b: Sequence[int], most: int) -> int:
    """The length of the common prefix of ``a`` and ``b``, at most ``most``."""
    n = min(len(a), len(b), most)
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


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
        # seq -> the tokens its KV cells hold from position 0 that a new prompt may copy: a
        # running chain's decoded prompt, or a finished chain's prompt kept in its free sequence
        # (oldest first: the order they are dropped in)
        self._held: dict[int, list[int]] = {}
        self._clears = engine.clears
        self.decodes = 0                     # llama_decode batches of steps (not prompts)
        self.prefilled = 0                   # prompt tokens decoded
        self.shared = 0                      # prompt tokens copied from another sequence instead

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
        """Whether ``count`` chains needing ``cells`` KV cells in all can join now (the kept
        prompts of finished chains give way)."""
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
        """Take a free sequence for ``chain`` (its prompt is prefilled at the start of the next
        :meth:`step`) and start it; returns its first events (a ``Notice`` when its budget was
        cut to the context)."""
        self._check_held()
        prompt = list(chain.prompt)
        if not prompt:
            raise ValueError("a chain needs a prompt of at least one token")
        free = [s for s in range(self.capacity) if s not in self._slots]
        if not free:
            raise RuntimeError("no free sequence: ask fits() before adding a chain")
        seq, src, copied = self._place(prompt, free)
        engine = self.engine
        if src == seq:
            engine.seq_remove(seq, copied)
        else:
            engine.seq_remove(seq)
            if copied:
                engine.seq_copy(src, seq, copied)
        self.shared += copied
        self._held.pop(seq, None)
        self._held[seq] = prompt[:copied]
        slot = _Slot(key=key, seq=seq, chain=chain, cancel=cancel, logits=None, pending=prompt[copied:])
        self._slots[seq] = slot
        self._reserved += chain.cells
        self._make_room()
        return [(key, n) for n in chain.notes]

    def _place(self, prompt: list[int], free: list[int]) -> tuple[int, int | None, int]:
        """Where a new prompt goes and what it copies: ``(seq, source, n)``, the first ``n``
        tokens copied from ``source`` (``seq`` itself: its kept prompt is cut to them). At least
        the last token is decoded, which gives the chain's first logits."""
        engine = self.engine
        held = {s: _common(t, prompt, len(prompt) - 1) for s, t in self._held.items()
                if engine.prefix_reuse and engine.seq_intact(s)}
        best = max(held.values(), default=0)
        if best:
            here = [s for s in free if held.get(s) == best]
            if here:  # a kept prompt cut in place: the other kept prompts stay
                return here[0], here[0], best
        src = next((s for s, n in held.items() if n == best), None) if best else None
        # a free sequence holding nothing, else the one whose kept prompt is oldest
        seq = next((s for s in free if s not in self._held), None)
        if seq is None:
            seq = next(s for s in self._held if s in free)
        return seq, src, best

    def _make_room(self) -> None:
        """Drop kept prompts, oldest first, while they and the chains' reservations could
        overfill the context."""
        held = sum(len(t) for s, t in self._held.items() if s not in self._slots)
        for s in [s for s in self._held if s not in self._slots]:
            if self._reserved + held <= self.engine.n_ctx:
                break
            held -= len(self._held.pop(s))
            self.engine.seq_remove(s)

    def _check_held(self) -> None:
        """Forget the kept prompts when the engine was cleared behind the batcher's back."""
        if self._clears != self.engine.clears:
            if self._slots:
                raise RuntimeError("the engine was cleared while the batcher had chains")
            self._held.clear()
            self._clears = self.engine.clears

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

    def _prefill(self) -> None:
        """Decode the prompts admitted since the last step, together (see the module docstring)."""
        todo = {s: slot for s, slot in self._slots.items()
                if slot.pending and not (slot.ended or (slot.cancel is not None and slot.cancel.is_set()))}
        if not todo:
            return
        first: dict[int, _Slot] = {}
        later: dict[int, _Slot] = {}
        for s, slot in todo.items():
            # a longer prefix it shares with a prompt decoded in this step than the one it has
            gain = max((_common(o.chain.prompt, slot.chain.prompt, len(slot.chain.prompt) - 1)
                        for o in first.values()), default=0) - len(self._held[s])
            (later if gain >= SHARE_IN_STEP_MIN and self.engine.prefix_reuse else first)[s] = slot
        self._keep_pending()
        self._row = self._decode_prompts(first)
        if later:
            self._keep_pending()
            for s, slot in later.items():
                prompt = list(slot.chain.prompt)
                self._held.pop(s)
                src, n = max(((o, _common(self._held[o], prompt, len(prompt) - 1)) for o in self._held
                              if o != s and self.engine.seq_intact(o)), key=lambda x: x[1], default=(None, 0))
                self.engine.seq_remove(s)
                if n:
                    self.engine.seq_copy(src, s, n)
                self.shared += n
                self._held[s] = prompt[:n]
                slot.pending = prompt[n:]
            self._row = self._decode_prompts(later)

    def _decode_prompts(self, slots: dict[int, _Slot]) -> dict[int, int]:
        apply_steering(self.engine, None)  # prompts are never steered (SEAL's always-on is unbatched)
        rows = self.engine.decode_many([(s, slot.pending) for s, slot in slots.items()])
        for s, slot in slots.items():
            self.prefilled += len(slot.pending)
            slot.pending = []
            self._held[s] = list(slot.chain.prompt)
        return rows

    def step(self) -> list[tuple[Hashable, Event]]:
        """One step of every chain, its feeds decoded together; the events it produced. Chains
        admitted since the last step have their prompts prefilled first, and take their first
        step in this one."""
        self._prefill()
        engine = self.engine
        out: list[tuple[Hashable, Event]] = []
        tokens: dict[int, int] = {}
        rows: dict[int, np.ndarray] = {}
        several: dict[int, Feed] = {}
        steered: dict[Steering, dict[int, int]] = {}  # single-token feeds under a control vector
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
            elif feed.row is None and len(feed.tokens) == 1 and feed.steering is not None:
                steered.setdefault(feed.steering, {})[seq] = feed.tokens[0]
            elif feed.row is not None and feed.steering is None:
                rows[seq] = np.asarray(feed.row, dtype=np.float32).reshape(-1)
            elif len(feed.tokens) == 1 and feed.steering is None:
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
        # the steering set now first: a step that mixes steered and plain feeds changes the
        # engine's control vector once, not twice
        groups: list[tuple[Steering | None, dict[int, int] | None, dict[int, np.ndarray] | None]] = [
            (v, toks, None) for v, toks in steered.items()]
        if tokens or rows:
            groups.append((None, tokens or None, rows or None))
        groups.sort(key=lambda g: g[0] is not engine.control_vector_tag)
        for steering, toks, embs in groups:
            apply_steering(engine, steering)
            for seqs, kind in ((toks, "tokens"), (embs, "rows")):
                if not seqs:
                    continue
                self._keep_pending()
                values = list(seqs.values())
                engine.decode_step(list(seqs), **{kind: values if kind == "tokens" else np.stack(values)})
                self._row = {s: i for i, s in enumerate(seqs)}
                self.decodes += 1
        if not self._slots:
            apply_steering(engine, None)  # nothing of a finished batch stays steered
        return out

    def _finish(self, slot: _Slot) -> Summary:
        del self._slots[slot.seq]
        self._reserved -= slot.chain.cells
        self._row.pop(slot.seq, None)
        kept = self._held.pop(slot.seq, [])
        if kept and self.engine.prefix_reuse and self.engine.seq_intact(slot.seq):
            self.engine.seq_remove(slot.seq, len(kept))  # the prompt stays for the next one
            self._held[slot.seq] = kept
        else:
            self.engine.seq_remove(slot.seq)
        return slot.chain.summary()

    def close(self) -> None:
        """Drop every chain without a Summary, and the kept prompts (the engine is about to be
        used otherwise)."""
        for seq in set(self._slots) | set(self._held):
            self.engine.seq_remove(seq)
        apply_steering(self.engine, None)
        self._slots.clear()
        self._held.clear()
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
