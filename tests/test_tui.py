"""The terminal UI, driven with Textual's Pilot on the bundled SmolLM2-135M.

Every test runs the app against a config folder in tmp_path (HOME and XDG_* point there), with one
CPU thread and a small context so the file stays well under two minutes on a busy 2-core machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import pytest

from latentlocal import controlvector as cvio
from latentlocal import events as ev
from latentlocal.errors import LatentLocalError
from latentlocal.methods import registry

textual = pytest.importorskip("textual")

from tui import config as cfgmod  # noqa: E402
from tui import forms  # noqa: E402
from tui.app import LatentLocalApp  # noqa: E402
from tui.screens.run import RunView  # noqa: E402
from tui.jobs import pump  # noqa: E402

SIZE = (120, 40)
QUESTION = "What is 2 + 3?"
# Settings that keep any method short; applied when the method has the field (so methods added
# later run small too).
SMALL = {"max_tokens": 8, "samples": 2, "rounds": 1, "max_rounds": 1, "k": 2, "candidates": 2,
         "verify_tokens": 8, "dim": 8}


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("LATENTLOCAL_MODELS", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = cfgmod.Config()
    cfg.model.threads = 1        # one thread is fastest when other processes share the cores
    cfg.model.n_ctx = 1024
    cfg.model.parallel = 8
    cfg.run.prompt = QUESTION
    cfgmod.save(cfg)
    return tmp_path


def seal_vector(path: Path, scale: float | None = 0.25) -> Path:
    """A tiny valid SEAL vector for SmolLM2-135M (llama, n_embd 576, 30 blocks) at block 20."""
    rng = np.random.default_rng(0)
    cv = cvio.ControlVector("llama", {20: (rng.standard_normal(576) * 0.05).astype(np.float32)}, n_layer=30)
    manifest = {"method": "seal", "layer": 20, "model": {"file": "SmolLM2-135M-Instruct.Q4_1.gguf"}}
    if scale is not None:
        manifest["recommended_scale"] = scale
    cvio.save(cv, path, manifest)
    return path


@pytest.fixture(scope="module")
def engine(smol_model):
    """One context on the session's SmolLM2 for the app tests that do not test the picker."""
    from latentlocal.engine import Engine

    eng = Engine(smol_model, n_ctx=1024, n_seq_max=8, n_threads=1)
    yield eng
    eng.close()


def run(coro_fn, engine=None, timeout: float = 90, autoload: bool = False):
    """Run one Pilot scenario ``coro_fn(app, pilot)``, optionally with a loaded engine."""
    async def main():
        app = LatentLocalApp(engine=engine, autoload=autoload)
        async with app.run_test(size=SIZE) as pilot:
            await asyncio.wait_for(coro_fn(app, pilot), timeout)
            return app
    return asyncio.run(main())


async def wait_for(pilot, cond, timeout: float = 60, what: str = "condition") -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


async def load_bundled(app, pilot) -> None:
    """Pick the bundled model in the Models tab (it is highlighted) and press Enter."""
    table = app.query_one("#model-table")
    await wait_for(pilot, lambda: table.row_count > 0, what="model list")
    table.focus()
    await pilot.press("enter")
    await wait_for(pilot, lambda: app.engine is not None and app.job is None, what="model load")
    await pilot.pause()


async def run_and_wait(app, pilot, key: str = "ctrl+r", timeout: float = 60) -> None:
    await pilot.press(key)
    await wait_for(pilot, lambda: app.job is not None or app.query_one("#metrics").summary is not None,
                   timeout=5, what="run start")
    await wait_for(pilot, lambda: app.job is None, timeout=timeout, what="run end")
    await pilot.pause()


# ---------------------------------------------------------------------------------------------
# pieces without the app
# ---------------------------------------------------------------------------------------------


def test_config_round_trip_and_atomic_save(home):
    cfg = cfgmod.Config()
    cfg.run.prompt = 'quote " backslash \\ newline\n tab\t unicode é \x01'
    cfg.methods = {"soft-thinking": {"cold_stop_entropy": 0.5, "noise": "gumbel"}, "seal": {"always_on": True}}
    cfg.compare.methods = ["cot", "seal"]
    path = cfgmod.save(cfg)
    back, problems = cfgmod.load(path)
    assert problems == []
    assert back == cfg
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]  # no temp files left

    path.write_text("[model\nbroken")
    fresh, problems = cfgmod.load(path)
    assert fresh == cfgmod.Config() and "not valid TOML" in problems[0]
    # the broken file is kept beside, not overwritten by the next save's defaults
    assert (path.parent / "config.toml.bad").read_text() == "[model\nbroken" and not path.exists()
    assert "config.toml.bad" in problems[0]
    path.write_text("[x\n")
    assert "config.toml.bad.1" in cfgmod.load(path)[1][0] and (path.parent / "config.toml.bad.1").exists()
    path.write_text('[model]\nn_ctx = "big"\nnope = 1\n')
    fresh, problems = cfgmod.load(path)
    assert fresh.model.n_ctx == 4096 and len(problems) == 2


