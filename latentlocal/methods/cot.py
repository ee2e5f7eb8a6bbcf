"""Baselines: chain-of-thought decoding (greedy or sampled) and self-consistency.

Every other method is measured against these, so they share the prompt, the stop rules and the
answer extraction with the methods.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from latentlocal.answers import majority_vote
from latentlocal.engine import Engine, TextStream
from latentlocal.events import Event, PhaseChange, SequenceDone, Summary, Token
from latentlocal.markers import AnswerLineWatch
from latentlocal.methods import settings
from latentlocal.methods.chain import Feed, run_alone
from latentlocal.methods.spec import MethodSpec
from latentlocal.phases import DEFAULT_ANSWER_RESERVE, Budget, ThinkTracker, final_answer, fitted
from latentlocal.prompts import ANSWER_MARKER, COT_SYSTEM, ReasoningFormat, build_prompt, reasoning_format
from latentlocal.sampling import Sampled, SamplingConfig, sample_token


@dataclass(frozen=True)
class CotConfig(Sampled, settings.Budgeted):
    # chains decoded; more than one is self-consistency (the registry runs sc with sc's defaults)
    samples: int = settings.setting(1, help="chains decoded; more than 1 runs self-consistency (sc)",
                                    bounds=settings.at_least(1))
    max_tokens: int = settings.max_tokens(512)
    temperature: float = settings.temperature(0.0)
    top_k: int = settings.top_k(40)
    top_p: float = settings.top_p(0.95)
    min_p: float = settings.min_p(0.05)
    seed: int | None = settings.seed()
    answer_reserve: int = settings.answer_reserve(DEFAULT_ANSWER_RESERVE)  # thinking models: answer room
    stop: tuple[str, ...] = ()
    stop_after_answer: bool = True
    system: str | None = COT_SYSTEM
    answer_marker: str = ANSWER_MARKER


@dataclass(frozen=True)
class SelfConsistencyConfig(Sampled, settings.Budgeted):
    samples: int = settings.setting(5, help="self-consistency chains", bounds=settings.at_least(1))
    max_tokens: int = settings.max_tokens(512)
    temperature: float = settings.temperature(0.8)
    top_k: int = settings.top_k(40)
    top_p: float = settings.top_p(0.95)
    min_p: float = settings.min_p(0.05)
    seed: int | None = settings.seed()
    answer_reserve: int = settings.answer_reserve(DEFAULT_ANSWER_RESERVE)
    stop: tuple[str, ...] = ()
    stop_after_answer: bool = True
    system: str | None = COT_SYSTEM
    answer_marker: str = ANSWER_MARKER


def prompt_tokens(engine: Engine, question: str, system: str | None) -> list[int]:
    return engine.model.tokenize(build_prompt(engine.model, question, system))


@dataclass
class _Stream:
    """Per-sequence decoding state: text so far, the thinking span and the stop rules.

    Every discrete decoder (cot, sc, SEAL, SEAL extraction, Soft Reasoning's candidates) goes
    through this, so they all split thinking from the answer, force ``</think>`` and stop on the
    answer line by the same rules: the answer line counts only outside the thinking span.
    """

    engine: Engine
    stop: Sequence[str]
    marker: str | None
    budget: Budget
    fmt: ReasoningFormat | None = None
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    finish: str | None = None

    def __post_init__(self) -> None:
        model = self.engine.model
        if self.fmt is None:
            self.fmt = reasoning_format(model)
        self.think = ThinkTracker(self.fmt, self.budget, model.is_eog)
        self._out = TextStream(model)
        self._answer = AnswerLineWatch(self.marker) if self.marker else None
        self.token_phase = "answer"   # phase of the last pushed token
        self.closed: str | None = None  # why the last pushed token closed thinking, if it did
        self._answer_from = 0  # where the answer's text starts (after </think> on thinking models)

    def choose(self, tok: int) -> int:
        """The token to feed for a sampled ``tok`` (``</think>`` when thinking must end)."""
        return self.think.choose(tok)

    def push(self, tok: int) -> str:
        """Record one fed token; sets ``finish`` when a stop rule fires. Returns its text."""
        self.tokens.append(tok)
        thinking = self.think.native and self.think.thinking
        self.token_phase = "think" if thinking else "answer"
        self.closed = self.think.push(tok)
        if self.engine.model.is_eog(tok):
            self.finish = "eos"
            return ""
        piece = self._out.push(tok)
        self.text += piece
        if self.closed:
            self._answer_from = len(self.text)
        # stop strings end the answer only, as the server cuts only the reply's content at them:
        # one met while thinking ended the run with nothing answered
        window = self.text[max(self._answer_from, len(self.text) - len(piece) - max(map(len, self.stop), default=0)):]
        if self.stop and not thinking and any(s in window for s in self.stop):
            self.finish = "stop"
        elif self._answer is not None and not thinking and self._answer.push(piece):
            self.finish = "answer"
        elif len(self.tokens) >= self.budget.max_tokens:
            self.finish = "length"
        return piece

    def steps(
        self,
        sampling: SamplingConfig,
        rng: np.random.Generator,
        cancel: threading.Event | None = None,
        feed: Callable[[int], None] | None = None,
    ) -> Iterator[tuple[int, str, float | None]]:
        """The one-sequence discrete decoding loop (cot, SEAL, SEAL extraction).

        Each step samples from the last logits, picks the token to feed (``choose``), records it
        (``push``) and yields ``(token, text, prob)`` (prob None when the stream replaced the
        sampled token); when the caller resumes and no stop rule has fired (the caller may set
        ``finish`` too), the token is fed: ``feed(token)``, or one decode. A set ``cancel``
        ends it before the next step with ``finish = "cancelled"``.
        """
        while self.finish is None:
            if cancel is not None and cancel.is_set():
                self.finish = "cancelled"
                return
            sampled, prob = sample_token(self.engine.logits(-1), sampling, rng)
            tok = self.choose(sampled)
            piece = self.push(tok)
            yield tok, piece, (prob if tok == sampled else None)
            if self.finish is None:
                if feed is None:
                    self.engine.decode_tokens([tok])
                else:
                    feed(tok)

    @property
    def answer(self) -> str | None:
        return final_answer(self.text, self.fmt)  # type: ignore[arg-type]

    def extra(self) -> dict[str, object]:
        return self.think.summary(len(self.tokens))


class CotChain:
    """One chain of thought as steps (:mod:`latentlocal.methods.chain`): sample from the last
    logits, pick the token to feed (``_Stream.choose``), record it. ``run_cot`` runs one alone;
    ``latentlocal.batching.StepBatcher`` runs many side by side."""

    wants_logits = True

    def __init__(
        self,
        engine: Engine,
        cfg: CotConfig,
        prompt: Sequence[int],
        seed: int | None = None,
    ) -> None:
        self.t0 = time.perf_counter()
        self.cfg = cfg
        self.prompt = list(prompt)
        s = seed if seed is not None else (engine.seed if cfg.seed is None else cfg.seed)
        self.rng = np.random.default_rng(s)
        budget, self.notes = fitted(cfg.budget, engine.n_ctx, len(self.prompt))
        marker = cfg.answer_marker if cfg.stop_after_answer else None
        self.stream = _Stream(engine, cfg.stop, marker, budget)
        self.cells = len(self.prompt) + budget.max_tokens
        # what its Summary records: the server's cot chains (not built by the registry) said nothing
        self.settings: dict[str, object] = settings.record(cfg)

    def step(self, logits: np.ndarray | None) -> tuple[list[Event], Feed | None]:
        st = self.stream
        sampled, prob = sample_token(logits, self.cfg.sampling, self.rng)
        tok = st.choose(sampled)
        piece = st.push(tok)
        events: list[Event] = [Token(text=piece, token_id=tok, phase=st.token_phase,
                                     prob=prob if tok == sampled else None)]
        if st.closed:
            events.append(PhaseChange(phase="answer", reason=st.closed))
        return events, (Feed((tok,)) if st.finish is None else None)

    def cancel(self) -> None:
        if self.stream.finish is None:
            self.stream.finish = "cancelled"

    def summary(self) -> Summary:
        st = self.stream
        return Summary(
            method="cot" if self.cfg.sampling.greedy else "cot-sampled",
            answer=st.answer,
            text=st.text,
            generated_tokens=len(st.tokens),
            elapsed_s=time.perf_counter() - self.t0,
            finish_reason=st.finish or "cancelled",
            extra={"prompt_tokens": len(self.prompt), **st.extra()},
            settings=dict(self.settings),
        )


def cot_chain(engine: Engine, question: str, cfg: CotConfig) -> CotChain:
    return CotChain(engine, cfg, prompt_tokens(engine, question, cfg.system))


def run_cot(
    engine: Engine,
    question: str,
    cfg: CotConfig = CotConfig(),
    cancel: threading.Event | None = None,
    prompt: Sequence[int] | None = None,
) -> Iterator[Event]:
    """Chain-of-thought decoding of one answer, streamed token by token."""
    toks = list(prompt) if prompt is not None else prompt_tokens(engine, question, cfg.system)
    yield from run_alone(engine, CotChain(engine, cfg, toks), cancel)


def run_self_consistency(
    engine: Engine,
    question: str,
    cfg: SelfConsistencyConfig = SelfConsistencyConfig(),
    cancel: threading.Event | None = None,
) -> Iterator[Event]:
    """``samples`` sampled chains decoded together over one shared prompt; majority vote."""
    t0 = time.perf_counter()
    n = cfg.samples
    if n < 1:
        raise ValueError("self-consistency needs at least one sample")
    if n > engine.n_seq_max:
        from latentlocal.errors import LatentLocalError

        raise LatentLocalError(
            f"{n} samples need {n} parallel sequences, this engine holds {engine.n_seq_max}; "
            "pass fewer --samples or a larger --parallel"
        )
    rng = np.random.default_rng(engine.seed if cfg.seed is None else cfg.seed)
    toks = prompt_tokens(engine, question, cfg.system)
    engine.clear()
    engine.decode_tokens(toks, seq=0)
    for s in range(1, n):
        engine.seq_copy(0, s)
    marker = cfg.answer_marker if cfg.stop_after_answer else None
    fmt = reasoning_format(engine.model)
    budget, notes = fitted(cfg.budget, engine.n_ctx, len(toks), sequences=n)
    yield from notes
    streams = [_Stream(engine, cfg.stop, marker, budget, fmt) for _ in range(n)]
    first = np.array(engine.logits(-1), copy=True)
    row_of = {s: 0 for s in range(n)}  # every sequence starts from the prompt's logits
    logits_src = {0: first}
    active = list(range(n))
    done: list[SequenceDone] = []
    cancelled = False
    while active:
        if cancel is not None and cancel.is_set():
            cancelled = True
            break
        feed_seqs, feed_toks = [], []
        for s in active:
            lg = logits_src[row_of[s]] if logits_src else engine.logits(row_of[s])
            sampled, prob = sample_token(lg, cfg.sampling, rng)
            st = streams[s]
            tok = st.choose(sampled)
            piece = st.push(tok)
            yield Token(text=piece, token_id=tok, seq=s, phase=st.token_phase,
                        prob=prob if tok == sampled else None)
            if st.closed:
                yield PhaseChange(phase="answer", reason=st.closed, seq=s)
            if st.finish is None:
                feed_seqs.append(s)
                feed_toks.append(tok)
            else:
                ev = SequenceDone(s, st.text, st.answer, len(st.tokens), st.finish)
                done.append(ev)
                yield ev
        active = feed_seqs
        if active:
            engine.decode_step(feed_seqs, tokens=feed_toks)
            row_of = {s: i for i, s in enumerate(feed_seqs)}
            logits_src = {}
    if cancelled:
        for s in active:
            st = streams[s]
            st.finish = "cancelled"
    answers = [st.answer for st in streams]
    final = majority_vote(answers)
    total = sum(len(st.tokens) for st in streams)
    yield Summary(
        method="self-consistency",
        answer=final,
        text=next((st.text for st, a in zip(streams, answers) if a == final and final is not None),
                  streams[0].text),
        generated_tokens=total,
        elapsed_s=time.perf_counter() - t0,
        finish_reason="cancelled" if cancelled else "done",
        extra={"samples": n, "answers": answers, "prompt_tokens": len(toks),
               **({"thinking_tokens": [st.think.think_tokens for st in streams],
                   "think_end": [st.think.end_reason for st in streams]} if fmt.native else {})},
    )


# ---------------------------------------------------------------------------------------------
# registry entries
# ---------------------------------------------------------------------------------------------


METHODS: list[MethodSpec] = [
    MethodSpec("cot", "CoT (greedy)", "chain of thought, greedy unless --temperature > 0", CotConfig,
               lambda cfg: lambda engine, q, cancel=None: run_cot(engine, q, cfg, cancel),
               delegate=lambda options: "sc" if options.get("samples", CotConfig.samples) > 1 else None,
               chain=lambda cfg: lambda engine, q: cot_chain(engine, q, cfg)),
    MethodSpec("sc", "Self-consistency", "self-consistency: sampled chains in parallel, majority vote",
               SelfConsistencyConfig,
               lambda cfg: lambda engine, q, cancel=None: run_self_consistency(engine, q, cfg, cancel),
               aliases=("self-consistency",),
               unbatched="it decodes its samples as sequences of one context already"),
]
