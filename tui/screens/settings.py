"""Settings: how the app looks and behaves; everything is saved to config.toml as it changes."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Grid, VerticalScroll
from textual.widgets import Checkbox, Input, Label, Select, Static

from tui.config import config_path
from tui.widgets.method_form import NO_SELECTION
from tui.paths import short, vectors_dir


class SettingsView(VerticalScroll):
    def compose(self) -> ComposeResult:
        ui = self.app.config.ui
        themes = sorted(self.app.available_themes)
        with Grid(classes="form-grid"):
            yield Label("Theme", classes="field-label")
            yield Select([(t, t) for t in themes], value=ui.theme if ui.theme in themes else NO_SELECTION,
                         id="set-theme", compact=True)
            yield Label("Soft steps", classes="field-label")
            yield Checkbox("show each soft step's top candidates in the output (Ctrl+T)",
                           value=ui.inline_candidates, id="set-inline", compact=True)
            yield Label("Screen updates (ms)", classes="field-label")
            yield Input(str(ui.flush_ms), type="integer", id="set-flush", compact=True)
            yield Label("At start-up", classes="field-label")
            yield Checkbox("load the last used model", value=self.app.config.model.autoload, id="set-autoload", compact=True)
        yield Static(id="set-paths", classes="hint")

    def on_mount(self) -> None:
        self.query_one("#set-paths", Static).update(
            f"Settings file: {short(config_path())}\nVectors folder: {short(vectors_dir())}\n"
            "Method settings are kept per method from the Run tab; model options from the Models tab.")

    @on(Select.Changed, "#set-theme")
    def _theme(self, event: Select.Changed) -> None:
        if event.value is not NO_SELECTION:
            self.app.theme = str(event.value)
            self.app.config.ui.theme = str(event.value)
            self.app.save_config_soon()

    @on(Checkbox.Changed, "#set-inline")
    def _inline(self, event: Checkbox.Changed) -> None:
        self.app.set_inline_candidates(event.value)

    @on(Checkbox.Changed, "#set-autoload")
    def _autoload(self, event: Checkbox.Changed) -> None:
        self.app.config.model.autoload = event.value
        self.app.save_config_soon()

    @on(Input.Changed, "#set-flush")
    def _flush(self, event: Input.Changed) -> None:
        try:
            ms = int(event.value)
        except ValueError:
            return
        self.app.config.ui.flush_ms = max(10, min(1000, ms))
        self.app.save_config_soon()
