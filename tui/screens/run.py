"""Run: a prompt, a method with its settings, streamed output and live metrics."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Label

from latentlocal import events as ev
from latentlocal.errors import LatentLocalError
from tui import forms
from tui.jobs import Events, Job, JobDone, JobFailed, error_text, pump
from tui.widgets.method_form import MethodForm, title
from tui.widgets.metrics import MetricsPanel
from tui.widgets.prompt import PromptArea
from tui.widgets.stream import ERROR_STYLE, StreamView


class RunView(Horizontal):
    """Ctrl+R runs the prompt through the chosen method; Escape cancels."""

    def compose(self) -> ComposeResult:
        cfg = self.app.config
        yield MethodForm(cfg.run.method, cfg.methods, id="run-form")
        with Vertical(id="run-main"):
            yield PromptArea(cfg.run.prompt, id="prompt", soft_wrap=True, show_line_numbers=False,
                           tab_behavior="focus")
            with Horizontal(id="run-buttons", classes="button-row"):
                yield Button("Run  ^R", id="run-start", compact=True, variant="primary")
                yield Button("Cancel  Esc", id="run-cancel", compact=True, variant="error", disabled=True)
                yield Label("", id="run-status", classes="status")
            yield StreamView(id="stream", inline_candidates=cfg.ui.inline_candidates)
        yield MetricsPanel(id="metrics")

    def on_mount(self) -> None:
        self.query_one("#prompt", PromptArea).border_title = "Prompt"
        self.query_one("#stream", StreamView).border_title = "Output"
        self.query_one("#metrics", MetricsPanel).border_title = "Metrics"
        self.query_one("#run-form", MethodForm).border_title = "Method"
        self._ticker = self.set_interval(0.5, self._tick, pause=True)
        self.job: Job | None = None
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
        job = app.begin_job("run")
        if job is None:
            return False
        app.config.run.method = method
        app.config.run.prompt = self.prompt
        app.save_config()
        self.job = job
        self.last_summary = None
        self.query_one("#stream", StreamView).clear()
        self.query_one("#metrics", MetricsPanel).reset(method)
        self._set_running(True, "running…")
        self._generate(runner, question, job)
        return True

    def _set_running(self, running: bool, status: str) -> None:
        self.query_one("#run-start", Button).disabled = running
        self.query_one("#run-cancel", Button).disabled = not running
        self.query_one("#run-status", Label).update(status)
        if running:
            self._ticker.resume()
        else:
            self._ticker.pause()

    def _tick(self) -> None:
        m = self.query_one("#metrics", MetricsPanel)
        if m.summary is None:
            m.query_one("#m-stats").update(m.stats_text())

    @work(thread=True, exclusive=True, group="engine")
    def _generate(self, runner, question: str, job: Job) -> None:
        engine = self.app.engine
        interval = self.app.config.ui.flush_ms / 1000
        try:
            pump(runner(engine, question, job.cancel),
                 lambda batch: self.post_message(Events("run", batch)), interval)
        except Exception as exc:  # noqa: BLE001 - shown to the user, the app keeps running
            self.post_message(JobFailed("run", error_text(exc)))
        finally:
            self.post_message(JobDone("run", job.cancel.is_set()))

    # -- streaming -----------------------------------------------------------------------------
    def on_events(self, msg: Events) -> None:
        if msg.job != "run":
            return
        self.query_one("#stream", StreamView).feed(msg.events)
        self.query_one("#metrics", MetricsPanel).feed(msg.events)
        for e in msg.events:
            if isinstance(e, ev.ColdStop):
                self.app.notify(f"Cold Stop fired at step {e.step}: entropy stayed below "
                                f"{e.threshold:g} nats for {e.patience} steps.", title="Cold Stop")
            elif isinstance(e, ev.Summary):
                self.last_summary = e

    def on_job_failed(self, msg: JobFailed) -> None:
        if msg.job == "run":
            self.query_one("#stream", StreamView).note(f"error: {msg.error}", ERROR_STYLE)
            self.app.notify(msg.error, title="Run failed", severity="error", timeout=10)

    def on_job_done(self, msg: JobDone) -> None:
        if msg.job != "run":
            return
        s = self.last_summary
        if s is None:
            status = "failed" if not msg.cancelled else "cancelled"
        elif s.finish_reason == "cancelled":
            status = "cancelled"
        else:
            status = f"done: {s.finish_reason}"
        self._set_running(False, status)
        self.app.end_job(self.job)
        self.job = None

    # -- buttons -------------------------------------------------------------------------------
    @on(Button.Pressed, "#run-start")
    def _start_pressed(self) -> None:
        self.start()

    @on(Button.Pressed, "#run-cancel")
    def _cancel_pressed(self) -> None:
        self.app.cancel_job()

    @on(MethodForm.Changed)
    def _form_changed(self) -> None:
        self.app.config.run.method = self.form.method
        self.app.save_config_soon()
