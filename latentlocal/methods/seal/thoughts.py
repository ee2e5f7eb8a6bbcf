"""SEAL thoughts: delimiter tokens, the paper's labels, segmentation of a reasoning span."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from latentlocal.engine import Model
from latentlocal.prompts import ANSWER_MARKER, reasoning_format


LABELS = ("execution", "reflection", "transition")
# The keyword lists of the SEAL paper's code, generate_index() in hidden_analysis.py
# (VITA-Group/SEAL; read from its fork Andwwy/SEAL at 15f9aa2, lines 38-41), copied verbatim:
# check_prefix / check_words (reflection) and switch_prefix / swicth_words (transition).
REFLECTION_START = "wait"
REFLECTION_WORDS = ("verify", "make sure", "hold on", "think again", "'s correct", "'s incorrect",
                    "let me check", "seems right")
TRANSITION_START = "alternatively"
# "think differenly" is the paper's typo, kept so that labels equal the paper's (it never matches
# "think differently"); the others need "another", so "the solution is" or "the substitution
# method" stay execution.
TRANSITION_WORDS = ("think differenly", "another way", "another approach", "another method",
                    "another solution", "another strategy", "another technique")

# the cue forced at a delimiter by --elicit cue, and the label the thought then gets
CUES = {"reflection": "Wait,", "transition": "Alternatively,"}


def label_thought(text: str) -> str:
    """The paper's rule: reflection, else transition, else execution.

    As hidden_analysis.py lines 68-72 (same fork and commit as the lists above): the thought is
    lowercased; it is a reflection when it starts with "wait" or contains one of
    REFLECTION_WORDS (substrings, no word boundaries), otherwise a transition when it starts
    with "alternatively" or contains one of TRANSITION_WORDS, otherwise execution.
    Deviations: all surrounding whitespace is stripped (the paper strips spaces, then newlines),
    and a curly apostrophe (U+2019) counts as "'" so "it’s correct" matches "'s correct"
    (the paper compares the raw text).
    """
    t = text.strip().lower().replace("\u2019", "'")
    if t.startswith(REFLECTION_START) or any(w in t for w in REFLECTION_WORDS):
        return "reflection"
    if t.startswith(TRANSITION_START) or any(w in t for w in TRANSITION_WORDS):
        return "transition"
    return "execution"


def _bytes(piece: bytes | str) -> bytes:
    return piece.encode("utf-8") if isinstance(piece, str) else piece


def is_delimiter(piece: bytes | str, before: bytes | str = b"") -> bool:
    """Whether a token ends a thought: its text contains a blank line, or completes one.

    ``before`` is the text that precedes the token inside the reasoning span (only its last
    byte matters).
    """
    p, b = _bytes(piece), _bytes(before)
    return b"\n\n" in p or (p.startswith(b"\n") and b.endswith(b"\n"))


@dataclass(frozen=True)
class ThoughtSpan:
    """One thought of a reasoning span; token indices count from the span's first token.

    ``delimiter`` is the index of the delimiter token right before the thought (None for the
    first thought); ``end`` is exclusive and includes the delimiter that closes the thought.
    """

    index: int
    text: str
    label: str
    start: int
    end: int
    delimiter: int | None
    cue: str | None = None


class ThoughtSplitter:
    """Incremental segmentation: feed the span's tokens one at a time, get thoughts as they end.

    The same code segments live generation (steering) and finished traces (extraction), so both
    see the same thoughts.
    """

    def __init__(self) -> None:
        self.thoughts: list[ThoughtSpan] = []
        self._n = 0
        self._last = b""
        self._buf = b""
        self._start = 0
        self._delim: int | None = None
        self._cue: str | None = None
        self._cue_at: int | None = None

    @property
    def n_tokens(self) -> int:
        return self._n

    @property
    def last_delimiter(self) -> int | None:
        return self._delim

    @property
    def current_text(self) -> str:
        return self._buf.decode("utf-8", errors="replace")

    def push(self, piece: bytes | str, cue: str | None = None) -> tuple[bool, ThoughtSpan | None]:
        """Add one token; ``cue`` labels the thought this token starts (forced cue).

        Returns (is the token a delimiter, the thought it closed or None).
        """
        p = _bytes(piece)
        i = self._n
        self._n += 1
        delim = is_delimiter(p, self._last)
        if p:
            self._last = p[-1:]
        if cue is not None:
            self._cue, self._cue_at = cue, i
        if not delim:
            self._buf += p
            return False, None
        # text after the token's last newline belongs to the next thought (e.g. "\n\nThe")
        cut = p.rfind(b"\n") + 1
        self._buf += p[:cut]
        closed = self._close(end=i + 1)
        self._buf = p[cut:]
        self._delim = i
        self._start = i + 1
        return True, closed

    def finish(self, tail: str | None = None) -> ThoughtSpan | None:
        """Close the last thought at the end of the span; ``tail`` replaces its text if given."""
        if tail is not None:
            self._buf = tail.encode("utf-8")
        closed = self._close(end=self._n)
        self._buf = b""
        self._start = self._n
        return closed

    def _close(self, end: int) -> ThoughtSpan | None:
        text = self._buf.decode("utf-8", errors="replace").strip()
        if not text:
            return None  # consecutive delimiters: the next thought keeps the latest one
        cue = self._cue if self._cue_at is not None and self._cue_at >= self._start else None
        span = ThoughtSpan(
            index=len(self.thoughts),
            text=text,
            label=cue or label_thought(text),
            start=self._start,
            end=end,
            delimiter=self._delim,
            cue=cue,
        )
        self.thoughts.append(span)
        self._cue, self._cue_at = None, None
        return span


def segment_thoughts(
    pieces: Sequence[bytes | str], cues: Mapping[int, str] | None = None
) -> list[ThoughtSpan]:
    """Split a reasoning span, given as token texts, into labelled thoughts.

    ``cues`` maps the index of a token that starts a forced cue to the label of its thought.
    """
    sp = ThoughtSplitter()
    cues = cues or {}
    for i, p in enumerate(pieces):
        sp.push(p, cues.get(i))
    sp.finish()
    return sp.thoughts


def text_thoughts(text: str, marker: str = ANSWER_MARKER, think_end: str = "</think>") -> list[str]:
    """The thoughts of a finished generation, from its text alone.

    The reasoning span is the text before ``think_end`` if present, else before the first
    answer marker. It goes through :func:`segment_thoughts` with every newline as its own piece,
    so a blank line is a delimiter by the same rule as during decoding. This is how methods that
    do not segment while decoding (greedy CoT, Soft Thinking) get thought counts comparable with
    SEAL's.
    """
    if think_end and think_end in text:
        reasoning = text.split(think_end, 1)[0]
    else:
        at = text.lower().find(marker.lower())
        reasoning = text if at < 0 else text[:at]
    return [t.text for t in segment_thoughts(re.split(r"(\n)", reasoning))]


def count_labels(thoughts: Iterable[ThoughtSpan | str]) -> dict[str, int]:
    out = dict.fromkeys(LABELS, 0)
    for t in thoughts:
        out[t if isinstance(t, str) else t.label] += 1
    return out


def reasoning_length(model: Model, tokens: Sequence[int], marker: str = ANSWER_MARKER) -> int:
    """How many leading generated tokens form the reasoning span.

    Thinking models: the tokens before ``</think>``. Others: the tokens that end before the
    answer marker starts (case-insensitive). All of them when the end is never reached.
    """
    fmt = reasoning_format(model)
    if fmt.native:
        for i, t in enumerate(tokens):
            if t == fmt.think_end_token:
                return i
        return len(tokens)
    pieces = [model.piece(t) for t in tokens]
    at = b"".join(pieces).lower().find(marker.lower().encode("utf-8"))
    if at < 0:
        return len(tokens)
    end = 0
    for i, p in enumerate(pieces):
        end += len(p)
        if end > at:
            return i
    return len(tokens)
