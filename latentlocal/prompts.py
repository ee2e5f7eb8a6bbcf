"""The prompt every method asks with, and where its reasoning span ends (``</think>`` or the answer line)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from latentlocal.engine import ChatMessage, Model

ANSWER_MARKER = "Final answer:"

COT_SYSTEM = (
    "You are a careful math tutor. Solve the problem step by step. Write each step as its own "
    "short paragraph and leave a blank line between steps. When you are done, write one last "
    f"line of the form '{ANSWER_MARKER} <number>'."
)


@dataclass(frozen=True)
class ReasoningFormat:
    """Where thinking ends: a native ``</think>`` token, or the answer marker in plain text."""

    think_end_token: int | None
    think_end_text: str
    answer_marker: str = ANSWER_MARKER

    @property
    def native(self) -> bool:
        return self.think_end_token is not None


def reasoning_format(model: Model) -> ReasoningFormat:
    tok = model.find_token("</think>")
    if tok is not None and model.find_token("<think>") is not None:
        return ReasoningFormat(think_end_token=tok, think_end_text="</think>")
    return ReasoningFormat(think_end_token=None, think_end_text=ANSWER_MARKER)


def build_prompt(model: Model, question: str, system: str | None = COT_SYSTEM) -> str:
    """The chat-formatted prompt for one question, opening the thinking span where native."""
    messages = []
    if system:
        messages.append(ChatMessage("system", system))
    messages.append(ChatMessage("user", question.strip()))
    text = model.apply_chat(messages, add_generation_prompt=True)
    fmt = reasoning_format(model)
    if fmt.native and not re.search(r"<think>\s*$", text):
        text += "<think>\n"
    return text