# config.toml as the app's own TOML writer wrote it before tomli-w (its escapes, quoted keys,
# sub-tables): files users already have must keep loading to the same settings.
OLD_WRITER_CONFIG = '# latentlocal terminal UI settings (written by the app; edits are kept)\n\n[model]\npath = "/models/Qwen 2.5 \\"coder\\".gguf"\nn_gpu_layers = 0\nn_ctx = 8192\nthreads = 0\nparallel = 16\nautoload = false\n\n[run]\nmethod = "soft-thinking"\nprompt = "quote \\" backslash \\\\ newline\\n tab\\t unicode é \\u0001 del \\u007f"\n\n[ui]\ntheme = "textual-dark"\ninline_candidates = true\nflush_ms = 50\n\n[compare]\nmethods = ["cot", "seal", "swi-reasoning"]\nmax_tokens = 0\n\n[vectors]\ndata = ""\nout = ""\nlimit = 20\nlayer = 19\nelicit = "cue"\nmax_tokens = 256\ninspect = ""\nexport_to = ""\n\n[methods."odd key.x"]\nt = -0.0\n\n[methods.seal]\nalways_on = true\nalpha = 1e-05\nvector = "C:\\\\vectors\\\\a.gguf"\n\n[methods.soft-thinking]\ncold_stop_entropy = 0.5\nnoise = "gumbel"\nmax_tokens = 300\n'


def test_config_written_by_the_old_writer_loads_the_same_and_rewrites_stably(home):
    # every value the file holds, spelled out, so that a later change of a default does not matter
    want = cfgmod.Config(
        model=cfgmod.ModelSettings(path='/models/Qwen 2.5 "coder".gguf', n_gpu_layers=0, n_ctx=8192,
                                   threads=0, parallel=16, autoload=False),
        run=cfgmod.RunSettings(method="soft-thinking",
                               prompt='quote " backslash \\ newline\n tab\t unicode é \x01 del \x7f'),
        ui=cfgmod.UiSettings(theme="textual-dark", inline_candidates=True, flush_ms=50),
        compare=cfgmod.CompareSettings(methods=["cot", "seal", "swi-reasoning"], max_tokens=0),
        vectors=cfgmod.VectorSettings(data="", out="", limit=20, layer=19, elicit="cue", max_tokens=256,
                                      inspect="", export_to=""),
    )
    want.methods = {"soft-thinking": {"cold_stop_entropy": 0.5, "noise": "gumbel", "max_tokens": 300},
                    "seal": {"always_on": True, "alpha": 1e-05, "vector": "C:\\vectors\\a.gguf"},
                    "odd key.x": {"t": -0.0}}
    path = cfgmod.config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OLD_WRITER_CONFIG, encoding="utf-8")
    old, problems = cfgmod.load(path)
    assert problems == [] and old == want
    cfgmod.save(old, path)  # through tomli-w now
    again, problems = cfgmod.load(path)
    assert problems == [] and again == want
    assert path.read_text(encoding="utf-8").startswith("# latentlocal terminal UI settings")
    want.methods["seal"]["alpha"] = float("inf")  # not kept: it would not compare equal to itself
    cfgmod.save(want, path)
    assert "alpha" not in cfgmod.load(path)[0].methods["seal"]


def test_forms_follow_the_registry():
    for spec in registry.specs():
        fields = forms.fields_for(spec.name)
        dests = [f.name for f in fields]
        assert dests[:2] == ["max_tokens", "seed"], spec.name  # the shared group comes first
    st = {f.name: f for f in forms.fields_for("soft-thinking")}
    assert st["noise"].kind == "choice" and "gumbel" in st["noise"].choices
    assert st["cold_stop_patience"].default_text == "256"
    opts = forms.options("soft-thinking", {"max_tokens": 7, "noise": "gumbel", "temperature": None, "gone": 1})
    assert opts == {"max_tokens": 7, "noise": "gumbel"}  # unset and no-longer-declared values left out
    cfg = registry.config_from_options("soft-thinking", opts)
    assert (cfg.max_tokens, cfg.noise, cfg.temperature) == (7, "gumbel", 0.6)
    assert "samples" in [f.name for f in forms.fields_for("sc")]
    with pytest.raises(LatentLocalError, match="--max-tokens takes a whole number"):
        forms.make_runner("cot", {"max_tokens": forms.typed(st["max_tokens"], "many")})


def test_pump_coalesces_tokens():
    now = [0.0]

    def clock():
        return now[0]

    def events():
        for i in range(10):
            now[0] += 0.01  # 10 ms per token
            yield ev.Token(text=str(i), token_id=i)
        yield ev.Summary("x", None, "", 10, 0.1, "length")

    batches: list[list] = []
    summary = pump(events(), batches.append, interval=0.05, clock=clock)
    assert summary is not None and summary.finish_reason == "length"
    assert sum(len(b) for b in batches) == 11
    assert len(batches) <= 3 and isinstance(batches[-1][-1], ev.Summary)


# ---------------------------------------------------------------------------------------------
# the app
# ---------------------------------------------------------------------------------------------


def test_pick_bundled_model_and_run(home):
    async def scenario(app, pilot):
        await load_bundled(app, pilot)
        table = app.query_one("#model-table")
        await wait_for(pilot, lambda: table.get_cell_at((0, 2)) == "llama", what="model header")
        row = [str(c) for c in table.get_row_at(0)]
        assert row[0] == "★ bundled" and row[2:5] == ["llama", "30", "576"] and "MB" in row[5]
        assert app.query_one("#tabs").active == "run"
        assert "llama" in app.sub_title and "30 layers" in app.sub_title
        form = app.query_one("#run-form")
        await form.select_method("cot")
        form.set_value("max_tokens", 6)
        await run_and_wait(app, pilot)
        assert app.query_one("#metrics").summary.generated_tokens > 0
        saved = cfgmod.load()[0]
        assert saved.model.path.endswith(".gguf") and saved.model.threads == 1
        assert saved.methods["cot"] == {"max_tokens": 6}

    run(scenario)


