"""The method selector and its settings, from the methods' settings declarations (see tui.forms)."""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.suggester import SuggestFromList
from textual.widget import Widget
from textual.widgets import Checkbox, Input, Label, Select, Static

from latentlocal.errors import LatentLocalError
from latentlocal.methods import registry
from tui import forms
from tui.paths import known_vectors

# The "nothing chosen" value of a Select (Select.NULL since Textual 1.0-ish, Select.BLANK before).
NO_SELECTION = Select.NULL if hasattr(Select, "NULL") else Select.BLANK

def title(name: str) -> str:
    """The method's display name, as its registry entry gives it."""
    try:
        return registry.spec(name).title
    except LatentLocalError:
        return name


class MethodForm(VerticalScroll):
    """A method Select and one input per option; empty inputs mean "the method's default"."""

    class Changed(Message):
        """The method or one of its settings changed."""

        def __init__(self, form: MethodForm) -> None:
            super().__init__()
            self.form = form

    def __init__(self, method: str, saved: dict[str, dict[str, Any]], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.specs = registry.specs()
        names = [s.name for s in self.specs]
        try:
            method = registry.canonical(method)
        except LatentLocalError:  # a saved method that is no longer registered
            method = names[0]
        self.method = method if method in names else names[0]
        self.saved = saved  # method -> {option: value}; shared with the app's config, updated live
        self.fields: list[forms.Field] = []
        self._loading = False

    def compose(self) -> ComposeResult:
        yield Select([(title(s.name), s.name) for s in self.specs], value=self.method,
                     allow_blank=False, id="method", compact=True)
        yield Static(id="method-desc", classes="hint")
        yield Vertical(id="fields")
        yield Static(id="field-help", classes="hint")

    async def on_mount(self) -> None:
        await self._build()

    # -- building ------------------------------------------------------------------------------
    def _widgets(self, f: forms.Field, value: Any) -> Widget:
        """One row: the flag's name and a compact input (help shows below the form on focus)."""
        wid = f"f-{f.name}"
        label_text = f.flag.lstrip("-")
        if f.kind == "bool":
            w: Widget = Checkbox(label_text, value=f.default if value is None else bool(value), id=wid,
                                 compact=True)
            w.tooltip = f.help
            return Horizontal(w, classes="field-row")
        label = Label(label_text, classes="field-name")
        label.tooltip = f.help
        hint = f.default_text
        if f.kind == "choice":
            w = Select([(c, c) for c in f.choices], value=str(value) if value in f.choices else NO_SELECTION,
                       prompt=f"({hint or 'default'})", allow_blank=True, id=wid, compact=True)
        else:
            kind = {"int": "integer", "float": "number"}.get(f.kind, "text")
            placeholder = f"({hint})" if hint else "(default)"
            if f.path:
                placeholder = "path to a .gguf vector"
            w = Input("" if value is None else str(value), placeholder=placeholder, type=kind, id=wid,
                      compact=True,
                      suggester=SuggestFromList(known_vectors(), case_sensitive=True) if f.path else None)
        w.tooltip = f.help
        if f.path:
            return Vertical(label, w, classes="field-col")
        return Horizontal(label, w, classes="field-row")

    async def _build(self) -> None:
        self._loading = True
        spec = next(s for s in self.specs if s.name == self.method)
        self.query_one("#method-desc", Static).update(spec.description)
        self.fields = forms.fields_for(self.method)
        values = self.saved.get(self.method, {})
        box = self.query_one("#fields", Vertical)
        await box.remove_children()
        widgets = [self._widgets(f, values.get(f.name)) for f in self.fields]
        await box.mount_all(widgets)
        self.query_one("#field-help", Static).update("")
        self._loading = False

    # -- values --------------------------------------------------------------------------------
    def values(self) -> dict[str, Any]:
        """The current settings by option name (None = the method's default)."""
        out: dict[str, Any] = {}
        for f in self.fields:
            try:
                w = self.query_one(f"#f-{f.name}")
            except Exception:
                continue
            if isinstance(w, Checkbox):
                out[f.name] = bool(w.value)
            elif isinstance(w, Select):
                out[f.name] = None if w.value is NO_SELECTION else str(w.value)
            elif isinstance(w, Input):
                out[f.name] = forms.typed(f, w.value)
        return out

    def set_value(self, name: str, value: Any) -> None:
        """Set one option's widget (used by tests and by other screens, e.g. a chosen vector)."""
        w = self.query_one(f"#f-{name}")
        if isinstance(w, Checkbox):
            w.value = bool(value)
        elif isinstance(w, Select):
            w.value = NO_SELECTION if value in (None, "") else str(value)
        elif isinstance(w, Input):
            w.value = "" if value is None else str(value)
        self._remember()

    def _remember(self) -> None:
        defaults = {f.name: f.default for f in self.fields}
        # a checkbox always has a value: it is kept only where it differs from the default
        stored = {k: v for k, v in self.values().items()
                  if not (v is None or v == "" or (isinstance(v, bool) and v == defaults.get(k)))}
        self.saved[self.method] = stored

    async def select_method(self, name: str) -> None:
        name = registry.canonical(name)
        if name == self.method:
            return
        self._remember()
        self.method = name
        sel = self.query_one("#method", Select)
        if sel.value != name:
            with sel.prevent(Select.Changed):
                sel.value = name
        await self._build()
        self.post_message(self.Changed(self))

    # -- events --------------------------------------------------------------------------------
    @on(Select.Changed, "#method")
    async def _method_changed(self, event: Select.Changed) -> None:
        event.stop()
        if event.value is not NO_SELECTION and event.value != self.method:
            await self.select_method(str(event.value))

    @on(Input.Changed)
    @on(Checkbox.Changed)
    @on(Select.Changed)
    def _field_changed(self, event: Message) -> None:
        if self._loading or getattr(event, "control", None) is None:
            return
        if getattr(event.control, "id", "") == "method":
            return
        event.stop()
        self._remember()
        self.post_message(self.Changed(self))

    def on_descendant_focus(self, event) -> None:
        wid = getattr(event.widget, "id", "") or ""
        for f in self.fields:
            if wid == f"f-{f.name}":
                default = f" (default {f.default_text})" if f.default_text else ""
                self.query_one("#field-help", Static).update(f"{f.flag}: {f.help}{default}")
                return
