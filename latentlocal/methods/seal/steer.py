"""SEAL steered decoding: the layer mapping and alpha * S added at thought delimiters."""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from latentlocal.controlvector import ControlVector, import_gguf, read_manifest
from latentlocal.engine import Engine, Model
from latentlocal.errors import LatentLocalError
from latentlocal.events import Event, PhaseChange, Summary, Thought, Token
from latentlocal.markers import MarkerWatch
from latentlocal.methods import settings
from latentlocal.methods.chain import Feed, Steering, apply_steering, run_alone
from latentlocal.methods.cot import CotChain, CotConfig, prompt_tokens
from latentlocal.methods.seal.thoughts import ThoughtSpan, ThoughtSplitter, count_labels
from latentlocal.phases import DEFAULT_ANSWER_RESERVE
from latentlocal.prompts import ANSWER_MARKER, COT_SYSTEM, reasoning_format
from latentlocal.sampling import Sampled


PAPER_LAYER = 20  # Hugging Face hidden_states index used by the paper
PAPER_BLOCKS = 28  # blocks of DeepSeek-R1-Distill-Qwen-1.5B / 7B


def default_layer(n_layer: int) -> int:
    """The paper's relative depth as a 0-based block (= ``direction.N`` = ``l_out-N``).

    ``hidden_states[20]`` of a 28-block model is the output of block 19, so the block is
    ``round(20 / 28 * n_layer) - 1``, kept inside the steerable blocks 1..n_layer-1
    (28 -> 19, 30 -> 20 for SmolLM2-135M, 18 -> 12 for Gemma 3 270M).
    """
    if n_layer < 2:
        raise LatentLocalError(f"a model with {n_layer} block(s) cannot be steered (block 0 cannot be)")
    return min(n_layer - 1, max(1, round(PAPER_LAYER * n_layer / PAPER_BLOCKS) - 1))


DEFAULT_ALPHA = 1.0  # the steering strength when none is given and no manifest recommends one
# |alpha| far beyond SEAL's 1 adds more than the hidden state holds: 1e30 made the logits NaN
ALPHA_BOUNDS = settings.interval(-100.0, 100.0)


@dataclass(frozen=True)
class SealConfig(Sampled, settings.Budgeted):
    """``directions`` maps block -> S (as read from a file); ``alpha`` scales it.

    In ``always_on`` mode the vector is set for the whole generation, prompt included, scaled by
    ``alpha`` (use the manifest's ``recommended_scale``); otherwise it is set only while a
    delimiter inside the reasoning span is fed. Built from options (the registry), ``directions``
    is empty and ``vector`` names the file they are read from when the model is known.
    """

    directions: Mapping[int, np.ndarray] = field(default_factory=dict)
    vector: str | None = settings.setting(
        None, path=True, help="SEAL control vector (.gguf from `latentlocal seal extract`)",
        shown="the shipped or saved vector made for the loaded model, if there is one")
    alpha: float | None = settings.setting(
        None, help="steering strength", bounds=ALPHA_BOUNDS,
        why="(SEAL steers at 1; far beyond, the vector swamps the hidden state and the logits overflow)",
        shown=f"{DEFAULT_ALPHA:g}; with --always-on the manifest's recommended scale")
    always_on: bool = settings.setting(
        False, help="apply the vector to every token, as llama.cpp apps do with --control-vector")
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
    model_hint: str | None = None  # checked against the model's architecture when set

    @property
    def scale(self) -> float:
        """The steering strength used: ``alpha``, else :data:`DEFAULT_ALPHA`."""
        return DEFAULT_ALPHA if self.alpha is None else self.alpha

    @functools.cached_property
    def steering(self) -> Steering:
        """``directions`` at ``scale``, one object per config: the chains of one config share it,
        so a batch decodes their steered feeds together."""
        return Steering({int(k): np.asarray(v, dtype=np.float32) for k, v in self.directions.items()},
                        self.scale)