def test_the_models_tab_loads_with_the_reasoning_mode_it_shows(home):
    """The Reasoning choice reaches Engine.open and is remembered; "on" for a model without
    think tokens is refused with the engine's message and nothing loaded; a hand-edited mode the
    engine does not know shows as the default instead of failing the tab."""
    cfg = cfgmod.load()[0]
    cfg.model.reasoning = "sometimes"
    cfgmod.save(cfg)

    async def scenario(app, pilot):
        select = app.query_one("#opt-reasoning")
        assert select.value == "auto"
        select.value = "on"
        table = app.query_one("#model-table")
        await wait_for(pilot, lambda: table.row_count > 0, what="model list")
        app.query_one("#models-view").load_selected()
        await wait_for(pilot, lambda: app.job is None and "--reasoning on" in str(
            app.query_one("#load-status").render()), what="refused load")
        assert app.engine is None
        select.value = "off"
        app.query_one("#models-view").load_selected()
        await wait_for(pilot, lambda: app.engine is not None and app.job is None, what="model load")
        assert app.engine.model.reasoning == "off"
        assert cfgmod.load()[0].model.reasoning == "off"

    run(scenario)


def test_the_title_says_whether_a_think_token_model_thinks(home, smol_path):
    from latentlocal.engine import Engine, Model
    from thinkmodel import think_model_path

    engine = Engine(Model(think_model_path(smol_path)), n_ctx=512, n_seq_max=2, n_threads=1)

    async def scenario(app, pilot):
        assert app.sub_title.endswith(" · thinks in <think>")
        engine.model.reasoning = "off"
        app.attach_engine(engine, 0.0)
        assert app.sub_title.endswith(" · thinking off")

    try:
        run(scenario, engine=engine)
    finally:
        engine.close()


def test_first_start_loads_the_bundled_model(home):
    cfg = cfgmod.load()[0]
    assert not cfg.model.path

    async def scenario(app, pilot):
        await wait_for(pilot, lambda: app.engine is not None and app.job is None, what="autoload")
        await pilot.pause()
        assert app.query_one("#tabs").active == "run"
        from latentlocal.models import bundled_model_path

        assert app.engine.model.path == bundled_model_path()

    run(scenario, autoload=True)


def test_the_models_folder_is_listed_off_the_ui_thread(home, monkeypatch):
    """A slow listing (a large folder, a network drive) does not hold the app: the tabs answer
    while it runs, and its rows come when it ends."""
    import threading

    from tui.screens import models as models_screen

    release, held_too_long = threading.Event(), []
    real = models_screen.list_models

    def slow_listing():
        if not release.wait(10):
            held_too_long.append(True)  # nothing released it: the app was waiting on this call
        return real()

    monkeypatch.setattr(models_screen, "list_models", slow_listing)

    async def scenario(app, pilot):
        await pilot.press("f3")
        await wait_for(pilot, lambda: app.query_one("#tabs").active == "run", what="the Run tab")
        release.set()
        table = app.query_one("#model-table")
        await wait_for(pilot, lambda: table.row_count > 0, what="the listing's rows")
        assert not held_too_long

    run(scenario)


def test_a_context_too_large_for_memory_keeps_the_loaded_model(home, engine):
    """Checked from the file's header before the loaded model is let go (the engine refused it
    only after unloading the model in use)."""

    async def scenario(app, pilot):
        await pilot.press("f2")
        table = app.query_one("#model-table")
        await wait_for(pilot, lambda: table.row_count > 0 and all(
            r.get("n_head") for r in app.query_one("#models-view").rows.values() if not r.get("error")),
            what="model headers")
        app.query_one("#opt-ctx").value = "999999999"
        assert not app.query_one("#models-view").load_selected()
        assert app.engine is engine and app.job is None

    run(scenario, engine=engine)


def test_escape_during_a_model_load_stops_it(home, monkeypatch):
    """The load gets the job's cancel event (Engine.open's ``cancel``), so Escape (and Ctrl+Q)
    stop it part way instead of waiting for it; the tab then says so."""
    from latentlocal import engine as engine_mod

    seen: list = []
    started = __import__("threading").Event()

    def open_(settings, cancel=None, **kw):
        seen.append(cancel)
        started.set()
        assert cancel is not None and cancel.wait(30), "the load was never cancelled"
        raise engine_mod.LoadCancelled("loading was cancelled")

    monkeypatch.setattr(engine_mod.Engine, "open", open_)

    async def scenario(app, pilot):
        table = app.query_one("#model-table")
        await wait_for(pilot, lambda: table.row_count > 0, what="model list")
        table.focus()
        await pilot.press("enter")
        await wait_for(pilot, started.is_set, what="the load to start")
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.job is None, what="the cancelled load to end")
        await pilot.pause()
        assert seen and seen[0].is_set() and app.engine is None
        assert "load cancelled" in str(app.query_one("#load-status").render())

    run(scenario)


