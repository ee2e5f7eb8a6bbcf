"""The thinking span and the answer of one generated sequence, for models with a native ``</think>``.

Reasoning models (DeepSeek-R1-Distill, Qwen3, QwQ) think inside ``<think>…</think>`` and answer
after it. Left alone they may think until the token limit and never answer, so every method
decodes through :class:`ThinkTracker`, which reserves room for the answer:

* the thinking span may hold at most :meth:`Budget.think_limit` tokens; the next position is then
  forced to ``</think>`` (end reason ``budget``);
* an end-of-generation token sampled while thinking is not fed: ``</think>`` takes its place (end
  reason ``eos``), so the answer phase still runs;
* a ``</think>`` the model writes itself ends thinking with reason ``marker``.

``</think>`` is counted in the thinking span (it closes it) and occupies one generated position.
The answer phase then has what is left of ``max_tokens``: at least the reserve.

Models without a native token (the bundled SmolLM2) keep their old rule: the thinking span is the
text before the answer marker "Final answer:", and nothing is forced (``ThinkTracker.native`` is
False and :meth:`ThinkTracker.choose` passes every token through).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from latentlocal.answers import extract_answer
from latentlocal.errors import LatentLocalError
from latentlocal.events import Notice
from latentlocal.prompts import ReasoningFormat

log = logging.getLogger(__name__)

# R1-style answers after a long thinking span are short: a few sentences and a boxed number.
DEFAULT_ANSWER_RESERVE = 256


@dataclass(frozen=True)
class Budget:
    """How ``max_tokens`` generated positions are split between thinking and the answer.

    ``answer_reserve`` positions are kept for the answer (at most half of ``max_tokens``, so a
    short run still thinks); ``think_budget`` > 0 caps thinking further.
    """

    max_tokens: int
    answer_reserve: int = DEFAULT_ANSWER_RESERVE
    think_budget: int = 0

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise LatentLocalError(f"--max-tokens must be positive, not {self.max_tokens}")
        if self.answer_reserve < 0:
            raise LatentLocalError(f"--answer-reserve must be >= 0, not {self.answer_reserve}")
        if self.think_budget < 0:
            raise LatentLocalError(f"--think-budget must be >= 0 (0 = no budget), not {self.think_budget}")

    @property
    def reserve(self) -> int:
        return min(self.answer_reserve, self.max_tokens // 2)

    def think_limit(self) -> int:
        """Thinking tokens allowed before ``</think>`` is forced (the forced token not counted)."""
        limit = max(0, self.max_tokens - self.reserve - 1)
        if self.think_budget:
            limit = min(limit, self.think_budget)
        return limit


def fit_context(budget: Budget, n_ctx: int, prompt_len: int, sequences: int = 1) -> tuple[Budget, str | None]:
    """``budget`` with ``max_tokens`` cut to what the context holds after the prompt, shared by
    ``sequences`` sequences (one KV cache holds them all), so that the thinking budget and the
    answer reserve are computed from positions that exist. Returns a message when it was cut."""
    room = (n_ctx - prompt_len) // max(1, sequences)
    if room < 2:
        raise LatentLocalError(
            f"the prompt ({prompt_len} tokens) leaves no room in the context of {n_ctx} tokens"
            + (f" for {sequences} sequences" if sequences > 1 else "") + "; pass a larger --n-ctx"
        )
    if budget.max_tokens <= room:
        return budget, None
    need = prompt_len + budget.max_tokens * max(1, sequences)
    return replace(budget, max_tokens=room), (
        f"--max-tokens {budget.max_tokens} does not fit the context of {n_ctx} tokens after the "
        f"{prompt_len}-token prompt" + (f" for {sequences} sequences" if sequences > 1 else "")
        + f": generating at most {room} tokens each; pass --n-ctx {need} for the full budget"
    )


def fitted(budget: Budget, n_ctx: int, prompt_len: int, sequences: int = 1) -> tuple[Budget, list[Notice]]:
    """:func:`fit_context`, with its message as a ``Notice`` event (and a log line)."""
    fit, msg = fit_context(budget, n_ctx, prompt_len, sequences)
    if msg is None:
        return fit, []
    log.warning(msg)
    return fit, [Notice("context", msg)]


class ThinkTracker:
    """Phase bookkeeping for one sequence: which token to feed, and when thinking ended.

    Pass each sampled token through :meth:`choose` (it returns ``</think>`` instead when the
    budget is spent or the token ends generation), then :meth:`push` every token that is fed,
    forced cues included; ``push`` returns the end reason when the token closes thinking.
    """

    def __init__(self, fmt: ReasoningFormat, budget: Budget, is_eog: Callable[[int], bool]) -> None:
        self.fmt = fmt
        self.budget = budget
        self._limit = budget.think_limit()
        self._is_eog = is_eog
        self._pending: str | None = None
        self.phase = "think"
        self.think_tokens = 0       # tokens of the thinking span, </think> included
        self.end_reason: str | None = None

    @property
    def native(self) -> bool:
        return self.fmt.native

    @property
    def thinking(self) -> bool:
        return self.phase == "think"

    def choose(self, tok: int) -> int:
        """The token to feed in place of the sampled ``tok``."""
        if not self.native or self.phase != "think" or tok == self.fmt.think_end_token:
            return tok
        if self.think_tokens >= self._limit:
            self._pending = "budget"
        elif self._is_eog(tok):
            self._pending = "eos"
        else:
            return tok
        return self.fmt.think_end_token  # type: ignore[return-value]

    def push(self, tok: int) -> str | None:
        """Record a fed token; the end reason (marker, budget, eos) if it closed thinking."""
        if not self.native or self.phase != "think":
            return None
        self.think_tokens += 1
        if tok != self.fmt.think_end_token:
            return None
        self.phase = "answer"
        self.end_reason = self._pending or "marker"
        return self.end_reason

    def summary(self, generated: int) -> dict[str, object]:
        """What a Summary records about the split (native models only)."""
        if not self.native:
            return {}
        return {"thinking_tokens": self.think_tokens, "answer_tokens": generated - self.think_tokens,
                "think_end": self.end_reason}


def split_thinking(text: str, fmt: ReasoningFormat) -> tuple[str, str | None]:
    """(thinking, answer) of a generated text; answer is None when thinking never ended.

    Native models: the split is at the last ``</think>`` (its text stays with neither part).
    Others: everything is returned as the answer, since the text marker is part of the answer.
    """
    if not fmt.native:
        return "", text
    at = text.rfind(fmt.think_end_text)
    if at < 0:
        return text, None
    return text[:at], text[at + len(fmt.think_end_text):]


def final_answer(text: str, fmt: ReasoningFormat, strict: bool = False) -> str | None:
    """The graded answer of a generated text.

    Native models read the text after the last ``</think>`` first, so a draft ``\\boxed{}`` or
    "Final answer:" inside the thinking cannot win; only when the answer part states nothing is
    the thinking read, unless ``strict`` (then None: a text that reached no answer has none).
    """
    thinking, answer = split_thinking(text, fmt)
    if answer is not None:
        ans = extract_answer(answer)
        if ans is not None or strict or not fmt.native:
            return ans
    return None if strict else extract_answer(thinking)
