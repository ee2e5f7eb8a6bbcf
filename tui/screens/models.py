"""Models: the bundled model, GGUFs in the user's models folder, or any path; load one."""

from __future__ import annotations

import time
import warnings
from dataclasses import replace
from pathlib import Path

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, DataTable, Input, Label, ProgressBar, Select, Static

from latentlocal.engine_settings import (
    MAX_SEQUENCES,
    REASONING_MODES,
    EngineSettings,
    check_kv_memory,
    kv_bytes_per_token,
)
from latentlocal.errors import LatentLocalError
from latentlocal.models import list_models, models_dir
from tui.jobs import error_text
from tui.paths import short


def human_size(n: int | None) -> str:
    if not n:
        return "?"
    if n >= 1e9:
        return f"{n / 1e9:.1f} GB"
    if n >= 1e6:
        return f"{n / 1e6:.0f} MB"
    return f"{n / 1e3:.0f} KB"


_INFO_CACHE: dict[tuple[str, int, int], dict] = {}


def _size(path: str) -> int | None:
    try:
        return Path(path).stat().st_size
    except OSError:
        return None


def _cache_key(path: str) -> tuple[str, int, int]:
    try:
        st = Path(path).stat()
    except OSError:
        return (path, -1, -1)
    return (path, st.st_size, st.st_mtime_ns)


def _read_info(path: str) -> tuple[dict | None, str | None]:
    """``read_info`` (cached per file size and mtime): (info, None) or (None, error)."""
    from latentlocal.gguf_header import read_info

    key = _cache_key(path)
    if key in _INFO_CACHE:
        return _INFO_CACHE[key], None
    try:
        info = read_info(path)
    except (LatentLocalError, OSError) as exc:
        return None, error_text(exc)
    _INFO_CACHE[key] = info
    return info, None


class ModelList(Message):
    """The model files found (listed in a worker): (path, bundled) pairs."""

    def __init__(self, entries: list[tuple[str, bool]]) -> None:
        super().__init__()
        self.entries = entries


class ModelInfo(Message):
    """GGUF header facts of one file (read in a worker)."""

    def __init__(self, path: str, bundled: bool, info: dict | None, error: str | None) -> None:
        super().__init__()
        self.path, self.bundled, self.info, self.error = path, bundled, info, error


class Loaded(Message):
    def __init__(self, engine, seconds: float, warnings_: list[str], error: str | None) -> None:
        super().__init__()
        self.engine, self.seconds, self.warnings, self.error = engine, seconds, warnings_, error


