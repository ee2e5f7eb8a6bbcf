"""One choice's text as it is decoded: thinking to ``reasoning_content``, the answer to ``content``,
cut at the request's stop strings (which OpenAI leaves out of the text)."""

from __future__ import annotations

from collections.abc import Sequence

from latentlocal.events import Token
from latentlocal.prompts import ReasoningFormat
from latentlocal.phases import split_thinking


class ChoiceText:
    """The reasoning and content of one choice, and the deltas to stream.

    Thinking is the ``<think>`` span of a model that has think tokens, as the method marks it
    (``Token.phase``, or :func:`split_thinking` for a text chosen at the end); the ``</think>``
    that closes it belongs to neither part. On other models everything is content. The content
    holds back a tail that could still grow into a stop string, so no part of one is ever sent.
    """

    def __init__(self, stop: Sequence[str], fmt: ReasoningFormat) -> None:
        self.stop = tuple(stop)
        self.fmt = fmt
        self.reasoning = ""
        self.content = ""
        self.stopped = False   # a stop string ended the content
        self._held = ""

    def push(self, token: Token) -> tuple[str, str]:
        """A decoded token -> (reasoning delta, content delta)."""
        if self.fmt.native and token.token_id == self.fmt.think_end_token:
            return "", ""
        # A model without think tokens writes its reasoning as its reply (llama-server's rule): a
        # method's own thinking span there (SEAL's, Soft Thinking's before the answer marker) stays
        # in the content, or an app reading only content got nothing when the marker never came
        if token.phase == "think" and self.fmt.native:
            self.reasoning += token.text
            return token.text, ""
        return "", self._content(token.text)

    def set_text(self, text: str) -> tuple[str, str]:
        """The whole text at once (methods that choose it at the end) -> (reasoning, content)."""
        thinking, answer = split_thinking(text, self.fmt)
        self.reasoning += thinking
        return thinking, self._content(answer or "") + self.flush()

    def flush(self) -> str:
        """The held-back tail, once nothing more comes."""
        out, self._held = ("" if self.stopped else self._held), ""
        self.content += out
        return out

    def _content(self, piece: str) -> str:
        if self.stopped or not piece:
            return ""
        buf = self._held + piece
        if not self.stop:
            self.content += buf
            self._held = ""
            return buf
        hits = [i for i in (buf.find(s) for s in self.stop) if i >= 0]
        if hits:
            out = buf[:min(hits)]
            self.stopped, self._held = True, ""
        else:
            keep = max((k for s in self.stop for k in range(1, len(s)) if buf.endswith(s[:k])), default=0)
            out, self._held = buf[:len(buf) - keep], buf[len(buf) - keep:]
        self.content += out
        return out
