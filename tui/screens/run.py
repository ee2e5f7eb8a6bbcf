"""Run: a prompt, a method with its settings, streamed output and live metrics."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Label

from latentlocal import events as ev
from latentlocal.errors import LatentLocalError
from tui import forms
from tui.jobs import Events, Job, JobView, pump
from tui.widgets.method_form import MethodForm, title
from tui.widgets.metrics import MetricsPanel
from tui.widgets.prompt import PromptArea
from tui.widgets.stream import ERROR_STYLE, StreamView


class RunView(JobView, Horizontal):
    """Ctrl+R runs the prompt through the chosen method; Escape cancels."""

    JOB = PREFIX = "run"

    def compose(self) -> ComposeResult:
        cfg = self.app.config
        yield MethodForm(cfg.run.method, cfg.methods, id="run-form")
        with Vertical(id="run-main"):
            yield PromptArea(cfg.run.prompt, id="prompt", soft_wrap=True, show_line_numbers=False,
                           tab_behavior="focus")
            with Horizontal(id="run-buttons", classes="button-row"):
                yield Button("Run  ^R", id="run-start", compact=True, variant="primary")
                yield Button("Cancel  Esc", id="run-cancel", compact=True, variant="error", disabled=True)
                yield Label("", id="run-status", classes="status", markup=False)
            yield StreamView(id="stream", inline_candidates=cfg.ui.inline_candidates)
        yield MetricsPanel(id="metrics")

    def on_mount(self) -> None:
        self.query_one("#prompt", PromptArea).border_title = "Prompt"
        self.query_one("#stream", StreamView).border_title = "Output"
        self.query_one("#metrics", MetricsPanel).border_title = "Metrics"
        self.query_one("#run-form", MethodForm).border_title = "Method"
        self._ticker = self.set_interval(0.5, self._tick, pause=True)
        self.last_summary: ev.Summary | None = None

    @property
    def form(self) -> MethodForm:
        return self.query_one("#run-form", MethodForm)

    @property
    def prompt(self) -> str:
        return self.query_one("#prompt", PromptArea).text

    # -- starting ------------------------------------------------------------------------------
    def start(self) -> bool:
        """Start a run with the form's settings; False (with a message) when it cannot start."""
        app = self.app
        if app.engine is None:
            app.notify("Load a model first (F2, Models).", severity="warning")
            return False
        question = self.prompt.strip()
        if not question:
            app.notify("Write a prompt first.", severity="warning")
            return False
        method = self.form.method
        try:
            runner = forms.make_runner(method, self.form.values())
        except LatentLocalError as exc:
            app.notify(str(exc), title=f"{title(method)}: bad setting", severity="error", timeout=10)
            return False
        job = self.begin()
        if job is None:
            return False
        app.config.run.method = method
        app.config.run.prompt = self.prompt
        app.save_config()
        self.last_summary = None
        self.query_one("#stream", StreamView).clear()
        self.query_one("#metrics", MetricsPanel).reset(method)
        self.set_running(True, "running…")
        self.launch(job, lambda job: self._generate(runner, question, job))
        return True

    def running_changed(self, running: bool) -> None:
        self.query_one("#stream", StreamView).set_live(running)
        if running:
            self._ticker.resume()
        else:
            self._ticker.pause()
        # a blinking cursor is a frame of its own twice a second, a third of the frames while
        # tokens stream (bench/bench_tui.py); the cursor stays, steady, for typing the next prompt
        self.query_one("#prompt", PromptArea).cursor_blink = not running

    def _tick(self) -> None:
        self.query_one("#metrics", MetricsPanel).tick()

    def _generate(self, runner, question: str, job: Job) -> None:
        """The worker's body (on the engine thread)."""
        engine = self.app.engine
        interval = self.app.config.ui.flush_ms / 1000
        pump(runner(engine, question, job.cancel),
             lambda batch: self.post_message(Events("run", batch)), interval)

    # -- streaming -----------------------------------------------------------------------------
    def job_events(self, events: list[ev.Event]) -> None:
        self.query_one("#stream", StreamView).feed(events)
        self.query_one("#metrics", MetricsPanel).feed(events)
        for e in events:
            if isinstance(e, ev.ColdStop):
                self.app.notify(f"Cold Stop fired at step {e.step}: entropy stayed below "
                                f"{e.threshold:g} nats for {e.patience} steps.", title="Cold Stop")
            elif isinstance(e, ev.Notice):  # e.g. --max-tokens cut to fit the context
                self.app.notify(e.message, title=e.kind.replace("_", " ").capitalize(),
                                severity="warning", timeout=10)
            elif isinstance(e, ev.Summary):
                self.last_summary = e

    def job_failed(self, error: str) -> None:
        self.query_one("#stream", StreamView).note(f"error: {error}", ERROR_STYLE)
        self.app.notify(error, title="Run failed", severity="error", timeout=10)

    def finish_job(self, cancelled: bool) -> str:
        s = self.last_summary
        if s is None:
            return "failed" if not cancelled else "cancelled"
        if s.finish_reason == "cancelled":
            return "cancelled"
        return f"done: {s.finish_reason}"

    @on(MethodForm.Changed)
    def _form_changed(self) -> None:
        self.app.config.run.method = self.form.method
        self.app.save_config_soon()
