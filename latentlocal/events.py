"""Typed, frozen events that every method yields.

A method is a generator of these; the CLI prints them, the TUI renders them, the benchmark
aggregates them. ``to_dict`` gives the JSON form used by ``--json`` (one object per line).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Union

Phase = Literal["think", "answer"]
Mode = Literal["discrete", "soft"]


@dataclass(frozen=True)
class Token:
    """One generated position. In soft mode ``text``/``token_id`` are the concept's top-1."""

    text: str
    token_id: int
    seq: int = 0
    phase: Phase = "answer"
    mode: Mode = "discrete"
    entropy: float | None = None
    prob: float | None = None
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class PhaseChange:
    """Thinking ended (or answering started); ``reason`` says why: marker, cold_stop, budget, eos."""

    phase: Phase
    reason: str
    seq: int = 0


@dataclass(frozen=True)
class ColdStop:
    """Cold Stop fired: entropy stayed below ``threshold`` for ``patience`` consecutive steps."""

    step: int
    threshold: float
    patience: int


@dataclass(frozen=True)
class Thought:
    """A thought boundary inside the reasoning span (SEAL): the thought that just ended."""

    index: int
    label: Literal["execution", "reflection", "transition"]
    text: str
    steered: bool = False
    seq: int = 0


@dataclass(frozen=True)
class SequenceDone:
    """One of several parallel sequences finished (self-consistency sample, search candidate)."""

    seq: int
    text: str
    answer: str | None
    generated_tokens: int
    finish_reason: str


@dataclass(frozen=True)
class CandidateResult:
    """A Soft Reasoning candidate after scoring."""

    index: int
    answer: str | None
    text: str
    generated_tokens: int
    verifier: float
    coherence: float
    reward: float
    reused: bool = False


@dataclass(frozen=True)
class Round:
    """One optimiser round of Soft Reasoning."""

    index: int
    candidates: tuple[CandidateResult, ...]
    verifier_answer: str | None
    best_reward: float
    predicted_mean: tuple[float, ...] = ()
    predicted_std: tuple[float, ...] = ()


@dataclass(frozen=True)
class Notice:
    """Something the user should know about a run that is not an error (also logged as a warning)."""

    kind: str
    message: str


@dataclass(frozen=True)
class Progress:
    """Progress of a long job (vector extraction, benchmark): ``done`` of ``total``."""

    done: int
    total: int
    what: str = ""


@dataclass(frozen=True)
class Summary:
    """Always the last event of a run."""

    method: str
    answer: str | None
    text: str
    generated_tokens: int
    elapsed_s: float
    finish_reason: str
    extra: dict[str, Any] = field(default_factory=dict)
    # the method's settings by option name, as the registry built it (empty for a direct call)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0


Event = Union[Token, PhaseChange, ColdStop, Thought, SequenceDone, Round, Notice, Progress, Summary]


def to_dict(event: Event) -> dict[str, Any]:
    """JSON-ready form of an event, with a ``type`` key naming it in snake case."""
    name = type(event).__name__
    kind = "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
    out: dict[str, Any] = {"type": kind}
    out.update(dataclasses.asdict(event))
    if isinstance(event, Summary):
        out["tokens_per_s"] = event.tokens_per_s
        extra = out.pop("extra")
        out.update(extra)
    return out