@pytest.mark.parametrize("method", registry.method_names())
def test_run_each_method(home, engine, method):
    vector = seal_vector(home / "seal.gguf")

    async def scenario(app, pilot):
        await wait_for(pilot, lambda: app.query_one("#tabs").active == "run", what="run tab")
        form = app.query_one("#run-form")
        await form.select_method(method)
        await pilot.pause()
        present = {f.name for f in form.fields}
        for dest, value in SMALL.items():
            if dest in present:
                form.set_value(dest, value)
        if method == "seal":
            form.set_value("vector", str(vector))
        if method == "soft-thinking":
            # a threshold above any entropy makes Cold Stop fire after two steps
            form.set_value("cold_stop_entropy", 50)
            form.set_value("cold_stop_patience", 2)
            form.set_value("max_tokens", 12)
        await run_and_wait(app, pilot)
        metrics = app.query_one("#metrics")
        stream = app.query_one("#stream")
        s = metrics.summary
        assert s is not None, stream.plain
        assert s.finish_reason != "cancelled" and s.generated_tokens > 0
        assert metrics.tokens > 0 and stream.tokens_shown > 0
        assert "tok/s" in metrics.stats_text() and "finish" in metrics.stats_text()
        assert app.query_one("#m-spark").data, "the sparkline was fed"
        assert "Answer:" in stream.plain
        if method == "soft-thinking":
            assert metrics.cold_stop is not None and "Cold Stop" in stream.plain
            assert metrics.concept, "soft steps carry their top candidates"
            await pilot.press("ctrl+t")
            assert "⟨" in stream._text.plain  # candidates shown inline
            await pilot.press("ctrl+t")
            assert "⟨" not in stream._text.plain
        if method == "seal":
            assert s.method == "seal"
        if method == "soft-reasoning":
            assert metrics.rounds and app.query_one("#m-rounds").row_count == len(metrics.rounds[0].candidates)
            assert app.query_one("#m-best").data and app.query_one("#m-rounds-box").display
        if method == "sc":
            assert len(metrics.samples) == 2
        saved = cfgmod.load()[0]
        assert saved.run.method == registry.canonical(method)
        assert saved.methods[registry.canonical(method)]["max_tokens"] in (8, 12)

    run(scenario, engine)


def _held_after_first_event(events, cancel, held: list):
    """Pass the first event on, then hold the generator until the job is cancelled (at most 60 s),
    then let the method go on: it must see the cancel at its next step. However fast the build,
    the run cannot end by itself before Escape arrives."""
    it = iter(events)
    first = next(it, None)
    if first is None:
        return
    yield first
    held.append(True)
    cancel.wait(60)
    yield from it


def test_cancel_keeps_model_and_next_run_works(home, engine, monkeypatch):
    real_make_runner = forms.make_runner
    held: list = []

    def holding_runner(method, values, *a, **k):
        runner = real_make_runner(method, values, *a, **k)
        if str(values.get("max_tokens")) != "400":
            return runner  # only the run that is to be cancelled is held
        return lambda eng, q, cancel=None: _held_after_first_event(runner(eng, q, cancel), cancel, held)

    monkeypatch.setattr(forms, "make_runner", holding_runner)

    async def scenario(app, pilot):
        app.config.ui.flush_ms = 0  # every event reaches the screen at once, the held one too
        form = app.query_one("#run-form")
        await form.select_method("cot")
        form.set_value("max_tokens", 400)
        engine = app.engine
        metrics = app.query_one("#metrics")
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: metrics.tokens >= 1 and held, timeout=30, what="first tokens")
        assert app.job is not None and app.job.name == "run"
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.job is None, timeout=30, what="cancel")
        await pilot.pause()
        assert metrics.summary.finish_reason == "cancelled"
        assert metrics.summary.generated_tokens < 400
        assert "cancelled" in app.query_one("#stream").plain
        assert app.engine is engine  # still loaded

        form.set_value("max_tokens", 4)
        await run_and_wait(app, pilot)
        assert metrics.summary.finish_reason != "cancelled"

        # Ctrl+C: cancels while running (covered by escape above), quits when idle
        quit_calls = []
        app.exit = lambda *a, **k: quit_calls.append(a)  # type: ignore[method-assign]
        await pilot.press("ctrl+c")
        assert quit_calls, "ctrl+c quits when nothing runs"

    run(scenario, engine)



def _scripted_soft_run(engine, question, cancel=None):
    """A Soft Thinking run's events, the same on every build: 40 soft steps whose candidate lists
    grow and shrink (1-8 candidates), the end of thinking, 12 answer tokens, the Summary."""
    for i in range(40):
        k = 1 + (i * 5) % 8
        top = tuple((f"t{j}", 1.0 / k) for j in range(k))
        yield ev.Token(text=f" w{i}", token_id=i, phase="thinking", mode="soft", entropy=0.1 * k, top=top)
    yield ev.PhaseChange(phase="answer", reason="marker")
    for i in range(12):
        yield ev.Token(text=f" a{i}", token_id=100 + i, prob=0.9)
    yield ev.Summary(method="soft-thinking", answer="7", text="", generated_tokens=52, elapsed_s=1.0,
                     finish_reason="length")


