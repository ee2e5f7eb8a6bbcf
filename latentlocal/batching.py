"""Continuous batching: independent token-decoding chains share every ``llama_decode`` step.

Each chain of thought (its own prompt, greedy or sampled, its own stop rules) holds one sequence
of one context. A :meth:`StepBatcher.step` samples the next token of every chain from the logits
of the previous decode and feeds all of them in one batch, the way self-consistency decodes its
samples together; decoding ``k`` sequences in one step costs far less than ``k`` steps on a CPU.
Chains join (:meth:`StepBatcher.add`) and leave (finished or cancelled) between steps, so a server
adds a request while others decode and a benchmark keeps the context full of problems.

A chain is cot's: the same stream (``_Stream``: stop rules, thinking span), sampling and
Summary as ``run_cot``, which decodes one sequence alone; only the batch around it differs.

KV cells: one context's cache (``kv_unified``) holds every sequence, so a chain is admitted only
when its prompt plus its token budget fit beside what the running chains may still use
(:meth:`StepBatcher.fits`); a running chain can then never find the context full.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from latentlocal.engine import Engine
from latentlocal.events import Event, PhaseChange, Summary, Token
from latentlocal.methods.cot import CotConfig, _Stream
from latentlocal.phases import Budget, fit_context, fitted
from latentlocal.sampling import sample_token


@dataclass
class _Chain:
    key: Hashable
    seq: int
    cfg: CotConfig
    stream: _Stream
    rng: np.random.Generator
    cancel: threading.Event | None
    prompt_len: int
    cells: int          # KV cells this chain may occupy: prompt + fitted budget
    t0: float
    logits: np.ndarray | None  # a private copy while the engine's rows belong to another decode
    ended: bool = False        # StepBatcher.cancel: this chain only (``cancel`` may be shared)


class StepBatcher:
    """Chains of thought decoded together, one token each per step, in one engine's sequences.

    The batcher owns the sequences it uses (``0 .. sequences - 1``); nothing else may decode in
    the engine while it has chains. Events come back tagged with the key passed to :meth:`add`;
    every chain ends with the same ``Summary`` a lone ``run_cot`` gives.
    """

    def __init__(self, engine: Engine, sequences: int | None = None) -> None:
        self.engine = engine
        self.capacity = max(1, min(sequences or engine.n_seq_max, engine.n_seq_max))
        self._chains: dict[int, _Chain] = {}   # seq -> chain, in admission order
        self._row: dict[int, int] = {}         # seq -> its logits row in the last decode_step
        self._reserved = 0

    # admission --------------------------------------------------------------------------------
    @property
    def active(self) -> int:
        return len(self._chains)

    def keys(self) -> list[Hashable]:
        return [c.key for c in self._chains.values()]

    def budget_for(self, prompt_len: int, cfg: CotConfig) -> Budget:
        """The token budget a chain with this prompt gets (cut to what the context holds alone);
        raises ``LatentLocalError`` when the prompt leaves no room in the context at all."""
        return fit_context(cfg.budget, self.engine.n_ctx, prompt_len)[0]

    def fits(self, prompt_len: int, cfg: CotConfig, count: int = 1) -> bool:
        """Whether ``count`` chains of this prompt can join now: free sequences, and KV cells for
        their prompts and budgets beside the running chains' reservations."""
        if len(self._chains) + count > self.capacity:
            return False
        need = count * (prompt_len + self.budget_for(prompt_len, cfg).max_tokens)
        return self._reserved + need <= self.engine.n_ctx

    def add(
        self,
        key: Hashable,
        prompt: Sequence[int],
        cfg: CotConfig,
        cancel: threading.Event | None = None,
        seed: int | None = None,
    ) -> list[tuple[Hashable, Event]]:
        """Decode ``prompt`` into a free sequence and start a chain; returns its first events
        (a ``Notice`` when its budget was cut to the context). ``seed`` overrides ``cfg.seed``."""
        t0 = time.perf_counter()
        engine = self.engine
        seq = next(s for s in range(self.capacity) if s not in self._chains)
        budget, notes = fitted(cfg.budget, engine.n_ctx, len(prompt))
        # the prompt's decode replaces the logits the running chains have not sampled from yet
        for s, ch in self._chains.items():
            if ch.logits is None:
                ch.logits = np.array(engine.logits(self._row[s]), copy=True)
        engine.seq_remove(seq)
        engine.decode_tokens(list(prompt), seq=seq)
        marker = cfg.answer_marker if cfg.stop_after_answer else None
        s = seed if seed is not None else (engine.seed if cfg.seed is None else cfg.seed)
        ch = _Chain(key=key, seq=seq, cfg=cfg, stream=_Stream(engine, cfg.stop, marker, budget),
                    rng=np.random.default_rng(s), cancel=cancel, prompt_len=len(prompt),
                    cells=len(prompt) + budget.max_tokens, t0=t0,
                    logits=np.array(engine.logits(-1), copy=True))
        self._chains[seq] = ch
        self._reserved += ch.cells
        return [(key, n) for n in notes]

    def cancel(self, key: Hashable) -> None:
        """End the chain ``key`` (its Summary comes with the next step, finish reason
        ``cancelled``), leaving any other chain that shares its cancel event running."""
        for ch in self._chains.values():
            if ch.key == key:
                ch.ended = True

    # decoding ---------------------------------------------------------------------------------
    def step(self) -> list[tuple[Hashable, Event]]:
        """One token for every chain, fed in one ``llama_decode``; the events it produced."""
        engine = self.engine
        out: list[tuple[Hashable, Event]] = []
        feed_seqs: list[int] = []
        feed_toks: list[int] = []
        for seq, ch in list(self._chains.items()):
            st = ch.stream
            if ch.ended or (ch.cancel is not None and ch.cancel.is_set()):
                st.finish = "cancelled"
            else:
                lg = ch.logits if ch.logits is not None else engine.logits(self._row[seq])
                ch.logits = None
                sampled, prob = sample_token(lg, ch.cfg.sampling, ch.rng)
                tok = st.choose(sampled)
                piece = st.push(tok)
                out.append((ch.key, Token(text=piece, token_id=tok, phase=st.token_phase,
                                          prob=prob if tok == sampled else None)))
                if st.closed:
                    out.append((ch.key, PhaseChange(phase="answer", reason=st.closed)))
                if st.finish is None:
                    feed_seqs.append(seq)
                    feed_toks.append(tok)
                    continue
            out.append((ch.key, self._finish(ch)))
        if feed_seqs:
            engine.decode_step(feed_seqs, tokens=feed_toks)
            self._row = {s: i for i, s in enumerate(feed_seqs)}
        return out

    def _finish(self, ch: _Chain) -> Summary:
        del self._chains[ch.seq]
        self._reserved -= ch.cells
        self.engine.seq_remove(ch.seq)
        st = ch.stream
        return Summary(
            method="cot" if ch.cfg.sampling.greedy else "cot-sampled",
            answer=st.answer,
            text=st.text,
            generated_tokens=len(st.tokens),
            elapsed_s=time.perf_counter() - ch.t0,
            finish_reason=st.finish or "cancelled",
            extra={"prompt_tokens": ch.prompt_len, **st.extra()},
        )

    def close(self) -> None:
        """Drop every chain without a Summary (the engine is about to be used otherwise)."""
        for seq in list(self._chains):
            self.engine.seq_remove(seq)
        self._chains.clear()
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