class ModelsView(Vertical):
    """Pick a row (Enter or Load) to load it; a path in the box adds any GGUF."""

    COLUMNS = ("tag", "name", "arch", "layers", "width", "size", "path")

    def compose(self) -> ComposeResult:
        cfg = self.app.config.model
        yield Static(f"Models folder: {short(models_dir())}  (set LATENTLOCAL_MODELS to change; "
                     "*.gguf files there are listed)", classes="hint")
        yield DataTable(id="model-table", cursor_type="row", zebra_stripes=True)
        with Horizontal(classes="button-row"):
            yield Input(placeholder="or any path to a .gguf file, then Enter", id="model-path", compact=True)
            yield Button("Add path", id="model-add", compact=True)
        with Grid(id="load-grid"):
            yield Label("GPU offload layers", classes="field-label")
            yield Input(str(cfg.n_gpu_layers), type="integer", id="opt-gpu", compact=True)
            yield Label("Context tokens", classes="field-label")
            yield Input(str(cfg.n_ctx), type="integer", id="opt-ctx", compact=True)
            yield Label("CPU threads (0 = auto)", classes="field-label")
            yield Input(str(cfg.threads), type="integer", id="opt-threads", compact=True)
            yield Label("Parallel sequences", classes="field-label")
            yield Input(str(cfg.parallel), type="integer", id="opt-parallel", compact=True)
            yield Label("Reasoning (think tokens)", classes="field-label")
            reasoning = cfg.reasoning if cfg.reasoning in REASONING_MODES else EngineSettings().reasoning
            select = Select([(m, m) for m in REASONING_MODES], value=reasoning, allow_blank=False,
                            id="opt-reasoning", compact=True)
            select.tooltip = ("auto: a model with <think> tokens thinks; off: it answers at once "
                              "after an empty thinking span; on: refuse a model without them")
            yield select
        with Grid(id="rpc-grid"):
            yield Label("RPC workers", classes="field-label")
            yield Input(cfg.rpc, placeholder="HOST:PORT,... (latentlocal worker)", id="opt-rpc", compact=True)
            yield Label("Tensor split", classes="field-label")
            yield Input(cfg.tensor_split, placeholder="e.g. 3,1", id="opt-split", compact=True)
        yield Static(id="gpu-note", classes="hint")
        with Horizontal(classes="button-row"):
            yield Button("Load  Enter", id="model-load", compact=True, variant="primary")
            yield Label("", id="load-status", classes="status", markup=False)
        yield ProgressBar(total=1, show_eta=False, show_percentage=False, id="load-progress")

    def on_mount(self) -> None:
        table = self.query_one("#model-table", DataTable)
        for col in self.COLUMNS:
            table.add_column("" if col == "tag" else col, key=col)
        self.rows: dict[str, dict] = {}
        self.query_one("#load-progress").display = False
        self._load_started = 0.0
        self._ticker = self.set_interval(0.2, self._tick, pause=True)
        self._gpu_note()
        self.scan()

    def _gpu_note(self) -> None:
        from latentlocal.engine import gpu_offload_supported

        ok = gpu_offload_supported()
        self.gpu_supported = ok
        note = ("GPU offload: available in this build (layers to put on the GPU or RPC workers; -1 = all)."
                if ok else
                "GPU offload: this llama-cpp-python build is CPU-only, so offload layers go to RPC "
                "workers only (0 = all of them there; without workers the layers are ignored).")
        self.query_one("#gpu-note", Static).update(note)

    # -- listing -------------------------------------------------------------------------------
    def scan(self) -> None:
        """List the models and read their headers, in a worker: walking a large models folder
        (or one on a network drive) held the first screen until it was done."""
        self._scan(self.app.config.model.path)

    @work(thread=True, group="scan")
    def _scan(self, last: str) -> None:
        entries = [(str(e.path), e.bundled) for e in list_models()]
        if last and last not in {p for p, _ in entries} and Path(last).is_file():
            entries.append((last, False))
        self.post_message(ModelList(entries))
        # header facts (no weights; the vocabulary makes each take a moment)
        for path, bundled in entries:
            self.post_message(ModelInfo(path, bundled, *_read_info(path)))

    def on_model_list(self, msg: ModelList) -> None:
        for path, bundled in msg.entries:
            if path not in self.rows:
                self._show(path, bundled, _INFO_CACHE.get(_cache_key(path)), None)

    @work(thread=True, group="scan")
    def inspect_path(self, path: str) -> None:
        self.post_message(ModelInfo(path, False, *_read_info(path)))

    def on_model_info(self, msg: ModelInfo) -> None:
        if msg.error is not None and not msg.bundled and msg.path not in self.rows:
            self.app.notify(msg.error, title="Not a usable model", severity="error", timeout=8)
        self._show(msg.path, msg.bundled, msg.info, msg.error)
        if msg.error is None and msg.path == str(Path(self._pending_path()).expanduser()):
            table = self.query_one("#model-table", DataTable)
            table.move_cursor(row=table.get_row_index(msg.path))

    def _show(self, path: str, bundled: bool, info: dict | None, error: str | None) -> None:
        table = self.query_one("#model-table", DataTable)
        self.rows[path] = {"bundled": bundled, "error": error, **(info or {})}
        tag = "★ bundled" if bundled else ""
        if error is not None:
            cells = (tag, "unreadable", "", "", "", "", f"{short(path)}: {error}")
        elif info is None:
            cells = (tag, Path(path).stem, "…", "…", "…", human_size(_size(path)), short(path))
        else:
            cells = (tag, str(info.get("name")), str(info.get("arch")), str(info.get("n_layer")),
                     str(info.get("n_embd")), human_size(info.get("size_bytes")), short(path))
        # DataTable reads a str cell as markup: a path or name with "[" in it is the user's text
        cells = tuple(escape(c) for c in cells)
        if path in table.rows:
            for col, value in zip(self.COLUMNS, cells):
                table.update_cell(path, col, value, update_width=True)
            return
        table.add_row(*cells, key=path)
        last = self.app.config.model.path
        if path == last or (bundled and not last):
            table.move_cursor(row=table.get_row_index(path))

    def _pending_path(self) -> str:
        return self.query_one("#model-path", Input).value.strip()

    def selected_path(self) -> str | None:
        table = self.query_one("#model-table", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return key.value

    @on(Input.Submitted, "#model-path")
    @on(Button.Pressed, "#model-add")
    def _add(self) -> None:
        typed = self._pending_path()
        if not typed:  # Path("") is ".": an empty box added a row for the current folder
            self.app.notify("Type the path of a .gguf file first.", severity="warning")
            return
        self.inspect_path(str(Path(typed).expanduser()))

    # -- loading -------------------------------------------------------------------------------
    def _int(self, wid: str, lo: int, name: str) -> int:
        text = self.query_one(wid, Input).value.strip()
        try:
            v = int(text or 0)
        except ValueError:
            raise LatentLocalError(f"{name} must be a whole number, not {text!r}") from None
        if v < lo:
            raise LatentLocalError(f"{name} must be at least {lo}, not {v}")
        return v

    def load_selected(self, path: str | None = None) -> bool:
        app = self.app
        path = path or self.selected_path()
        if path is None:
            app.notify("No model to load: add a path first.", severity="warning")
            return False
        row = self.rows.get(path, {})
        if row.get("error"):
            app.notify(row["error"], title="Cannot load this file", severity="error")
            return False
        try:
            rpc_text = self.query_one("#opt-rpc", Input).value.strip()
            split_text = self.query_one("#opt-split", Input).value.strip()
            # checked here (EngineSettings parses both) so a typo is named before the old model goes
            reasoning = str(self.query_one("#opt-reasoning", Select).value)
            workers = EngineSettings(rpc=rpc_text, tensor_split=split_text, reasoning=reasoning)
            gpu = (self._int("#opt-gpu", -1, "GPU offload layers")
                   if self.gpu_supported or workers.rpc else 0)
            n_ctx = self._int("#opt-ctx", 256, "Context tokens")
            threads = self._int("#opt-threads", 0, "CPU threads")
            parallel = self._int("#opt-parallel", 1, "Parallel sequences")
        except LatentLocalError as exc:
            app.notify(str(exc), severity="error")
            return False
        if parallel > MAX_SEQUENCES:
            app.notify(f"Parallel sequences must be {MAX_SEQUENCES} or fewer.", severity="error")
            return False
        heads = [row.get(k) for k in ("n_layer", "n_embd", "n_head", "n_head_kv")]
        if gpu == 0 and all(isinstance(v, int) and v > 0 for v in heads):
            # from the header, before the loaded model goes: the engine would refuse it after
            try:
                check_kv_memory(n_ctx, kv_bytes_per_token(*heads), Path(path).name)
            except LatentLocalError as exc:
                app.notify(str(exc), title="Context too large", severity="error", timeout=10)
                return False
        job = app.begin_job("load")
        if job is None:
            return False
        m = app.config.model
        m.n_gpu_layers, m.n_ctx, m.threads, m.parallel = gpu, n_ctx, threads, parallel
        m.rpc, m.tensor_split, m.reasoning = rpc_text, split_text, reasoning
        old = app.detach_engine()
        self._load_started = time.monotonic()
        self._loading_name = row.get("name") or Path(path).name
        bar = self.query_one("#load-progress", ProgressBar)
        bar.update(total=None)  # indeterminate: llama.cpp reports no progress here
        bar.display = True
        self.query_one("#model-load", Button).disabled = True
        self._ticker.resume()
        self._tick()
        self._load(path, old, gpu if gpu >= 0 else 10_000, n_ctx, threads or None, parallel, workers,
                   job.cancel)
        return True

    def _tick(self) -> None:
        dt = time.monotonic() - self._load_started
        self.query_one("#load-status", Label).update(f"loading {self._loading_name}… {dt:.1f} s")

    @work(thread=True, exclusive=True, group="engine")
    def _load(self, path: str, old, gpu: int, n_ctx: int, threads: int | None, parallel: int,
              workers: EngineSettings, cancel) -> None:
        from latentlocal.engine import Engine

        if old is not None:
            old.close()  # and its model: the engine loaded it
        t0 = time.perf_counter()
        engine, error, notes = None, None, []
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                engine = Engine.open(replace(workers, model=path, n_gpu_layers=gpu, n_ctx=n_ctx,
                                             n_threads=threads, n_seq_max=parallel), cancel=cancel)
            notes = [str(w.message) for w in caught]
        except Exception as exc:  # noqa: BLE001
            error = error_text(exc)
        self.post_message(Loaded(engine, time.perf_counter() - t0, notes, error))

    def on_loaded(self, msg: Loaded) -> None:
        self._ticker.pause()
        bar = self.query_one("#load-progress", ProgressBar)
        bar.display = False
        bar.update(total=1, progress=0)  # stop the indeterminate animation
        self.query_one("#model-load", Button).disabled = False
        app = self.app
        if msg.error is not None and app.job is not None and app.job.cancel.is_set():
            self.query_one("#load-status", Label).update("load cancelled")  # stopped part way
            app.end_job(app.job)
            return
        if msg.error is not None:
            self.query_one("#load-status", Label).update(f"load failed: {msg.error}")
            app.notify(msg.error, title="Load failed", severity="error", timeout=10)
            app.end_job(app.job)
            return
        cancelled = app.job is not None and app.job.cancel.is_set()
        app.end_job(app.job)
        if cancelled:
            msg.engine.close()
            self.query_one("#load-status", Label).update("load cancelled")
            return
        for note in msg.warnings:
            app.notify(note, severity="warning", timeout=8)
        m = msg.engine.model
        self.query_one("#load-status", Label).update(
            f"loaded {m.name} in {msg.seconds:.1f} s ({m.arch}, {m.n_layer} layers, n_embd {m.n_embd}, "
            f"{m.placement})")
        app.attach_engine(msg.engine, msg.seconds)

    @on(Button.Pressed, "#model-load")
    def _load_pressed(self) -> None:
        self.load_selected()

    @on(DataTable.RowSelected, "#model-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.load_selected(event.row_key.value)