def check_vector(engine: Engine, directions: Mapping[int, np.ndarray], model_hint: str | None) -> None:
    """Refuse a vector that does not fit the loaded model, naming what differs."""
    m = engine.model
    if not directions:
        raise LatentLocalError("the SEAL vector has no directions")
    if model_hint and model_hint != m.arch:
        raise LatentLocalError(
            f"the SEAL vector was made for a '{model_hint}' model but {m.name} is '{m.arch}'; "
            "extract one for this model with `latentlocal seal extract`"
        )
    for il, v in directions.items():
        width = np.asarray(v).reshape(-1).shape[0]
        if width != m.n_embd:
            raise LatentLocalError(
                f"the SEAL vector is {width} wide but {m.name} has n_embd {m.n_embd}; it was made "
                "for another model: extract one for this model with `latentlocal seal extract`"
            )
        if not 1 <= il < m.n_layer:
            raise LatentLocalError(
                f"the SEAL vector steers block {il} but {m.name} can be steered at blocks "
                f"1..{m.n_layer - 1}; extract one for this model"
            )


class SealChain:
    """One SEAL decoding as steps (:mod:`latentlocal.methods.chain`): cot's step (sampling, the
    stop rules, ``</think>``), SEAL's thought bookkeeping, and the steering of each feed: a
    delimiter inside the reasoning span is fed under the vector, every other token without it
    (always-on: every token under it, and the caller sets it for the prompt). Alone
    (:func:`run_seal`) the engine's vector is toggled around exactly the delimiter decodes; in a
    ``StepBatcher`` the steered feeds of a step are decoded apart from the others, since llama.cpp
    adds a control vector to every row of a decode."""

    wants_logits = True

    def __init__(self, engine: Engine, cfg: SealConfig, prompt: Sequence[int]) -> None:
        check_vector(engine, cfg.directions, cfg.model_hint)
        self.t0 = time.perf_counter()
        self.cfg = cfg
        self.model = engine.model
        self.fmt = reasoning_format(self.model)
        self.steering = cfg.steering
        cot = CotConfig(**{f.name: getattr(cfg, f.name) for f in fields(CotConfig)
                           if f.name != "samples"})
        self._cot = CotChain(engine, cot, prompt)
        self.prompt = self._cot.prompt
        self.cells = self._cot.cells
        self.notes = self._cot.notes
        self.settings: dict[str, Any] = {}
        self._watch = None if self.fmt.native else MarkerWatch(cfg.answer_marker)
        self._splitter = ThoughtSplitter()
        self._thoughts: list[ThoughtSpan] = []
        self._steered_flags: list[bool] = []
        self._steered_positions: list[int] = []
        self._opened_by_steered = cfg.always_on
        self._phase = "think"
        self._reasoning_tokens = 0
        # control-vector changes this chain's feeds ask for, the final clear included (alone,
        # the engine's count; batched, the engine's changes are shared by the step's chains)
        self._on = cfg.always_on
        self._changes = int(cfg.always_on)
        self.unsent: list[Event] = []  # the thought a cancel closed: run_seal yields it

    def _thought(self, span: ThoughtSpan) -> Thought:
        self._thoughts.append(span)
        self._steered_flags.append(self._opened_by_steered)
        return Thought(index=span.index, label=span.label, text=span.text, steered=self._opened_by_steered)

    def _close_thoughts(self) -> list[Event]:
        """The thought still open when the run ends inside the reasoning span."""
        if self._phase != "think":
            return []
        self._phase = "ended"
        last = self._splitter.finish()
        return [self._thought(last)] if last is not None else []

    def step(self, logits: np.ndarray | None) -> tuple[list[Event], Feed | None]:
        cot_events, feed = self._cot.step(logits)
        token = cot_events[0]
        assert isinstance(token, Token)
        st = self._cot.stream
        tok, piece = token.token_id, token.text
        events: list[Event] = []
        delim = False
        if self._phase == "think":
            ended: list[ThoughtSpan] = []
            end_here = st.closed is not None if self.fmt.native else self._watch.push(piece)
            if end_here:
                tail = None
                if not self.fmt.native:
                    text = self._splitter.current_text + piece
                    tail = text[: text.lower().rfind(self.cfg.answer_marker.lower())]
                last = self._splitter.finish(tail)
                ended += [last] if last is not None else []
            elif not self.model.is_eog(tok):  # an end-of-generation token's text is no thought's
                self._reasoning_tokens += 1
                delim, closed = self._splitter.push(self.model.piece(tok))
                ended += [closed] if closed is not None else []
            events.append(Token(text=piece, token_id=tok, phase="think", prob=token.prob))
            events += [self._thought(span) for span in ended]
            if end_here:
                self._phase = "answer"
                events.append(PhaseChange(phase="answer", reason=st.closed or "marker"))
        else:
            events.append(Token(text=piece, token_id=tok, phase="answer", prob=token.prob))
        if feed is None:
            return events + self._close_thoughts(), None
        steer = self.cfg.always_on or delim
        if delim and not self.cfg.always_on:
            self._steered_positions.append(len(st.tokens) - 1)
            self._opened_by_steered = True
        if steer != self._on:
            self._on = steer
            self._changes += 1
        return events, Feed(feed.tokens, steering=self.steering if steer else None)

    def cancel(self) -> None:
        self._cot.cancel()
        self.unsent = self._close_thoughts()

    def summary(self) -> Summary:
        self._close_thoughts()
        st = self._cot.stream
        return Summary(
            method="seal",
            answer=st.answer,
            text=st.text,
            generated_tokens=len(st.tokens),
            elapsed_s=time.perf_counter() - self.t0,
            finish_reason=st.finish or "done",
            extra={
                "prompt_tokens": len(self.prompt),
                **st.extra(),
                "reasoning_tokens": self._reasoning_tokens,
                "thoughts": count_labels(self._thoughts),
                "steered_thoughts": count_labels(t for t, s in zip(self._thoughts, self._steered_flags) if s),
                "cvec_changes": self._changes + int(self._on),
                "mode": "always-on" if self.cfg.always_on else "delimiter",
                "alpha": self.cfg.scale,
                "layers": sorted(self.steering.directions),
                "steered_positions": list(self._steered_positions),
            },
            settings=dict(self.settings),
        )


