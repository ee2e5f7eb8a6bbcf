"""The streamed output of a run: thinking and answer text styled apart, soft steps' candidates,
SEAL thought classes, Cold Stop and phase changes marked inline."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from latentlocal import events as ev

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


class StreamView(VerticalScroll, can_focus=True):
    """Append-only view of one run's events: the first sequence that produces tokens is shown
    (self-consistency's sample 0, Soft Reasoning's candidate 0 of each round); the metrics panel
    summarises the others."""

    DEFAULT_CSS = "StreamView > Static { width: 1fr; }"

    def __init__(self, *, id: str | None = None, inline_candidates: bool = False) -> None:
        super().__init__(id=id)
        self.inline_candidates = inline_candidates
        self._pieces: list[_Piece] = []
        self._text = Text()
        self._built = 0
        self._dirty_all = False
        self.tokens_shown = 0
        self.plain_answer = ""
        self.focus_seq: int | None = None
        self._phase: str | None = None

    def compose(self):
        yield Static(id="stream-body")

    # -- feeding -----------------------------------------------------------------------------
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
        """Put a thought tag where the thought ended: before the delimiter's newlines."""
        i = len(self._pieces)
        while i > 0 and self._pieces[i - 1].token and not self._pieces[i - 1].text.strip():
            i -= 1
        if i > 0 and self._pieces[i - 1].token:
            prev = self._pieces[i - 1]
            body = prev.text.rstrip()
            if body != prev.text:
                self._pieces[i - 1:i] = [_Piece(body, prev.style, prev.top, True),
                                         _Piece(prev.text[len(body):], prev.style, (), True)]
        self._pieces.insert(i, piece)
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
                self._pieces.append(_Piece(e.text, style, e.top if e.mode == "soft" else (), True))
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
        self._text.append(p.text, style=p.style or None)
        if self.inline_candidates and p.top:
            self._text.append(_candidates(p.top), style=CANDIDATE_STYLE)

    def render_now(self) -> None:
        if self._dirty_all:
            self._text = Text()
            self._built = 0
            self._dirty_all = False
        for p in self._pieces[self._built:]:
            self._append(p)
        self._built = len(self._pieces)
        follow = self.scroll_y >= self.max_scroll_y - 1
        try:
            self.query_one("#stream-body", Static).update(self._text.copy())
        except Exception:  # not mounted yet
            return
        if follow:
            self.call_after_refresh(self.scroll_end, animate=False)

    @property
    def plain(self) -> str:
        return "".join(p.text for p in self._pieces)