def test_a_repeated_run_streams_without_laying_out_the_screen(home, engine, monkeypatch):
    """Laying out the screen costs tens of ms; on a 2-core machine that time is taken from the
    threads decoding the model (bench/bench_tui.py). A second run of the same method, its output
    arriving in many batches, must not lay the screen out once: not at its start (the footer's
    keys, the status line, the metrics panel's boxes), not per batch (the output's scroll area, a
    soft step's candidate list), not at its end. The prompt's cursor stops blinking meanwhile
    (a frame of its own twice a second). The events are scripted: how long a model's run is
    differs between builds, and this is about the screen."""
    monkeypatch.setattr(forms, "make_runner", lambda method, values, *a, **k: _scripted_soft_run)

    async def scenario(app, pilot):
        app.config.ui.flush_ms = 0  # every event a batch of its own
        await app.query_one("#run-form").select_method("soft-thinking")
        await run_and_wait(app, pilot)
        stream, prompt, screen = app.query_one("#stream"), app.query_one("#prompt"), app.screen
        assert prompt.cursor_blink
        layouts: list[float] = []
        batches: list[int] = []
        real_layout, real_feed = screen._refresh_layout, stream.feed
        screen._refresh_layout = lambda *a, **k: (layouts.append(time.monotonic()), real_layout(*a, **k))[1]
        stream.feed = lambda events: (batches.append(len(events)), real_feed(events))[1]
        view, blink = app.query_one(RunView), []
        real_changed = view.running_changed
        view.running_changed = lambda running: (real_changed(running), blink.append((running, prompt.cursor_blink)))
        await run_and_wait(app, pilot)
        summary = app.query_one("#metrics").summary
        assert summary is not None and summary.generated_tokens == 52
        assert len(batches) == 54, batches  # one per event: "no layout per batch" means something
        assert layouts == [], f"{len(layouts)} layouts in a run of {len(batches)} batches"
        assert blink == [(True, False), (False, True)]

    run(scenario, engine)


def test_a_finished_job_leaves_the_heap_collected_and_frozen(home, engine, monkeypatch):
    """A full garbage collection walks all of the app's objects and holds the GIL meanwhile
    (120-185 ms), stopping the worker that decodes the model (tui.heap). When a job ends, the
    app collects everything and freezes what is left, so collections during the next job walk
    only what it made; nothing frozen is leaked (a cycle that was alive at one job's end and is
    garbage by the next is freed), and the app's exit unfreezes."""
    import gc
    import weakref

    monkeypatch.setattr(forms, "make_runner", lambda method, values, *a, **k: _scripted_soft_run)

    class Cycle:
        pass

    held = [Cycle()]
    held[0].me = held[0]
    gone = weakref.ref(held[0])

    async def scenario(app, pilot):
        await app.query_one("#run-form").select_method("soft-thinking")
        gc.unfreeze()
        await run_and_wait(app, pilot)
        await wait_for(pilot, lambda: gc.get_freeze_count() > 0, what="the heap frozen after the job")
        assert gone() is not None  # alive at the job's end: frozen with the rest
        held.clear()  # now garbage, in the frozen generation
        gc.collect()
        assert gone() is not None  # a collection does not walk frozen objects
        frozen = gc.get_freeze_count()
        await run_and_wait(app, pilot)
        await wait_for(pilot, lambda: gone() is None, what="the cycle collected after the next job")
        assert gc.get_freeze_count() > 0.5 * frozen

    run(scenario, engine)
    assert gc.get_freeze_count() == 0


def test_notices_reach_the_user(home, engine):
    """A Notice (here: --max-tokens cut to fit the context) is shown as a notification, not
    dropped: the CLI prints it to stderr, the Run tab must show it too."""
    async def scenario(app, pilot):
        shown: list[tuple[str, dict]] = []
        real_notify = app.notify
        app.notify = lambda message, **k: (shown.append((message, k)), real_notify(message, **k))
        form = app.query_one("#run-form")
        await form.select_method("cot")
        form.set_value("max_tokens", 50_000)  # far beyond the engine's 1024-token context
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: any("--n-ctx" in m for m, _ in shown), timeout=30,
                       what="the context notice")
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.job is None, timeout=30, what="cancel")
        message, kw = next((m, k) for m, k in shown if "--n-ctx" in m)
        assert kw.get("severity") == "warning"

    run(scenario, engine)


def test_compare_methods_side_by_side(home, engine):
    async def scenario(app, pilot):
        await pilot.press("f4")
        assert app.query_one("#tabs").active == "compare"
        sel = app.query_one("#cmp-methods")
        sel.deselect_all()
        sel.select("cot")
        sel.select("soft-thinking")
        app.query_one("#cmp-max").value = "6"
        view = app.query_one("#compare-view")
        await pilot.press("ctrl+r")
        # with a warm engine both runs can end before the key press returns: wait on the outcome
        await wait_for(pilot, lambda: app.job is None and len(view.results) == 2, timeout=60,
                       what="comparison end")
        await pilot.pause()
        table = app.query_one("#cmp-table")
        assert table.row_count == 2
        for key in ("cot", "soft-thinking"):
            finish = table.get_cell(key, "finish")
            assert finish not in ("waiting", "running…", "cancelled"), finish
            assert int(table.get_cell(key, "tokens")) > 0
            assert float(table.get_cell(key, "time s")) > 0
        assert set(app.query_one("#compare-view").results) == {"cot", "soft-thinking"}
        assert cfgmod.load()[0].compare.methods == ["cot", "soft-thinking"]

    run(scenario, engine)


