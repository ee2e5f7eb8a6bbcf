"""The latentlocal terminal UI: tabs for models, runs, comparisons, vectors and settings.

Long work (loading, generation, extraction) runs in thread workers that stream library events
back with ``post_message`` (see ``tui.jobs``); one job uses the engine at a time, and Escape /
Ctrl+C set the job's ``threading.Event`` so the method stops at its next step.
"""

from __future__ import annotations

import gc
from pathlib import Path

from textual.actions import SkipAction
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.notifications import SeverityLevel
from textual.widgets import Footer, Header, Select, TabbedContent, TabPane

from tui import config as cfgmod
from tui import heap
from tui.jobs import Job
from tui.screens.compare import CompareView
from tui.screens.help import HelpScreen
from tui.screens.models import ModelsView
from tui.screens.run import RunView
from tui.screens.settings import SettingsView
from tui.screens.vectors import VectorsView
from tui.widgets.method_form import MethodForm
from tui.widgets.stream import StreamView

TABS = ("models", "run", "compare", "vectors", "settings")


def _default_model() -> str | None:
    """An installed catalog model (`latentlocal models install`), else the bundled one; None when
    neither is there (the Models tab explains how to add one)."""
    from latentlocal.catalog import default_model_path

    path = default_model_path()
    return str(path) if path is not None else None


class LatentLocalApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "latentlocal"
    ENABLE_COMMAND_PALETTE = False

    BINDINGS = [
        # always shown: hiding it while no job runs recomposed the footer and laid out the
        # screen at each job's start and end, in the first frames of a generation (issue 14)
        Binding("escape", "cancel", "Cancel", priority=True),
        Binding("ctrl+c", "interrupt", "Cancel/Quit", show=False, priority=True),
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("f1", "help", "Help", priority=True),
        Binding("question_mark", "help", "Help", show=False),
        Binding("f2", "tab('models')", "Models", priority=True),
        Binding("f3", "tab('run')", "Run", priority=True),
        Binding("f4", "tab('compare')", "Compare", priority=True),
        Binding("f5", "tab('vectors')", "Vectors", priority=True),
        Binding("f6", "tab('settings')", "Settings", priority=True),
        Binding("ctrl+r", "start", "Start", priority=True),
        Binding("ctrl+o", "pick_method", "Method", priority=True),
        Binding("ctrl+t", "toggle_candidates", "Candidates", priority=True),
        Binding("ctrl+l", "clear_output", "Clear", show=False, priority=True),
    ]

    def notify(self, message: str, *, title: str = "", severity: SeverityLevel = "information",
               timeout: float | None = None, markup: bool = False) -> None:
        """Notifications carry paths, errors and model text, never markup: Textual's default
        (markup on) raised MarkupError for a file named "a[/]b.gguf" and ate "[q4_k_m]"."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def __init__(self, autoload: bool | None = None, engine=None) -> None:
        """``engine``: an already loaded Engine to use (and leave open at exit), e.g. in tests."""
        super().__init__()
        self.config, self.config_problems = cfgmod.load()
        self.autoload = self.config.model.autoload if autoload is None else autoload
        self.engine = None
        self._given_engine = engine
        self.load_seconds = 0.0
        self.job: Job | None = None
        self._save_timer = None

    # -- layout --------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="tabs", initial="models"):
            with TabPane("Models F2", id="models"):
                yield ModelsView(id="models-view")
            with TabPane("Run F3", id="run"):
                yield RunView(id="run-view")
            with TabPane("Compare F4", id="compare"):
                yield CompareView(id="compare-view")
            with TabPane("Vectors F5", id="vectors"):
                yield VectorsView(id="vectors-view")
            with TabPane("Settings F6", id="settings"):
                yield SettingsView(id="settings-view")
        yield Footer()

    def on_mount(self) -> None:
        if self.config.ui.theme in self.available_themes:
            self.theme = self.config.ui.theme
        self.sub_title = "no model loaded: pick one and press Enter"
        for problem in self.config_problems:
            self.notify(problem, title="Settings", severity="warning", timeout=10)
        # the first start (no model used yet) opens the default model, ready to run
        last = self.config.model.path or _default_model()
        if self._given_engine is not None:
            self.attach_engine(self._given_engine, 0.0)
        elif self.autoload and last and Path(last).is_file():
            self.query_one(ModelsView).load_selected(last)
            self.action_tab("run")
        else:
            self.call_after_refresh(self._focus_tab, "models")

    # -- engine --------------------------------------------------------------------------------
    def detach_engine(self):
        """Hand the loaded engine to a loader that closes it (the app no longer uses it)."""
        old, self.engine = self.engine, None
        self.sub_title = "loading…"
        return None if old is self._given_engine else old

    def attach_engine(self, engine, seconds: float) -> None:
        self.engine = engine
        self.load_seconds = seconds
        m = engine.model
        self.sub_title = f"{m.name} · {m.arch} · {m.n_layer} layers · n_embd {m.n_embd} · {m.placement}"
        if m.think_tokens() is not None:
            # which way every method decodes on it (EngineSettings.reasoning)
            self.sub_title += " · thinking off" if m.reasoning == "off" else " · thinks in <think>"
        self.config.model.path = str(m.path)
        self.save_config()
        if engine is not self._given_engine:
            self.notify(f"{m.name} loaded in {seconds:.1f} s. Write a prompt and press Ctrl+R.",
                        title="Model ready")
        if self.query_one("#tabs", TabbedContent).active == "models":
            self.action_tab("run")
        vectors = self.query_one(VectorsView)
        if vectors.inspected is not None:
            vectors.inspect(vectors.inspected[2], quiet=True)

    # -- jobs ----------------------------------------------------------------------------------
    def begin_job(self, name: str) -> Job | None:
        if self.job is not None:
            what = {"load": "a model is loading", "run": "a generation is running",
                    "compare": "a comparison is running", "extract": "an extraction is running"}
            self.notify(f"Busy: {what.get(self.job.name, self.job.name)}. Esc cancels it.",
                        severity="warning")
            return None
        self.job = Job(name)
        return self.job

    def end_job(self, job: Job | None) -> None:
        if job is not None and self.job is job:
            self.job = None
            # after the job's last frame: a full collection takes ~150 ms (tui.heap)
            self.call_after_refresh(heap.settle)

    def cancel_job(self) -> bool:
        if self.job is None:
            return False
        if not self.job.cancel.is_set():
            self.job.cancel.set()
            if self.job.name == "load":
                self.notify("Loading cannot stop midway; the model is unloaded when it finishes.")
        return True

    # -- config --------------------------------------------------------------------------------
    def save_config(self) -> None:
        if self._save_timer is not None:
            self._save_timer.stop()
            self._save_timer = None
        try:
            self._collect_settings()
            cfgmod.save(self.config)
        except OSError as exc:
            self.notify(f"cannot save settings to {cfgmod.config_path()}: {exc.strerror}",
                        severity="error")

    def save_config_soon(self) -> None:
        if self._save_timer is not None:
            self._save_timer.stop()
        self._save_timer = self.set_timer(0.5, self.save_config)

    def _collect_settings(self) -> None:
        try:
            form = self.query_one("#run-form", MethodForm)
            form._remember()
            self.config.run.method = form.method
            self.config.run.prompt = self.query_one(RunView).prompt
        except Exception:  # during shutdown the widgets may be gone
            pass

    def set_inline_candidates(self, on: bool) -> None:
        self.config.ui.inline_candidates = on
        self.query_one("#stream", StreamView).set_inline_candidates(on)
        box = self.query_one("#set-inline")
        if box.value != on:
            box.value = on
        self.save_config_soon()

    async def use_seal_vector(self, path: str) -> None:
        form = self.query_one("#run-form", MethodForm)
        await form.select_method("seal")
        form.set_value("vector", path)
        self.action_tab("run")
        self.notify(f"SEAL will steer with {Path(path).name}.")

    # -- actions -------------------------------------------------------------------------------
    def action_cancel(self) -> None:
        if not self.cancel_job():
            raise SkipAction()

    def action_interrupt(self) -> None:
        """Ctrl+C: cancel a job; otherwise copy a selection; otherwise quit."""
        if self.cancel_job():
            return
        focused = self.focused
        if getattr(focused, "selected_text", "") or self.screen.get_selected_text():
            raise SkipAction()
        self.exit()

    async def action_quit(self) -> None:
        self.cancel_job()
        self.save_config()
        self.exit()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def _focus_tab(self, tab: str) -> None:
        targets = {"models": "#model-table", "run": "#prompt", "compare": "#cmp-prompt",
                   "vectors": "#vx-data", "settings": "#set-theme"}
        try:
            self.query_one(targets[tab]).focus()
        except Exception:
            pass

    def action_tab(self, tab: str) -> None:
        if not isinstance(self.screen, HelpScreen) and tab in TABS:
            self.query_one("#tabs", TabbedContent).active = tab
            self.call_after_refresh(self._focus_tab, tab)

    def action_start(self) -> None:
        active = self.query_one("#tabs", TabbedContent).active
        if active == "run":
            self.query_one(RunView).start()
        elif active == "compare":
            self.query_one(CompareView).start()
        elif active == "vectors":
            self.query_one(VectorsView).start()
        elif active == "models":
            self.query_one(ModelsView).load_selected()
        else:
            self.notify("Ctrl+R starts a run on the Run, Compare and Vectors tabs.")

    def action_pick_method(self) -> None:
        """Open the Run tab's method list (reaching it with Tab takes many presses)."""
        if isinstance(self.screen, HelpScreen):
            return
        self.query_one("#tabs", TabbedContent).active = "run"
        self.call_after_refresh(self._open_method_list)

    def _open_method_list(self) -> None:
        select = self.query_one("#run-form #method", Select)
        select.focus()
        select.expanded = True

    def action_toggle_candidates(self) -> None:
        self.set_inline_candidates(not self.config.ui.inline_candidates)
        state = "shown" if self.config.ui.inline_candidates else "hidden"
        self.notify(f"Soft-step candidates {state} in the output.", timeout=2)

    def action_clear_output(self) -> None:
        if self.job is None or self.job.name != "run":
            self.query_one("#stream", StreamView).clear()

    # -- shutdown ------------------------------------------------------------------------------
    def on_unmount(self) -> None:
        self.save_config()
        gc.unfreeze()  # tui.heap: what the app froze is collectable again (tests run many apps)
        if self.job is None and self.engine is not None and self.engine is not self._given_engine:
            engine, self.engine = self.engine, None
            engine.close()  # and its model: the Models tab opened it with Engine.open


def main() -> int:
    app = LatentLocalApp()
    app.run()
    # Textual sets 1 when the app ended on an unhandled error (it has printed the traceback)
    return app.return_code or 0


if __name__ == "__main__":
    raise SystemExit(main())