def run_seal(
    engine: Engine,
    question: str,
    cfg: SealConfig,
    cancel: threading.Event | None = None,
    prompt: Sequence[int] | None = None,
) -> Iterator[Event]:
    """Decode one answer with SEAL steering, streamed token by token (a :class:`SealChain` alone).

    Yields ``Token`` (phase think/answer), a ``Thought`` each time a thought of the reasoning span
    ends (``steered``: the thought was generated after a steered delimiter, or always-on),
    ``PhaseChange`` when the reasoning span ends, and a ``Summary`` (method ``"seal"``).

    Toggling: the vector is set right before a delimiter token is fed (one token per decode) and
    cleared before the next non-delimiter token, so exactly the delimiter positions are steered;
    a run of delimiters keeps it set. Each change costs one scheduler re-reserve in llama.cpp.
    """
    toks = list(prompt) if prompt is not None else prompt_tokens(engine, question, cfg.system)
    chain = SealChain(engine, cfg, toks)
    try:
        apply_steering(engine, chain.steering if cfg.always_on else None)  # the prompt's
        for ev in run_alone(engine, chain, cancel):
            if isinstance(ev, Summary):
                yield from chain.unsent  # a cancelled run's last thought, as a finished run's
            yield ev
    finally:
        engine.set_control_vector(None)


def load_vector(
    path: str | os.PathLike[str], model: Model | None = None
) -> tuple[ControlVector, dict[str, Any] | None]:
    """Read a SEAL vector and its manifest; with ``model``, validate against it (width, layers, arch)."""
    if model is None:
        cv = import_gguf(path)
    else:
        cv = import_gguf(path, expect_n_embd=model.n_embd, expect_model_hint=model.arch,
                         expect_n_layer=model.n_layer)
    return cv, read_manifest(path)