def test_vectors_inspect_export_and_command(home):
    src = seal_vector(home / "made.gguf", scale=0.25)

    async def scenario(app, pilot):
        await pilot.press("f5")
        view = app.query_one("#vectors-view")
        app.query_one("#vi-path").value = str(src)
        await pilot.click("#vi-open")
        await pilot.pause()
        info = str(app.query_one("#vi-info").render())
        assert "direction.20" in info and "576" in info and "0.25" in info
        out = home / "exported" / "steer.gguf"
        app.query_one("#ve-path").value = str(out)
        await pilot.click("#ve-go")
        await pilot.pause()
        assert out.exists() and cvio.manifest_path(out).exists()
        back = cvio.import_gguf(out)
        np.testing.assert_array_equal(back.directions[20], cvio.import_gguf(src).directions[20])
        assert sorted(p.name for p in out.parent.iterdir()) == ["steer.gguf", "steer.json"]
        assert json.loads(cvio.manifest_path(out).read_text())["recommended_scale"] == 0.25
        cmd = view.command
        assert cmd.startswith("llama-cli -m SmolLM2-135M-Instruct.Q4_1.gguf")
        assert f"--control-vector-scaled {out} 0.25" in cmd
        # the vector can be handed to SEAL on the Run tab
        await pilot.click("#vi-use")
        await pilot.pause()
        form = app.query_one("#run-form")
        assert app.query_one("#tabs").active == "run"
        assert form.method == "seal" and form.values()["vector"] == str(src)

    run(scenario)


def test_odd_names_and_hand_edited_manifests_do_not_crash_the_app(home):
    """A path with markup characters, a manifest with fields of other JSON types, an output
    folder that cannot be made: each is shown or refused on screen. Each one crashed the app,
    and the remembered bad vector crashed every start after."""
    odd = home / "a[" / "]b [q4_k_m].gguf"  # the path holds "[/]", markup's closing tag
    odd.parent.mkdir()
    seal_vector(odd)
    cvio.manifest_path(odd).write_text(json.dumps({"counts": 5, "model": "smol", "method": ["x"]}))

    async def scenario(app, pilot):
        await pilot.press("f5")
        app.query_one("#vi-path").value = str(odd)
        await pilot.click("#vi-open")
        await pilot.pause()
        info = str(app.query_one("#vi-info").render())
        assert "[q4_k_m]" in info and "direction.20" in info and "made by: ['x']" in info
        assert app.config.vectors.inspect == str(odd)
        assert "[q4_k_m]" in str(app.query_one("#ve-cmd").render())
        app.notify(f"a notification naming {odd}")  # markup characters in a message
        # the models table shows the name as it is
        await pilot.press("f2")
        box = app.query_one("#model-path")
        box.value = str(odd)
        box.focus()
        await pilot.press("enter")
        table = app.query_one("#model-table")
        await wait_for(pilot, lambda: str(odd) in table.rows, what="the odd row")
        await pilot.pause()
        view = app.query_one("#models-view")
        asked: list[str] = []
        view.inspect_path = asked.append
        box.value = "  "  # an empty box adds nothing (it added a row for ".")
        await pilot.press("enter")
        await pilot.pause()
        assert asked == []
        box.value = "m.gguf"
        await pilot.press("enter")
        await pilot.pause()
        assert asked == [str(Path("m.gguf"))]

    run(scenario)
    # and the next start, which inspects the remembered vector again, comes up too
    cfg, _ = cfgmod.load()
    assert cfg.vectors.inspect == str(odd)

    async def again(app, pilot):
        await pilot.press("f5")
        await pilot.pause()
        assert "direction.20" in str(app.query_one("#vi-info").render())

    run(again)


def test_extraction_into_an_impossible_folder_is_a_message(home, engine):
    data = home / "d.jsonl"
    data.write_text(json.dumps({"question": "1+1?", "answer": "#### 2"}) + "\n")
    (home / "notes.txt").write_text("mine")

    async def scenario(app, pilot):
        await pilot.press("f5")
        app.query_one("#vx-data").value = str(data)
        app.query_one("#vx-out").value = str(home / "notes.txt" / "v.gguf")
        assert not app.query_one("#vectors-view").start()
        assert app.job is None and (home / "notes.txt").read_text() == "mine"

    run(scenario, engine=engine)


def test_extraction_progress_and_cancel(home, engine, monkeypatch):
    # Hold the extraction after its first finished problem until Escape has set the cancel: on a
    # fast machine the other four problems would otherwise finish before the key press lands.
    from latentlocal.methods import seal
    from tui.screens import vectors

    real_extract, real_pump = seal.extract, vectors.pump
    held: list = []

    def holding_extract(eng, cfg, cancel=None):
        for e in real_extract(eng, cfg, cancel):
            yield e
            if isinstance(e, ev.Progress) and not held:
                held.append(e)
                cancel.wait(60)

    monkeypatch.setattr(seal, "extract", holding_extract)
    # every batch is posted at once, so the held Progress is on screen while the job waits
    monkeypatch.setattr(vectors, "pump", lambda events, post, interval=0.0, **k: real_pump(events, post, 0.0, **k))
    data = home / "q.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)})
                              for i in range(1, 6)) + "\n")

    async def scenario(app, pilot):
        await pilot.press("f5")
        view = app.query_one("#vectors-view")
        app.query_one("#vx-data").value = str(data)
        app.query_one("#vx-out").value = str(home / "v" / "x.gguf")
        app.query_one("#vx-limit").value = "5"
        app.query_one("#vx-max").value = "12"
        await pilot.press("ctrl+r")
        bar = app.query_one("#vx-progress")
        await wait_for(pilot, lambda: (bar.progress or 0) >= 1 and held, timeout=60, what="first problem")
        assert bar.total == 5 and app.job is not None and app.job.name == "extract"
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.job is None, timeout=30, what="cancel")
        await pilot.pause()
        log = "\n".join(app.query_one("#vx-log").lines)
        assert "cancelled" in log
        assert not (home / "v" / "x.gguf").exists()  # no vector from a cancelled run
        assert app.engine is not None
        assert view.query_one("#vx-start").disabled is False

    run(scenario, engine)


