"""Live metrics of a run: speed, tokens, an entropy (or token probability) sparkline, thought
counts per class, the last soft step's candidates, finished samples, and Soft Reasoning rounds."""

from __future__ import annotations

import math
import time

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import DataTable, Label, Sparkline, Static

from latentlocal import events as ev
from tui.widgets.stream import THOUGHT_STYLES

SPARK_POINTS = 240
# The panel is 36 cells wide, 30 inside border, padding and scrollbar: a candidate line is
# token (10) + space + bar (12) + space + weight (5) so it never wraps.
TOKEN_CELLS = 10
BAR_CELLS = 12
CONCEPT_ROWS = 8  # candidates of the current concept token shown
# While tokens stream the panel redraws at most this often (the output text itself follows every
# batch): its sparkline and concept bars cost several ms a frame, and on a 2-core machine the UI
# thread's time is taken from the threads decoding the model (bench/bench_tui.py, soft-thinking:
# Run tab / CLI median 0.83 at 0.15 s, 0.91-0.98 at 0.5 s; replaying a recorded 256-token run at
# 75 tok/s, the UI thread's CPU share was 5.7% at 0.5 s, 5.2% at 1 s, 4.2% with no redraw). A
# redraw waits for a batch's frame (its timer fires only when batches stop); the final state is
# drawn at once.
REFRESH_S = 1.0


