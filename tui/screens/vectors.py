"""Vectors: extract a SEAL vector from a JSONL file, inspect a vector file, export it, and show
the ``llama-cli`` command line that applies it."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
from rich.markup import escape
from textual import on
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.suggester import SuggestFromList
from textual.widgets import Button, Input, Label, Log, ProgressBar, Select, Static

from latentlocal import controlvector as cvio
from latentlocal import events as ev
from latentlocal.errors import LatentLocalError
from tui.jobs import Events, Job, JobView, error_text, pump
from tui.paths import known_vectors, short, vectors_dir


def _seal():
    """The SEAL module, or None while it is not installed."""
    try:
        from latentlocal.methods import seal
    except ImportError:
        return None
    return seal if hasattr(seal, "extract") and hasattr(seal, "ExtractConfig") else None


def llama_cli_command(model: str, vector: str, scale: float) -> str:
    return (f"llama-cli -m {shlex.quote(model)} "
            f"--control-vector-scaled {shlex.quote(vector)} {scale:g}")


class VectorsView(JobView, Horizontal):
    """Left: extraction; right: inspect and export."""

    JOB, PREFIX = "extract", "vx"

    def compose(self) -> ComposeResult:
        v = self.app.config.vectors
        with VerticalScroll(id="vec-extract", classes="panel"):
            yield Static("Generates reasoning traces for the questions, splits them into thoughts and "
                         "takes S = mean(execution) − mean(reflection, transition) of the hidden "
                         "states at the thought delimiters. Stopped runs resume where they left off.",
                         classes="hint")
            with Grid(classes="form-grid"):
                yield Label("Dataset JSONL", classes="field-label")
                yield Input(v.data, id="vx-data", compact=True, placeholder="file.jsonl with a \"question\" field per line")
                yield Label("Output vector", classes="field-label")
                yield Input(v.out, id="vx-out", compact=True, placeholder="default: the vectors folder")
                yield Label("Problems", classes="field-label")
                yield Input(str(v.limit), id="vx-limit", compact=True, type="integer")
                yield Label("Layer", classes="field-label")
                yield Input(str(v.layer or ""), id="vx-layer", compact=True, type="integer", placeholder="default")
                yield Label("Elicit", classes="field-label")
                yield Select([("none: the model's own thoughts", "none"),
                              ("cue: force 'Wait,'/'Alternatively,'", "cue")],
                             value=v.elicit if v.elicit in ("none", "cue") else "cue",
                             allow_blank=False, id="vx-elicit", compact=True)
                yield Label("Tokens per trace", classes="field-label")
                yield Input(str(v.max_tokens), id="vx-max", compact=True, type="integer")
            with Horizontal(classes="button-row"):
                yield Button("Extract  ^R", id="vx-start", compact=True, variant="primary")
                yield Button("Cancel  Esc", id="vx-cancel", compact=True, variant="error", disabled=True)
                yield Label("", id="vx-status", classes="status", markup=False)
            yield ProgressBar(total=1, id="vx-progress", show_eta=True)
            yield Log(id="vx-log", max_lines=500)
        with VerticalScroll(id="vec-right"):
            yield from self._right(v)

    def _right(self, v) -> ComposeResult:
        with Vertical(id="vec-inspect", classes="panel"):
            with Horizontal(classes="button-row"):
                yield Input(v.inspect, id="vi-path", compact=True, placeholder="a control vector .gguf",
                            suggester=SuggestFromList(known_vectors(), case_sensitive=True))
                yield Button("Inspect", id="vi-open", compact=True)
                yield Button("Use for SEAL", id="vi-use", compact=True)
            yield Static(id="vi-info")
        with Vertical(id="vec-export", classes="panel"):
            with Horizontal(classes="button-row"):
                yield Input(v.export_to, id="ve-path", compact=True, placeholder="export to (a .gguf path)")
                yield Button("Export", id="ve-go", compact=True, variant="primary")
            yield Label("llama.cpp command line", classes="field-label")
            yield Static(id="ve-cmd", classes="command")
            yield Button("Copy command", id="ve-copy", compact=True)

    def on_mount(self) -> None:
        self.query_one("#vec-extract").border_title = "Extract a SEAL vector"
        self.query_one("#vec-inspect").border_title = "Inspect"
        self.query_one("#vec-export").border_title = "Export"
        self.inspected: tuple[cvio.ControlVector, dict | None, str] | None = None
        self.command = ""
        if _seal() is None:
            self.query_one("#vx-start", Button).disabled = True
            self.query_one("#vx-status", Label).update("SEAL extraction is not installed in this version")
        self._command(None)
        if self.app.config.vectors.inspect:
            self.inspect(self.app.config.vectors.inspect, quiet=True)

    # -- extraction ----------------------------------------------------------------------------
    def _default_out(self) -> str:
        eng = self.app.engine
        stem = Path(eng.model.path).stem if eng is not None else "model"
        return str(vectors_dir() / f"seal-{stem}.gguf")

    def start(self) -> bool:
        app = self.app
        seal = _seal()
        if seal is None:
            app.notify("SEAL extraction is not available in this version.", severity="error")
            return False
        if app.engine is None:
            app.notify("Load a model first (F2, Models).", severity="warning")
            return False
        val = lambda wid: self.query_one(wid, Input).value.strip()  # noqa: E731
        data = val("#vx-data")
        out = val("#vx-out") or self._default_out()
        try:
            if not data:
                raise LatentLocalError("choose a JSONL dataset file first")
            limit = int(val("#vx-limit") or 20)
            layer = int(val("#vx-layer")) if val("#vx-layer") else None
            max_tokens = int(val("#vx-max") or 256)
            elicit = str(self.query_one("#vx-elicit", Select).value)
            cfg = seal.ExtractConfig(data=str(Path(data).expanduser()), out=str(Path(out).expanduser()),
                                     limit=limit, layer=layer, elicit=elicit, max_tokens=max_tokens)
            # before the job starts: an output under a file ("notes.txt/v.gguf") is a message
            Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            app.notify(f"cannot create the folder for {out}: {exc.strerror or exc}", severity="error")
            return False
        except (ValueError, LatentLocalError) as exc:
            app.notify(str(exc), severity="error")
            return False
        job = self.begin()
        if job is None:
            return False
        v = app.config.vectors
        v.data, v.out, v.limit, v.layer, v.elicit, v.max_tokens = data, out, limit, layer or 0, elicit, max_tokens
        app.save_config()
        self.query_one("#vx-out", Input).value = out
        bar = self.query_one("#vx-progress", ProgressBar)
        bar.update(total=limit, progress=0)
        log = self.query_one("#vx-log", Log)
        log.clear()
        log.write_line(f"extracting from {short(cfg.data)} into {short(cfg.out)}")
        self.set_running(True, "extracting…")
        self._out = cfg.out
        self.launch(job, lambda job: self._extract(seal, cfg, job))
        return True

    def _extract(self, seal, cfg, job: Job) -> None:
        """The worker's body (on the engine thread)."""
        pump(seal.extract(self.app.engine, cfg, job.cancel),
             lambda batch: self.post_message(Events("extract", batch)), 0.1)

    def failure_text(self, exc: BaseException, job: Job) -> str:
        if not job.cancel.is_set():
            return error_text(exc)
        seal = _seal()
        work = seal.work_dir(self._out) if seal is not None and hasattr(seal, "work_dir") else None
        kept = f"; traces so far are kept in {short(work)} and reused next time" if work else ""
        return f"cancelled{kept}"

    def job_events(self, events: list[ev.Event]) -> None:
        bar = self.query_one("#vx-progress", ProgressBar)
        log = self.query_one("#vx-log", Log)
        for e in events:
            if isinstance(e, ev.Progress):
                bar.update(total=e.total, progress=e.done)
                log.write_line(f"[{e.done}/{e.total}] {e.what}")
            elif isinstance(e, ev.Summary):
                path = e.extra.get("path", e.text)
                log.write_line(f"wrote {path} in {e.elapsed_s:.1f} s "
                               f"(layer {e.extra.get('layer')}, norm {e.extra.get('norm', 0):.3f})")
                self.query_one("#vi-path", Input).value = str(path)
                self.inspect(str(path))
                self.app.notify(f"SEAL vector written to {short(path)}", title="Extraction done")

    def job_failed(self, error: str) -> None:
        self.query_one("#vx-log", Log).write_line(error)
        if not error.startswith("cancelled"):
            self.app.notify(error, title="Extraction failed", severity="error", timeout=12)

    # -- inspect -------------------------------------------------------------------------------
    def inspect(self, path: str, quiet: bool = False) -> bool:
        path = str(Path(path).expanduser())
        info = self.query_one("#vi-info", Static)
        try:
            cv = cvio.import_gguf(path)
            manifest = cvio.read_manifest(path)
        except LatentLocalError as exc:
            self.inspected = None
            info.update(f"[b red]{escape(str(exc))}[/]" if not quiet else "")
            self._command(None)
            return False
        # paths, hints and manifest values are the user's text, never markup ("a[/]b.gguf")
        lines = [f"[b]{escape(short(path))}[/b]",
                 f"model hint: {escape(cv.model_hint or '(none)')}   width (n_embd): {cv.n_embd}   "
                 f"blocks: {cv.layer_count}",
                 "directions: " + ", ".join(
                     f"direction.{il} (norm {float(np.linalg.norm(cv.directions[il])):.3f})" for il in cv.layers)]
        if manifest:
            # a hand-edited manifest may hold any JSON type in any field
            counts = cvio.manifest_section(manifest, "counts").get("thoughts")
            model = cvio.manifest_section(manifest, "model")
            lines.append(escape(f"made by: {manifest.get('method', '?')} from {manifest.get('dataset', '?')}, "
                                f"{manifest.get('problems', '?')} problems, layer {manifest.get('layer', '?')}"))
            if isinstance(counts, dict) and counts:
                lines.append(escape("thoughts: " + ", ".join(f"{k} {v}" for k, v in counts.items())))
            if model:
                lines.append(escape(f"model: {model.get('name', '?')} ({model.get('file', '?')})"))
            if "recommended_scale" in manifest:
                lines.append(escape(f"recommended scale: {manifest['recommended_scale']}")
                             + f"  [dim]{escape(str(manifest.get('recommended_scale_method', '')))}[/dim]")
            if manifest.get("created"):
                lines.append(escape(f"created: {manifest['created']}"))
        else:
            lines.append("[dim]no manifest beside it (how it was made is unknown)[/dim]")
        eng = self.app.engine
        if eng is not None:
            m = eng.model
            try:
                cvio.import_gguf(path, expect_n_embd=m.n_embd, expect_model_hint=m.arch or None,
                                 expect_n_layer=m.n_layer)
                lines.append(f"[green]fits the loaded model {escape(m.name)}[/green]")
            except LatentLocalError as exc:
                lines.append(f"[yellow]does not fit the loaded model: {escape(str(exc))}[/yellow]")
        info.update("\n".join(lines))
        # remembered for the next start only once it has shown: a file that failed here must
        # not fail every start after
        self.inspected = (cv, manifest, path)
        self.app.config.vectors.inspect = path
        self._command(path)
        return True

    def _scale(self) -> tuple[float, str]:
        manifest = self.inspected[1] if self.inspected else None
        s = manifest.get("recommended_scale") if manifest else None
        if isinstance(s, (int, float)) and not isinstance(s, bool):
            return float(s), "the manifest's recommended scale"
        return 1.0, "no recommended scale in a manifest: 1.0; try smaller values first"

    def _model_for_command(self) -> str:
        eng = self.app.engine
        cv = self.inspected[0] if self.inspected else None
        if eng is not None and cv is not None and cv.n_embd == eng.model.n_embd:
            return str(eng.model.path)
        manifest = self.inspected[1] if self.inspected else None
        file = cvio.manifest_section(manifest, "model").get("file")
        return file if isinstance(file, str) and file else "MODEL.gguf"

    def _command(self, vector: str | None) -> None:
        box = self.query_one("#ve-cmd", Static)
        if vector is None:
            self.command = ""
            box.update("[dim]inspect or export a vector to see how llama.cpp apps use it[/dim]")
            return
        scale, why = self._scale()
        self.command = llama_cli_command(self._model_for_command(), vector, scale)
        box.update(f"{escape(self.command)}\n[dim]scale: {why}. llama.cpp applies it at every token; "
                   "latentlocal's SEAL steers only thought delimiters.[/dim]")

    # -- export --------------------------------------------------------------------------------
    def export(self, target: str) -> Path | None:
        app = self.app
        if self.inspected is None:
            app.notify("Inspect a vector first.", severity="warning")
            return None
        if not target:
            app.notify("Give a path to export to.", severity="warning")
            return None
        cv, manifest, src = self.inspected
        dest = Path(target).expanduser()
        if dest.suffix.lower() != ".gguf":
            dest = dest.with_suffix(dest.suffix + ".gguf") if dest.suffix else dest.with_suffix(".gguf")
        if dest.exists() and dest.resolve() == Path(src).resolve():
            app.notify("That is the vector itself; choose another path.", severity="warning")
            return None
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            out_manifest = dict(manifest) if manifest else None
            if out_manifest is not None:
                out_manifest["exported_from"] = src
            cvio.save(cv, dest, out_manifest)
        except (LatentLocalError, OSError) as exc:
            app.notify(str(exc), title="Export failed", severity="error", timeout=10)
            return None
        app.config.vectors.export_to = str(dest)
        app.save_config()
        self._command(str(dest))
        app.notify(f"Exported to {short(dest)}" + (" with its manifest" if manifest else ""),
                   title="Vector exported")
        return dest

    # -- buttons -------------------------------------------------------------------------------
    @on(Button.Pressed, "#vi-open")
    @on(Input.Submitted, "#vi-path")
    def _open(self) -> None:
        self.inspect(self.query_one("#vi-path", Input).value)

    @on(Button.Pressed, "#vi-use")
    async def _use(self) -> None:
        if self.inspected is None:
            self.app.notify("Inspect a vector first.", severity="warning")
            return
        await self.app.use_seal_vector(self.inspected[2])

    @on(Button.Pressed, "#ve-go")
    @on(Input.Submitted, "#ve-path")
    def _export(self) -> None:
        self.export(self.query_one("#ve-path", Input).value.strip())

    @on(Button.Pressed, "#ve-copy")
    def _copy(self) -> None:
        if self.command:
            self.app.copy_to_clipboard(self.command)
            self.app.notify("Command copied (where the terminal supports OSC 52).")