def test_a_job_that_raises_ends_cleanly_in_every_view(home, engine, monkeypatch):
    """Run, Compare and Vectors share one job base (tui.jobs.JobView): whatever the worker
    raises, the error is shown, the app's job slot is freed and Start works again."""
    def failing(engine, question, cancel=None):
        raise LatentLocalError("the method broke")
        yield  # a generator, like every runner

    monkeypatch.setattr(forms, "make_runner", lambda *a, **k: failing)

    async def scenario(app, pilot):
        await wait_for(pilot, lambda: app.query_one("#tabs").active == "run", what="run tab")
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: app.job is None and "the method broke" in app.query_one("#stream").plain,
                       timeout=30, what="run failure")
        assert str(app.query_one("#run-status").render()) == "failed"
        assert app.query_one("#run-start").disabled is False

        await pilot.press("f4")
        view = app.query_one("#compare-view")
        sel = app.query_one("#cmp-methods")
        sel.deselect_all()
        sel.select("cot")
        await pilot.press("ctrl+r")
        table = app.query_one("#cmp-table")
        await wait_for(pilot, lambda: app.job is None and table.row_count == 1
                       and "the method broke" in str(table.get_cell("cot", "finish")),
                       timeout=30, what="compare failure")
        assert view.results == {} and app.query_one("#cmp-start").disabled is False

        await pilot.press("f5")
        app.query_one("#vx-data").value = str(home / "missing.jsonl")
        app.query_one("#vx-out").value = str(home / "v" / "x.gguf")
        await pilot.press("ctrl+r")
        log = app.query_one("#vx-log")
        await wait_for(pilot, lambda: app.job is None and any("missing.jsonl" in line and "not found" in line
                                                                for line in log.lines),
                       timeout=30, what="extraction failure")
        assert app.query_one("#vx-start").disabled is False
        assert app.begin_job("run") is not None  # the slot is free

    run(scenario, engine)


def test_help_screen_and_keys(home):
    async def scenario(app, pilot):
        await pilot.press("f1")
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
        assert type(app.screen).__name__ != "HelpScreen"
        await pilot.press("f3")
        prompt = app.query_one("#prompt")
        prompt.focus()
        await pilot.press("end", "question_mark")  # typing "?" in the prompt is text, not help
        assert type(app.screen).__name__ != "HelpScreen" and prompt.text.endswith("??")
        await pilot.press("ctrl+r")  # no model yet: a warning, nothing starts
        assert app.job is None
        await pilot.press("f2")
        assert app.query_one("#tabs").active == "models"

    run(scenario)


def test_ctrl_o_opens_the_method_list_and_picks(home, engine):
    async def scenario(app, pilot):
        await pilot.press("f6")
        await pilot.press("ctrl+o")
        await pilot.pause()
        select = app.query_one("#run-form #method")
        assert app.query_one("#tabs").active == "run" and select.expanded and select.has_focus_within
        await pilot.press("down", "enter")
        await pilot.pause()
        assert app.query_one("#run-form").method == registry.method_names()[1]

    run(scenario, engine)


def test_metric_lines_fit_the_panel():
    """The metrics panel has 30 cells inside; longer lines were cut ("mean 1") or wrapped."""
    from tui.widgets.metrics import BAR_CELLS, TOKEN_CELLS, MetricsPanel

    title = MetricsPanel.spark_title("entropy", [0.5, 1.0937], " nats")
    assert title == "entropy 1.09 nats, mean 0.80" and len(title) <= 30
    assert MetricsPanel.spark_title("entropy", [], " nats") == "entropy, nats"
    assert MetricsPanel.spark_title("p(token)", []) == "p(token)"
    long = MetricsPanel.token_cell(" multiplication")
    assert len(long) == TOKEN_CELLS and long.endswith("…") and long.startswith("' mult")
    assert MetricsPanel.token_cell("7") == "'7'".rjust(TOKEN_CELLS)
    assert TOKEN_CELLS + 1 + BAR_CELLS + 1 + len("0.123") <= 30


