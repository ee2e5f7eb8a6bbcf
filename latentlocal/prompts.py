"""The prompt every method asks with, and where its reasoning span ends (``</think>`` or the answer line)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

from latentlocal.engine import ChatMessage, Model

# a question, or a whole conversation (the server's chat messages)
Question = Union[str, Sequence[ChatMessage]]

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


def conversation(question: Question, system: str | None = COT_SYSTEM) -> list[ChatMessage]:
    """The chat messages a prompt is built from.

    ``question`` is the user's question, or a whole conversation as a sequence of messages (what
    the server receives). ``system`` comes first unless the conversation brings its own.
    """
    if isinstance(question, str):
        messages = [ChatMessage("user", question.strip())]
    else:
        messages = list(question)
    if system and not any(m.role == "system" for m in messages):
        messages.insert(0, ChatMessage("system", system))
    return messages


def question_text(question: Question) -> str:
    """The question itself: the text, or a conversation's last user message."""
    if isinstance(question, str):
        return question.strip()
    users = [m.content for m in question if m.role == "user"]
    return users[-1].strip() if users else ""


def build_prompt(model: Model, question: Question, system: str | None = COT_SYSTEM) -> str:
    """The chat-formatted prompt for one question or conversation (:func:`conversation`),
    opening the thinking span where native."""
    text = model.apply_chat(conversation(question, system), add_generation_prompt=True)
    fmt = reasoning_format(model)
    if fmt.native and not re.search(r"<think>\s*$", text):
        text += "<think>\n"
    return text
