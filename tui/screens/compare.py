"""Compare: the same prompt through several methods, one after another, side by side."""

from __future__ import annotations

import time

from rich.markup import escape
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, DataTable, Input, Label, SelectionList, TextArea

from latentlocal import events as ev
from latentlocal.errors import LatentLocalError
from latentlocal.methods import registry
from tui import forms
from tui.jobs import Job, JobView, error_text, pump
from tui.widgets.method_form import title
from tui.widgets.prompt import PromptArea

COLUMNS = ("method", "answer", "tokens", "time s", "tok/s", "finish")


class CompareRow(Message):
    """Progress of one method in a comparison (its running token count or its Summary)."""

    def __init__(self, method: str, tokens: int, summary: ev.Summary | None, error: str | None,
                 started: float) -> None:
        super().__init__()
        self.method, self.tokens, self.summary, self.error, self.started = (
            method, tokens, summary, error, started)


class CompareView(JobView, Horizontal):
    """Each method runs with the settings it has on the Run tab; Max tokens overrides them all."""

    JOB, PREFIX = "compare", "cmp"

    def compose(self) -> ComposeResult:
        cfg = self.app.config
        names = [s.name for s in registry.specs()]
        chosen = set(cfg.compare.methods) & set(names)
        with Vertical(id="cmp-side"):
            yield Label("Methods", classes="form-title")
            yield SelectionList[str](*[(title(n), n, n in chosen) for n in names], id="cmp-methods")
            yield Label("Max tokens (all methods; empty = each method's own)", classes="field-label")
            yield Input(str(cfg.compare.max_tokens or ""), type="integer", id="cmp-max", compact=True, placeholder="own")
            yield Label("Settings per method are those of the Run tab.", classes="hint")
        with Vertical(id="cmp-main"):
            yield PromptArea(cfg.run.prompt, id="cmp-prompt", soft_wrap=True, tab_behavior="focus")
            with Horizontal(classes="button-row"):
                yield Button("Compare  ^R", id="cmp-start", compact=True, variant="primary")
                yield Button("Cancel  Esc", id="cmp-cancel", compact=True, variant="error", disabled=True)
                yield Label("", id="cmp-status", classes="status", markup=False)
            yield DataTable(id="cmp-table", zebra_stripes=True, cursor_type="row")
            yield TextArea("", id="cmp-detail", read_only=True, soft_wrap=True)

    def on_mount(self) -> None:
        self.query_one("#cmp-prompt", TextArea).border_title = "Prompt"
        self.query_one("#cmp-detail", TextArea).border_title = "Full text of the selected row"
        table = self.query_one("#cmp-table", DataTable)
        for c in COLUMNS:
            table.add_column(c, key=c)
        self.results: dict[str, ev.Summary] = {}

    def selected(self) -> list[str]:
        return list(self.query_one("#cmp-methods", SelectionList).selected)

    def start(self) -> bool:
        app = self.app
        if app.engine is None:
            app.notify("Load a model first (F2, Models).", severity="warning")
            return False
        question = self.query_one("#cmp-prompt", TextArea).text.strip()
        methods = self.selected()
        if not question or not methods:
            app.notify("Write a prompt and tick at least one method.", severity="warning")
            return False
        max_text = self.query_one("#cmp-max", Input).value.strip()
        overrides = {"max_tokens": max_text} if max_text else {}
        runners, problems = [], []
        for m in methods:
            try:
                runners.append((m, forms.make_runner(m, app.config.methods.get(m, {}), overrides)))
            except LatentLocalError as exc:
                problems.append((m, str(exc)))
        job = self.begin()
        if job is None:
            return False
        app.config.compare.methods = methods
        app.config.compare.max_tokens = int(max_text) if max_text.isdigit() else 0
        app.save_config()
        self.results.clear()
        table = self.query_one("#cmp-table", DataTable)
        table.clear()
        for m in methods:
            table.add_row(escape(title(m)), "", "", "", "", "waiting", key=m)
        for m, err in problems:
            table.update_cell(m, "finish", escape(f"error: {err}"), update_width=True)
        self.set_running(True, f"0 of {len(runners)} done")
        self.launch(job, lambda job: self._compare(runners, question, job))
        return True

    def _compare(self, runners, question: str, job: Job) -> None:
        """The worker's body (on the engine thread); a method that raises is one row's error."""
        engine = self.app.engine
        interval = max(0.1, self.app.config.ui.flush_ms / 1000)
        for method, runner in runners:
            if job.cancel.is_set():
                break
            t0 = time.monotonic()
            count = 0
            post = self.post_message

            def on_batch(batch, method=method, t0=t0):
                nonlocal count
                count += sum(1 for e in batch if isinstance(e, ev.Token))
                summary = next((e for e in batch if isinstance(e, ev.Summary)), None)
                post(CompareRow(method, count, summary, None, t0))

            try:
                pump(runner(engine, question, job.cancel), on_batch, interval)
            except Exception as exc:  # noqa: BLE001
                post(CompareRow(method, count, None, error_text(exc), t0))

    def on_compare_row(self, msg: CompareRow) -> None:
        table = self.query_one("#cmp-table", DataTable)
        m = msg.method
        s = msg.summary
        if s is not None:
            self.results[m] = s
            cells = {"answer": str(s.answer) if s.answer is not None else "—",
                     "tokens": str(s.generated_tokens), "time s": f"{s.elapsed_s:.1f}",
                     "tok/s": f"{s.tokens_per_s:.1f}", "finish": s.finish_reason}
            done = len(self.results)
            self.query_one("#cmp-status", Label).update(f"{done} of {table.row_count} done")
        elif msg.error is not None:
            cells = {"finish": f"error: {msg.error}"}
        else:
            cells = {"tokens": str(msg.tokens), "time s": f"{time.monotonic() - msg.started:.1f}",
                     "finish": "running…"}
        for col, value in cells.items():
            # a str cell is read as markup; answers and errors are the model's and the user's text
            table.update_cell(m, col, escape(value), update_width=True)
        if s is not None and table.row_count and self._cursor_key() == m:
            self.query_one("#cmp-detail", TextArea).text = s.text
        msg.stop()

    def _cursor_key(self) -> str | None:
        table = self.query_one("#cmp-table", DataTable)
        try:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:
            return None

    def finish_job(self, cancelled: bool) -> str:
        table = self.query_one("#cmp-table", DataTable)
        for key in list(table.rows):
            if key.value not in self.results and table.get_cell(key, "finish") in ("waiting", "running…"):
                table.update_cell(key, "finish", "cancelled" if cancelled else "not run")
        return ("cancelled; " if cancelled else "") + f"{len(self.results)} of {table.row_count} done"

    @on(DataTable.RowHighlighted, "#cmp-table")
    def _show(self, event: DataTable.RowHighlighted) -> None:
        s = self.results.get(event.row_key.value) if event.row_key is not None else None
        self.query_one("#cmp-detail", TextArea).text = s.text if s is not None else ""

    @on(SelectionList.SelectedChanged)
    def _methods_changed(self) -> None:
        self.app.config.compare.methods = self.selected()
        self.app.save_config_soon()