def test_stream_wraps_incrementally_as_a_whole_text_wraps():
    """The Output view re-wraps only the line still being written (issue 14: re-wrapping and
    re-laying-out everything per batch was most of the UI's time). Fed random tokens in random
    batches, at two widths, with a resize in between, its lines must be exactly the lines of the
    whole text wrapped at once, and the screen must show them (a bug in the finished-line rule
    moves, drops or repeats words)."""
    from textual.app import App

    from latentlocal import events as ev
    from tui.widgets.stream import StreamView

    rng = random.Random(7)
    words = ["a", "bb", "ccc", "dddddd", "x" * 23, "1,234", "=", "step:", "\t", "  ", "\n", "\n\n",
             "éé", "中文", "(3+4)*2", ".\n\n"]
    # thinking without spaces (Chinese), which rich folds as one word over many lines
    cjk = ["思考", "中文", "一", "步骤", "，", "。", "x"]

    class Host(App):
        def compose(self):
            yield StreamView(id="s")

    async def main():
        app = Host()
        async with app.run_test(size=(44, 12)) as pilot:
            view = app.query_one(StreamView)
            for width in (44, 31):
                await pilot.resize_terminal(width, 12)
                await pilot.pause()
                view.clear()
                for i in range(90):
                    pool = cjk if 30 <= i < 60 else words
                    batch: list = [ev.Token(text=rng.choice(pool) + ("" if pool is cjk else rng.choice(["", " ", ""])),
                                            token_id=0, phase="think") for _ in range(rng.randint(1, 6))]
                    if rng.random() < 0.3:  # a SEAL thought tag, inserted before trailing whitespace
                        batch.insert(rng.randint(0, len(batch)), ev.Thought(index=i, label="execution", text=""))
                    view.feed(batch)
                    await pilot.pause()
                    whole = view._text.wrap(app.console, view.scrollable_content_region.width)
                    # (spaces at a line's end are not drawn; rich trims them by where the text ends)
                    got = [view._line(y).plain.rstrip() for y in range(view.line_count)]
                    assert got == [line.plain.rstrip() for line in whole]
                    # and what was laid out piece by piece is what laying out every piece at once gives
                    view._dirty_all = True
                    view.render_now()
                    assert [view._line(y).plain.rstrip() for y in range(view.line_count)] == got
                assert view.virtual_size.height == view.line_count
                # what is drawn: the last line on screen is the text's last line
                await pilot.pause()
                last = view.line_count - 1
                assert view.render_line(last - int(view.scroll_y)).text.rstrip() == got[-1].rstrip()

    asyncio.run(main())



def test_streaming_repaints_only_the_lines_that_change():
    """Every line drawn costs the UI thread time that a 2-core machine takes from the threads
    decoding the model (issue 14): a batch that extends the last line must repaint that line,
    not the view (the whole view was repainted at every new line), and following the text past
    the bottom while a run is live scrolls a third of the view at once, so most batches move no
    line. The newest text stays in view throughout, and when the run ends the view ends at the
    text's last line, as a view that was never live does."""
    from textual.app import App

    from latentlocal import events as ev
    from tui.widgets.stream import StreamView

    class Host(App):
        def compose(self):
            yield StreamView(id="s")

    async def main():
        app = Host()
        async with app.run_test(size=(44, 12)) as pilot:
            view = app.query_one(StreamView)
            height = view.scrollable_content_region.height
            drawn: list[int] = []
            real_line = view.render_line
            view.render_line = lambda y: (drawn.append(y), real_line(y))[1]
            view.set_live(True)
            await pilot.pause()
            scrolls, last_scroll = 0, view.scroll_y
            per_batch: list[int] = []
            for i in range(200):  # "wNNN " per batch: 5 cells, 8 a line, 25 lines
                drawn.clear()
                view.feed([ev.Token(text=f"w{i:03d} ", token_id=0, phase="think")])
                await pilot.pause()
                per_batch.append(len(drawn))
                if view.scroll_y != last_scroll:
                    scrolls, last_scroll = scrolls + 1, view.scroll_y
                else:  # nothing moved: only the written line (and the one it wrapped into)
                    assert len(drawn) <= 2, (i, drawn)
                top = int(view.scroll_y)
                assert top <= view.line_count - 1 < top + height, "the newest line is out of view"
                assert view._line(view.line_count - 1).plain.rstrip().endswith(f"w{i:03d}")
            lines_past_view = view.line_count - height
            assert lines_past_view >= 12
            # a scroll per third of the view, not per line
            assert 1 <= scrolls <= lines_past_view // max(1, height // 3) + 1, (scrolls, lines_past_view)
            assert sum(per_batch) < 200 * 2 + (scrolls + 1) * height

            view.set_live(False)
            await pilot.pause()
            assert view.virtual_size.height == view.line_count
            assert int(view.scroll_y) == view.line_count - height  # the last line at the bottom
            assert real_line(height - 1).text.rstrip().endswith("w199")

    asyncio.run(main())



def test_the_models_tab_loads_onto_an_rpc_worker_and_names_a_bad_one(home):
    from latentlocal.llama_libs import rpc_library_path

    if rpc_library_path() is None:
        pytest.skip("this llama-cpp-python build has no RPC backend (libggml-rpc)")
    from rpcworker import Worker, free_port

    worker = Worker()
    gone = f"127.0.0.1:{free_port()}"

    async def scenario(app, pilot):
        table = app.query_one("#model-table")
        await wait_for(pilot, lambda: table.row_count > 0, what="model list")
        app.query_one("#opt-rpc").value = gone
        app.query_one("#models-view").load_selected()
        await wait_for(pilot, lambda: app.job is None, what="failed load")
        assert app.engine is None and gone in str(app.query_one("#load-status").render())
        app.query_one("#opt-rpc").value = worker.endpoint
        app.query_one("#opt-split").value = "1"
        app.query_one("#models-view").load_selected()
        await wait_for(pilot, lambda: app.engine is not None and app.job is None, what="model load")
        assert app.engine.model.rpc == (worker.endpoint,) and f"RPC {worker.endpoint}" in app.sub_title
        saved = cfgmod.load()[0].model
        assert (saved.rpc, saved.tensor_split) == (worker.endpoint, "1")
        app.engine.close()

    try:
        run(scenario)
    finally:
        worker.kill()
