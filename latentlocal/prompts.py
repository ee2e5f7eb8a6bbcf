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
    """Native when the vocabulary has ``<think>`` and ``</think>`` and ``model.reasoning`` is not
    "off" (EngineSettings.reasoning: the vocabulary alone cannot tell a thinking model from an
    instruction model that shares its tokenizer, such as Qwen3's non-thinking releases)."""
    think = model.think_tokens()
    if think is not None and model.reasoning != "off":
        return ReasoningFormat(think_end_token=think[1], think_end_text="</think>")
    return ReasoningFormat(think_end_token=None, think_end_text=ANSWER_MARKER)


def open_thinking(model: Model, prompt: str) -> str:
    """A chat prompt that ends where the model reasons: inside an opened ``<think>`` span on a
    thinking model, after a closed empty one (``<think>\n\n</think>\n\n``, the form Qwen3's
    template gives with enable_thinking=False) on a model with think tokens whose reasoning is
    off, unchanged on a model without them."""
    if model.think_tokens() is None:
        return prompt
    if reasoning_format(model).native:
        return prompt if re.search(r"<think>\s*$", prompt) else prompt + "<think>\n"
    return close_thinking(model, prompt)


def close_thinking(model: Model, prompt: str) -> str:
    """A chat prompt whose answer starts at once: after an empty thinking span on any model with
    think tokens (the Soft Reasoning verifier judges; it should not think first)."""
    if model.think_tokens() is None:
        return prompt
    opened = prompt.rstrip().endswith("<think>")
    return prompt + ("\n" if opened else "<think>\n\n") + "</think>\n\n"


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


def without_thinking(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """Earlier assistant turns with their thinking left out: what Qwen3's and DeepSeek-R1's chat
    templates do (``content.split('</think>')[-1]``) and their model cards ask for, since the
    models were trained on histories without it. llama.cpp's built-in templates keep it."""
    return [ChatMessage(m.role, m.content.split("</think>")[-1].lstrip())
            if m.role == "assistant" and "</think>" in m.content else m for m in messages]


def build_prompt(model: Model, question: Question, system: str | None = COT_SYSTEM) -> str:
    """The chat-formatted prompt for one question or conversation (:func:`conversation`), its
    thinking span opened or closed (:func:`open_thinking`); on a model with think tokens earlier
    answers lose their thinking (:func:`without_thinking`)."""
    messages = conversation(question, system)
    if model.think_tokens() is not None:
        messages = without_thinking(messages)
    return open_thinking(model, model.apply_chat(messages, add_generation_prompt=True))
