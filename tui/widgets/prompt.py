"""A TextArea for prompts whose bindings leave the app's function keys alone."""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import TextArea


def _keys(b) -> str:
    return b.key if isinstance(b, Binding) else b[0]


class PromptArea(TextArea):
    """TextArea binds F6/F7 (select line / select all); the app uses F2-F6 for its tabs."""

    BINDINGS = [b for b in TextArea.BINDINGS if _keys(b) not in ("f6", "f7")]
    inherit_bindings = False
