"""The streamed output of a run: thinking and answer text styled apart, soft steps' candidates,
SEAL thought classes, Cold Stop and phase changes marked inline.

The view draws its own lines (Textual's Line API) and wraps text incrementally: a batch of
tokens re-wraps only the line still being written, and repaints only the lines that changed.
A ``Static`` holding the whole text re-wrapped all of it and re-laid-out the whole screen on every
batch, which on a 2-core machine took the cores the model decodes on (issue 14).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.selection import Selection
from textual.strip import Strip

from latentlocal import events as ev

try:  # the break offsets rich's own wrapping uses (to keep finished lines of a paragraph)
    from rich._wrap import divide_line
except ImportError:  # pragma: no cover - a rich without it: the open paragraph is re-wrapped whole
    divide_line = None

THOUGHT_STYLES = {
    "execution": "bold #000000 on #5faf5f",
    "reflection": "bold #000000 on #d7af00",
    "transition": "bold #000000 on #af87d7",
}
THINK_STYLE = "italic #8a94a6"          # discrete thinking tokens
SOFT_STYLE = "italic #5fafaf"           # soft (concept) steps: the top-1 of the mixture
CANDIDATE_STYLE = "#6c7380"
ANSWER_STYLE = "bold"
MARK_STYLE = "bold #5f87d7"
COLD_STYLE = "bold #000000 on #87d7ff"
RESULT_STYLE = "bold #5faf5f"
ERROR_STYLE = "bold #ff5f5f"


@dataclass
class _Piece:
    text: str
    style: str
    top: tuple[tuple[str, float], ...] = ()
    token: bool = False


def _candidates(top: tuple[tuple[str, float], ...], n: int = 4) -> str:
    def show(t: str) -> str:
        return repr(t)[1:-1] if t.strip() == t and t else repr(t)
    return "⟨" + " ".join(f"{show(t)}:{w:.2f}" for t, w in top[:n]) + "⟩"


_LAST_WORD = re.compile(r"\S+\s*$")


class StreamView(ScrollView, can_focus=True):
    """Append-only view of one run's events: the first sequence that produces tokens is shown
    (self-consistency's sample 0, Soft Reasoning's candidate 0 of each round); the metrics panel
    summarises the others."""

    ALLOW_SELECT = True
    # the gutter is kept for the scrollbar: text wrapped before it appeared would run under it
    DEFAULT_CSS = "StreamView { overflow-x: hidden; scrollbar-gutter: stable; }"

    def __init__(self, *, id: str | None = None, inline_candidates: bool = False) -> None:
        super().__init__(id=id)
        self.inline_candidates = inline_candidates
        self._pieces: list[_Piece] = []
        self._text = Text()           # everything shown, styled (tabs expanded)
        self._column = 0              # cells after the last newline of _text
        self._built = 0               # pieces already in _text
        self._dirty_all = False
        # _text wrapped at _width: lines that can no longer change, then the lines of _tail (the
        # text after the last finished line, re-wrapped when more arrives)
        self._width = 0
        self._fixed: list[Text] = []
        self._tail = Text()
        self._tail_lines: list[Text] = []
        self._strips: dict[int, Strip] = {}  # rendered lines, by line index
        self._strips_style: Style | None = None
        self.tokens_shown = 0
        self.plain_answer = ""
        self.focus_seq: int | None = None
        self._phase: str | None = None
        self.live = False  # a run is streaming into the view (see _rows)

    # -- feeding -----------------------------------------------------------------------------
    def set_live(self, live: bool) -> None:
        """A run starts or ends streaming into the view; at its end the blank rows that jump
        scrolling left below the text go (the view then ends at the text's last line)."""
        self.live = live
        if not live:
            self._layout_lines()

    def clear(self) -> None:
        self._pieces.clear()
        self._phase = None
        self.focus_seq = None
        self.tokens_shown = 0
        self.plain_answer = ""
        self._dirty_all = True
        self.render_now()

    def note(self, text: str, style: str = MARK_STYLE) -> None:
        """A line of the app's own (not the model's), e.g. an error or "loading…"."""
        self._newline()
        self._pieces.append(_Piece(text + "\n", style))
        self.render_now()

    def _newline(self) -> None:
        if self._pieces and not self._pieces[-1].text.endswith("\n"):
            self._pieces.append(_Piece("\n", ""))

    def _insert_before_trailing_space(self, piece: _Piece) -> None:
        """Put a thought tag where the thought ended: before the delimiter's newlines (``feed``
        keeps a token's trailing whitespace as a piece of its own)."""
        i = len(self._pieces)
        while i > 0 and self._pieces[i - 1].token and not self._pieces[i - 1].text.strip():
            i -= 1
        self._pieces.insert(i, piece)
        if i < self._built:
            # in text already laid out (not after _settled_end's hold): lay it all out again
            self._dirty_all = True

    def feed(self, events: list[ev.Event]) -> None:
        for e in events:
            if isinstance(e, ev.Token):
                if self.focus_seq is None:
                    self.focus_seq = e.seq  # the first sequence that speaks (0, or 1 for Soft Reasoning)
                    if e.seq != 0:
                        self._pieces.append(_Piece(
                            f"(showing sequence {e.seq}; every sequence is summarised in Metrics)\n",
                            CANDIDATE_STYLE))
                if e.seq != self.focus_seq:
                    continue
                if self._phase == "think" and e.phase == "answer":
                    self._mark_answer("")
                self._phase = e.phase
                if e.phase == "answer":
                    style = ANSWER_STYLE
                    self.plain_answer += e.text
                else:
                    style = SOFT_STYLE if e.mode == "soft" else THINK_STYLE
                body = e.text.rstrip()
                top = e.top if e.mode == "soft" else ()
                if body and body != e.text:  # ".\n\n": the tag of a thought goes between the two
                    self._pieces += [_Piece(body, style, top, True), _Piece(e.text[len(body):], style, (), True)]
                else:
                    self._pieces.append(_Piece(e.text, style, top, True))
                self.tokens_shown += 1
            elif isinstance(e, ev.PhaseChange) and e.seq == (self.focus_seq or 0) and e.phase == "answer":
                self._mark_answer(e.reason)
            elif isinstance(e, ev.Thought) and e.seq == (self.focus_seq or 0):
                label = f" {e.label}{' ⚑' if e.steered else ''} "
                self._insert_before_trailing_space(_Piece(label, THOUGHT_STYLES.get(e.label, MARK_STYLE)))
            elif isinstance(e, ev.ColdStop):
                self._pieces.append(_Piece(
                    f" ❄ Cold Stop: entropy < {e.threshold:g} nats for {e.patience} steps (step {e.step}) ",
                    COLD_STYLE))
            elif isinstance(e, ev.Round):
                best = max((c.reward for c in e.candidates), default=float("nan"))
                self._newline()
                self._pieces.append(_Piece(
                    f"── round {e.index}: {len(e.candidates)} candidates, best reward {best:.3f}, "
                    f"verifier {e.verifier_answer} ──\n", MARK_STYLE))
            elif isinstance(e, ev.Summary):
                self._summary(e)
        self.render_now()

    def _mark_answer(self, reason: str) -> None:
        if self._phase == "answer":
            return
        self._phase = "answer"
        self._newline()
        why = f" ({reason.replace('_', ' ')})" if reason else ""
        self._pieces.append(_Piece(f"── answer{why} ──\n", MARK_STYLE))

    def _summary(self, s: ev.Summary) -> None:
        self._newline()
        if s.finish_reason == "cancelled":
            self._pieces.append(_Piece(f"✖ cancelled after {s.generated_tokens} tokens "
                                       f"({s.elapsed_s:.1f} s)\n", ERROR_STYLE))
            return
        votes = s.extra.get("answers")
        extra = f"  (vote over {', '.join(map(str, votes))})" if isinstance(votes, list) else ""
        # an arrow, not a check mark: nothing here knows whether the answer is right
        self._pieces.append(_Piece(f"→ Answer: {s.answer if s.answer is not None else '—'}{extra}\n",
                                   RESULT_STYLE))

    # -- rendering ---------------------------------------------------------------------------
    def set_inline_candidates(self, on: bool) -> None:
        self.inline_candidates = on
        self._dirty_all = True
        self.render_now()

    def _append(self, p: _Piece) -> None:
        parts = [(p.text, p.style or None)]
        if self.inline_candidates and p.top:
            parts.append((_candidates(p.top), CANDIDATE_STYLE))
        for s, style in parts:
            s = self._expand_tabs(s)
            self._text.append(s, style=style)
            self._tail.append(s, style=style)

    def _expand_tabs(self, s: str) -> str:
        """Tabs as spaces to the next multiple of 8 cells of their line (as rich would expand
        them), so that wrapping part of a paragraph again does not move its tab stops."""
        out = []
        for i, chunk in enumerate(s.split("\t")):
            if i:
                n = 8 - self._column % 8
                out.append(" " * n)
                self._column += n
            out.append(chunk)
            if "\n" in chunk:
                self._column = cell_len(chunk.rsplit("\n", 1)[1])
            else:
                self._column += cell_len(chunk)
        return "".join(out)

    def render_now(self) -> None:
        if self._dirty_all:
            self._text = Text()
            self._column = 0
            self._built = 0
            self._width = 0  # re-wrap everything
            self._dirty_all = False
        end = self._settled_end()
        for p in self._pieces[self._built:end]:
            self._append(p)
        self._built = end
        self._layout_lines()

    def _settled_end(self) -> int:
        """How many pieces can be laid out: all but the trailing whitespace tokens, before which a
        SEAL thought tag may still be inserted (``_insert_before_trailing_space``; ``feed`` keeps a
        token's trailing whitespace as a piece of its own). Laying them out early meant every tag
        re-wrapped the whole text: with a tag every 30 tokens, a batch cost 27 ms by token 3000.
        What is held back is whitespace, until the next token or the run's end comes."""
        end = len(self._pieces)
        while end > self._built and self._pieces[end - 1].token and not self._pieces[end - 1].text.strip():
            end -= 1
        return end

    def on_resize(self) -> None:
        self._layout_lines()

    @property
    def line_count(self) -> int:
        return len(self._fixed) + len(self._tail_lines)

    def _layout_lines(self) -> None:
        """Wrap what is new, repaint the lines that changed, follow the end if it was in view."""
        if not self.is_mounted:
            return
        width = self.scrollable_content_region.width
        if width <= 0:
            return
        if width != self._width:
            self._width = width
            self._fixed = []
            self._tail = self._text.copy()
            self._strips.clear()
        before = self.line_count
        first = len(self._fixed)
        self._wrap_tail()
        for y in [y for y in self._strips if y >= first]:
            del self._strips[y]
        follow = self.scroll_y >= self.max_scroll_y - 1
        n = self.line_count
        rows = self._rows(n, follow)
        if rows != self.virtual_size.height or self.virtual_size.width != width:
            self._set_virtual_size(Size(width, rows))
        if max(n, before) > first:
            self.refresh_lines(first, max(n, before) - first)
        if follow and rows > self.scrollable_content_region.height:
            self.scroll_end(animate=False, immediate=False, x_axis=False)

    def _rows(self, n: int, follow: bool) -> int:
        """The scrollable height for ``n`` lines of text. While a run streams (``live``) and the
        view follows its end, a line past the bottom scrolls the view by a third of its height
        at once (a terminal's "jump scroll"), leaving blank rows that the next lines fill without
        moving any other line; otherwise it is the text's own height. A scroll repaints every
        line in view, and the Output (~48 cells wide in a 120-column terminal) gets a new line
        every ~10 tokens, so scrolling line by line repainted the whole view in nearly every
        frame once the text filled it: replaying a 768-token Soft Thinking run at 75 tok/s, the
        UI thread took 9.3% of a core by line, 6.5% by jumps."""
        height = self.scrollable_content_region.height
        rows, jump = self.virtual_size.height, max(1, height // 3)
        if not self.live or n <= height:
            return n
        if n <= rows <= n + jump:  # still filling the blank rows (or scrolled up in them)
            return rows
        return n + jump if follow else n

    def _set_virtual_size(self, size: Size) -> None:
        """Grow the scrollable area, laying the screen out again only when the scrollbar appears
        or goes: ``virtual_size`` is a layout-reactive, and a layout of the Run tab (its forms
        are over a hundred widgets) per new line of text was the largest part of the UI's
        time while a model streamed. Nothing is repainted here: the lines that changed are
        (``refresh_lines``), and a scroll repaints the view itself. Repainting the whole view at
        every new line, as this did, made nearly every frame a full one: replaying a 256-token
        Soft Thinking run at 75 tok/s, the UI thread took 11% of a core with it, 6.3% without."""
        scrollbar = size.height > self.scrollable_content_region.height
        if scrollbar != self.show_vertical_scrollbar or size.width != self.virtual_size.width:
            self.virtual_size = size
            return
        self.set_reactive(ScrollView.virtual_size, size)
        self._scroll_update(size)  # the scrollbar's thumb and the scroll limits

    def _wrap_tail(self) -> None:
        """Move finished lines of _tail to _fixed; wrap the rest into _tail_lines.

        A line is finished when a newline follows it, or when it ends before the start of the
        paragraph's last word: rich wraps greedily, so later text can only move that word (which
        may still grow, with the spaces after it) and what follows it. The rest is wrapped again
        from the start of a line that begins with a word, where it wraps as in the whole paragraph.
        """
        console, width = self.app.console, self._width
        parts = self._tail.split("\n", allow_blank=True)
        for part in parts[:-1]:
            self._fixed.extend(part.wrap(console, width))
        last = parts[-1]
        lines = list(last.wrap(console, width))
        plain = last.plain
        if len(lines) > 1 and divide_line is not None:
            starts = [0, *divide_line(plain, width, fold=True)]
            if len(starts) == len(lines):
                m = _LAST_WORD.search(plain)
                word = m.start() if m else len(plain)
                # the last line that starts at or before that word, at the start of a word (not
                # inside a word folded over lines, nor at the spaces it left over); or a line
                # inside the last word itself, which is folded: rich folds a word longer than the
                # line from a line's start every `width` cells, so its lines are final as long as
                # what is wrapped again is itself longer than a line (then folded the same way,
                # trailing spaces included). Text without spaces (Chinese thinking) is one such
                # word: without this it was wrapped again whole per batch (34 ms a batch by token
                # 3000)
                k = max((i for i, o in enumerate(starts) if not plain[o].isspace() and (
                    plain[o - 1].isspace() if o <= word else cell_len(plain[o:].rstrip()) > width)),
                        default=0)
                if k:
                    self._fixed.extend(lines[:k])
                    lines = lines[k:]
                    last = last[starts[k]:]
        self._tail = last
        self._tail_lines = lines

    def _line(self, y: int) -> Text | None:
        n = len(self._fixed)
        if y < n:
            return self._fixed[y]
        y -= n
        return self._tail_lines[y] if y < len(self._tail_lines) else None

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        y += scroll_y
        width = self.scrollable_content_region.width
        style = self.rich_style
        pad = Style.from_color(bgcolor=style.bgcolor)  # blank cells: the background only
        if style != self._strips_style:  # e.g. another theme
            self._strips.clear()
            self._strips_style = style
        selection = self.text_selection
        strip = None if selection is not None else self._strips.get(y)
        if strip is None:
            line = self._line(y)
            if line is None:
                return Strip.blank(width, pad)
            if selection is not None and (span := selection.get_span(y)) is not None:
                start, end = span
                line = line.copy()
                line.stylize(self.screen.get_component_rich_style("screen--selection"), start,
                             len(line) if end == -1 else end)
            strip = Strip(line.render(self.app.console), cell_len(line.plain))
            strip = strip.apply_style(style).apply_offsets(0, y)  # offsets: selection by mouse
            if selection is None:
                self._strips[y] = strip
        return strip.crop_extend(scroll_x, scroll_x + width, pad)

    def get_selection(self, selection: Selection) -> tuple[str, str] | None:
        text = "\n".join(self._line(y).plain for y in range(self.line_count))
        return selection.extract(text), "\n"

    def selection_updated(self, selection: Selection | None) -> None:
        self._strips.clear()
        self.refresh()

    @property
    def plain(self) -> str:
        return "".join(p.text for p in self._pieces)
