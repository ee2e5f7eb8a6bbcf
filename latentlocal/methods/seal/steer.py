"""SEAL steered decoding: the layer mapping and alpha * S added at thought delimiters."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latentlocal.controlvector import ControlVector, import_gguf, read_manifest
from latentlocal.engine import Engine, Model
from latentlocal.errors import LatentLocalError
from latentlocal.events import Event, PhaseChange, Summary, Thought, Token
from latentlocal.markers import MarkerWatch
from latentlocal.methods import settings
from latentlocal.methods.cot import _Stream, prompt_tokens
from latentlocal.methods.seal.thoughts import ThoughtSpan, ThoughtSplitter, count_labels
from latentlocal.phases import DEFAULT_ANSWER_RESERVE, fitted
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
        None, help="steering strength",
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


def run_seal(
    engine: Engine,
    question: str,
    cfg: SealConfig,
    cancel: threading.Event | None = None,
    prompt: Sequence[int] | None = None,
) -> Iterator[Event]:
    """Decode one answer with SEAL steering, streamed token by token.

    Yields ``Token`` (phase think/answer), a ``Thought`` each time a thought of the reasoning span
    ends (``steered``: the thought was generated after a steered delimiter, or always-on),
    ``PhaseChange`` when the reasoning span ends, and a ``Summary`` (method ``"seal"``).

    Toggling: the vector is set right before a delimiter token is fed (one token per decode) and
    cleared before the next non-delimiter token, so exactly the delimiter positions are steered;
    a run of delimiters keeps it set. Each change costs one scheduler re-reserve in llama.cpp.
    """
    t0 = time.perf_counter()
    check_vector(engine, cfg.directions, cfg.model_hint)
    directions = {int(k): np.asarray(v, dtype=np.float32) for k, v in cfg.directions.items()}
    model = engine.model
    fmt = reasoning_format(model)
    rng = np.random.default_rng(engine.seed if cfg.seed is None else cfg.seed)
    toks = list(prompt) if prompt is not None else prompt_tokens(engine, question, cfg.system)
    engine.clear()
    engine.set_control_vector(None)
    changes0 = engine.cvec_changes
    watch = None if fmt.native else MarkerWatch(cfg.answer_marker)
    splitter = ThoughtSplitter()
    thoughts: list[ThoughtSpan] = []
    steered_flags: list[bool] = []
    steered_positions: list[int] = []
    opened_by_steered = cfg.always_on
    phase = "think"
    reasoning_tokens = 0
    try:
        if cfg.always_on:
            engine.set_control_vector(directions, cfg.scale)
        engine.decode_tokens(toks)
        budget, notes = fitted(cfg.budget, engine.n_ctx, len(toks))
        yield from notes
        st = _Stream(engine, cfg.stop, cfg.answer_marker if cfg.stop_after_answer else None,
                     budget, fmt)
        for tok, piece, prob in st.steps(cfg.sampling, rng, cancel):
            delim = False
            ended: list[ThoughtSpan] = []
            if phase == "think":
                end_here = st.closed is not None if fmt.native else watch.push(piece)
                if end_here:
                    tail = None
                    if not fmt.native:
                        text = splitter.current_text + piece
                        tail = text[: text.lower().rfind(cfg.answer_marker.lower())]
                    last = splitter.finish(tail)
                    ended += [last] if last is not None else []
                elif not model.is_eog(tok):  # an end-of-generation token's text is no thought's
                    reasoning_tokens += 1
                    delim, closed = splitter.push(model.piece(tok))
                    ended += [closed] if closed is not None else []
                yield Token(text=piece, token_id=tok, phase="think", prob=prob)
                for span in ended:
                    thoughts.append(span)
                    steered_flags.append(opened_by_steered)
                    yield Thought(index=span.index, label=span.label, text=span.text,
                                  steered=opened_by_steered)
                if end_here:
                    phase = "answer"
                    yield PhaseChange(phase="answer", reason=st.closed or "marker")
            else:
                yield Token(text=piece, token_id=tok, phase="answer", prob=prob)
            if st.finish is not None:
                break
            if not cfg.always_on:
                if delim != engine.control_vector_active:
                    engine.set_control_vector(directions if delim else None, cfg.scale)
                if delim:
                    steered_positions.append(len(st.tokens) - 1)
                    opened_by_steered = True
            # resuming st.steps feeds tok, steered or not as set just above
    finally:
        engine.set_control_vector(None)
    if phase == "think":
        last = splitter.finish()
        if last is not None:
            thoughts.append(last)
            steered_flags.append(opened_by_steered)
            yield Thought(index=last.index, label=last.label, text=last.text, steered=opened_by_steered)
    counts = count_labels(thoughts)
    yield Summary(
        method="seal",
        answer=st.answer,
        text=st.text,
        generated_tokens=len(st.tokens),
        elapsed_s=time.perf_counter() - t0,
        finish_reason=st.finish or "done",
        extra={
            "prompt_tokens": len(toks),
            **st.extra(),
            "reasoning_tokens": reasoning_tokens,
            "thoughts": counts,
            "steered_thoughts": count_labels(t for t, s in zip(thoughts, steered_flags) if s),
            "cvec_changes": engine.cvec_changes - changes0,
            "mode": "always-on" if cfg.always_on else "delimiter",
            "alpha": cfg.scale,
            "layers": sorted(directions),
            "steered_positions": steered_positions,
        },
    )


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