class MetricsPanel(VerticalScroll):
    """Fed with the same event batches as the stream; everything is recomputed per batch, and a
    widget is updated only when what it shows changed, laid out again only when it grew
    (a layout of the whole screen per batch was most of the UI's time while a model streamed)."""

    def compose(self) -> ComposeResult:
        yield Static("no run yet", id="m-stats")
        yield Label("entropy, nats", id="m-spark-label", classes="m-title")
        yield Sparkline([], id="m-spark")
        yield Label("thoughts", classes="m-title")
        yield Static(id="m-thoughts")
        with Vertical(id="m-concept-box"):
            yield Label("last soft step: top candidates", classes="m-title")
            yield Static(id="m-concept")
        with Vertical(id="m-samples-box"):
            yield Label("sequences", classes="m-title")
            yield Static(id="m-samples")
        with Vertical(id="m-rounds-box"):
            yield Label("Soft Reasoning: best reward so far", classes="m-title")
            yield Sparkline([], id="m-best")
            yield Static(id="m-best-text")
            yield DataTable(id="m-rounds", zebra_stripes=True, cursor_type="row")

    def on_mount(self) -> None:
        table = self.query_one("#m-rounds", DataTable)
        # Short headings: the panel is 30 cells wide
        table.add_columns("r", "c", "answer", "ver", "coh", "reward")
        self.query_one("#m-concept-box").display = False  # until a run has soft steps
        self.reset()

    # -- state ---------------------------------------------------------------------------------
    def reset(self, method: str = "") -> None:
        self.method = method
        self.started = time.monotonic()
        self.tokens = 0
        self.entropies: list[float] = []
        self.probs: list[float] = []
        self.thoughts = {"execution": 0, "reflection": 0, "transition": 0}
        self.steered = 0
        self.concept: tuple[tuple[str, float], ...] = ()
        self.samples: list[ev.SequenceDone] = []
        self.rounds: list[ev.Round] = []
        self.best: list[float] = []
        self.summary: ev.Summary | None = None
        self.cold_stop: ev.ColdStop | None = None
        self.phase_reason = ""
        self.focus_seq: int | None = None
        self._shown: dict[str, tuple] = {}  # widget id -> what it shows (to skip an update)
        self._drawn_at = -math.inf
        if getattr(self, "_redraw", None) is not None:
            self._redraw.stop()
        self._redraw = None
        self.query_one("#m-rounds", DataTable).clear()
        self._refresh_view()

    def feed(self, events: list[ev.Event]) -> None:
        table = self.query_one("#m-rounds", DataTable)
        for e in events:
            if isinstance(e, ev.Token):
                self.tokens += 1
                if self.focus_seq is None:
                    self.focus_seq = e.seq
                if e.seq == self.focus_seq:
                    if e.entropy is not None and math.isfinite(e.entropy):
                        self.entropies.append(e.entropy)
                    elif e.prob is not None and math.isfinite(e.prob):
                        self.probs.append(e.prob)
                    if e.mode == "soft" and e.top:
                        self.concept = e.top
            elif isinstance(e, ev.Thought):
                self.thoughts[e.label] = self.thoughts.get(e.label, 0) + 1
                self.steered += int(e.steered)
            elif isinstance(e, ev.SequenceDone):
                self.samples.append(e)
            elif isinstance(e, ev.ColdStop):
                self.cold_stop = e
            elif isinstance(e, ev.PhaseChange) and e.seq == (self.focus_seq or 0):
                self.phase_reason = e.reason
            elif isinstance(e, ev.Round):
                self.rounds.append(e)
                prev = self.best[-1] if self.best else -math.inf
                self.best.append(max(prev, e.best_reward))
                for c in e.candidates:
                    table.add_row(str(e.index), str(c.index), str(c.answer), f"{c.verifier:.1f}",
                                  f"{c.coherence:.2f}", f"{c.reward:.2f}")
                table.move_cursor(row=table.row_count - 1)
            elif isinstance(e, ev.Summary):
                self.summary = e
        self._refresh_soon()

    def _refresh_soon(self) -> None:
        """Redraw now if the last redraw is REFRESH_S old (or the run ended). Otherwise a later
        batch will, in the frame that draws its text; a timer catches the last batch of a burst."""
        wait = self._drawn_at + REFRESH_S - time.monotonic()
        if wait <= 0 or self.summary is not None:
            self._refresh_view()
        elif self._redraw is None:
            self._redraw = self.set_timer(wait + REFRESH_S / 2, self._refresh_view)

    def tick(self) -> None:
        """The running clock: redraw the stats when no batch has for a while (not between batches:
        a frame of its own costs as much as a batch's)."""
        if self.summary is None and self.method and time.monotonic() - self._drawn_at >= 2 * REFRESH_S:
            self.refresh_stats()

    # -- rendering -----------------------------------------------------------------------------
    @property
    def tokens_per_s(self) -> float:
        if self.summary is not None:
            return self.summary.tokens_per_s
        dt = time.monotonic() - self.started
        return self.tokens / dt if dt > 0 else 0.0

    def stats_text(self) -> str:
        s = self.summary
        elapsed = s.elapsed_s if s is not None else time.monotonic() - self.started
        tokens = s.generated_tokens if s is not None else self.tokens
        if not self.method:
            return "no run yet"
        state = f"finish: {s.finish_reason}" if s is not None else "running…"
        lines = [f"[b]{self.method}[/b]  {state}",
                 f"[b]{tokens}[/b] tokens  [b]{self.tokens_per_s:.1f}[/b] tok/s  {elapsed:.1f} s"]
        if self.phase_reason:
            lines.append(f"thinking ended: {self.phase_reason.replace('_', ' ')}")
        if self.cold_stop is not None:
            lines.append(f"[b #87d7ff]❄ Cold Stop[/] at step {self.cold_stop.step}")
        return "\n".join(lines)

    def _put(self, wid: str, content: str | Text) -> None:
        """Show ``content`` in the Static ``#wid`` if it differs from what it shows. A widget
        never gets shorter (blank lines keep its height): one that shrank at a run's start and
        grew back in it (a "thinking ended" line) laid the screen out twice per run."""
        text = Text.from_markup(content) if isinstance(content, str) else content
        key = (text.plain, tuple(text.spans))
        if self._shown.get(wid) == key:
            return
        widget = self.query_one(f"#{wid}", Static)
        region = widget.content_region
        if region.width > 0:
            height = len(text.wrap(self.app.console, region.width))
            if height < region.height:
                text = text + "\n" * (region.height - height)
            widget.update(text, layout=height > region.height)
        else:
            widget.update(text)  # not laid out yet: its height comes with that layout
        self._shown[wid] = key

    def _spark(self, wid: str, data: list[float]) -> None:
        spark = self.query_one(f"#{wid}", Sparkline)
        if spark.data != data:
            spark.data = data

    @staticmethod
    def _show(box, on: bool) -> None:
        if box.display != on:
            box.display = on

    def refresh_stats(self) -> None:
        self._put("m-stats", self.stats_text())

    def _refresh_view(self) -> None:
        if self._redraw is not None:
            self._redraw.stop()
            self._redraw = None
        self._drawn_at = time.monotonic()
        self.refresh_stats()
        if self.entropies or not self.probs:
            self._put("m-spark-label", self.spark_title("entropy", self.entropies, " nats"))
            self._spark("m-spark", self.entropies[-SPARK_POINTS:])
        else:
            self._put("m-spark-label", self.spark_title("p(token)", self.probs))
            self._spark("m-spark", self.probs[-SPARK_POINTS:])

        t = Text()
        for name in ("execution", "reflection", "transition"):
            t.append("  ", style=THOUGHT_STYLES[name])
            t.append(f" {name:<11} {self.thoughts.get(name, 0):>4}\n")
        if self.steered:
            t.append(f"⚑ {self.steered} after a steered delimiter\n")
        if not any(self.thoughts.values()):
            t.append("(SEAL reports thought boundaries)", style="dim")
        self._put("m-thoughts", t)

        # Soft steps come every token: the box keeps one height (CONCEPT_ROWS rows) and stays
        # as the last run left it until this run shows whether it has soft steps, so neither
        # a concept nor the run's start lays the screen out again
        box = self.query_one("#m-concept-box")
        if self.concept or self.summary is not None:
            self._show(box, bool(self.concept))
        if box.display:
            lines = Text()
            shown = self.concept[:CONCEPT_ROWS]
            for tok, w in shown:
                lines.append(f"{self.token_cell(tok)} ", style="bold")
                lines.append(f"{'█' * max(1, round(w * BAR_CELLS)):<{BAR_CELLS}} {w:.3f}\n", style="#5fafaf")
            lines.append("\n" * (CONCEPT_ROWS - len(shown)))
            self._put("m-concept", lines)

        self._show(self.query_one("#m-samples-box"), bool(self.samples))
        if self.samples:
            self._put("m-samples", "\n".join(
                f"seq {d.seq}: {d.answer if d.answer is not None else '—'}  "
                f"({d.generated_tokens} tok, {d.finish_reason})" for d in self.samples[-12:]))

        self._show(self.query_one("#m-rounds-box"), bool(self.rounds))
        if self.rounds:
            self._spark("m-best", list(self.best))
            self._put("m-best-text", " → ".join(f"{b:.3f}" for b in self.best[-8:])
                      + f"   ({len(self.rounds)} rounds)")

    @staticmethod
    def spark_title(name: str, values: list[float], unit: str = "") -> str:
        """e.g. "entropy 1.09 nats, mean 1.23": fits the panel's 30 cells (a longer title was cut)."""
        if not values:
            return f"{name}{',' if unit else ''}{unit}"
        return f"{name} {values[-1]:.2f}{unit}, mean {sum(values) / len(values):.2f}"

    @staticmethod
    def token_cell(tok: str) -> str:
        """A candidate token as a right-aligned repr of TOKEN_CELLS cells, cut with "…" if longer."""
        text = repr(tok)
        if len(text) > TOKEN_CELLS:
            text = text[: TOKEN_CELLS - 1] + "…"
        return f"{text:>{TOKEN_CELLS}}"
