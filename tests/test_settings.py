"""Method settings declared once (methods/settings.py): flags, validation, bench labels, the
TUI's form and the recorded settings all come from the config dataclasses' declarations."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math

import pytest

from latentlocal.errors import LatentLocalError
from latentlocal.events import Summary, to_dict
from latentlocal.eval.runner import parse_method_spec, record_for
from latentlocal.methods import registry
from latentlocal.methods import settings as st
from latentlocal.methods import soft_thinking
from latentlocal.methods.cot import SelfConsistencyConfig


def _run_help(capsys) -> str:
    from latentlocal.cli import main

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def _form_placeholder(method: str, name: str) -> str:
    pytest.importorskip("textual")
    from textual.app import App

    from tui.widgets.method_form import MethodForm

    class FormApp(App):
        def compose(self):
            yield MethodForm(method, {}, id="form")

    async def scenario() -> str:
        app = FormApp()
        async with app.run_test() as pilot:
            for _ in range(200):  # the form builds its fields after mounting
                if app.query(f"#f-{name}"):
                    break
                await pilot.pause()
            return str(app.query_one(f"#f-{name}").placeholder)

    return asyncio.run(scenario())


def test_a_default_changed_in_its_declaration_reaches_every_front_end(monkeypatch, capsys):
    """Soft Thinking's max_topk default, changed only in the config dataclass, is what the CLI
    help states, the TUI form's placeholder shows, a bench label's parsed config holds and the
    run records."""
    assert "tokens mixed into each concept (default 10)" in _run_help(capsys)
    assert _form_placeholder("soft-thinking", "max_topk") == "(10)"

    orig = {f.name: f for f in dataclasses.fields(soft_thinking.SoftThinkingConfig)}["max_topk"]
    patched = dataclasses.make_dataclass(
        "SoftThinkingConfig", [("max_topk", int, dataclasses.field(default=7, metadata=orig.metadata))],
        bases=(soft_thinking.SoftThinkingConfig,), frozen=True)
    monkeypatch.setattr(soft_thinking, "METHODS", [dataclasses.replace(soft_thinking.METHODS[0], config=patched)])

    assert "tokens mixed into each concept (default 7)" in _run_help(capsys)
    assert _form_placeholder("soft-thinking", "max_topk") == "(7)"
    label, method, options = parse_method_spec("soft-thinking:noise=gumbel", argparse.Namespace())
    cfg = registry.config_from_options(method, options)
    assert (cfg.max_topk, cfg.noise) == (7, "gumbel")
    assert st.record(cfg)["max_topk"] == 7
    assert registry.config_from_options("st", {}).max_topk == 7


@pytest.mark.parametrize("spec, message", [
    ("soft-thinking:max_topk=many", "--max-topk takes a whole number, not 'many'"),
    ("soft-thinking:max_topk=2.5", "--max-topk takes a whole number"),
    ("soft-thinking:noise=pink", "--noise must be one of none, gumbel, dirichlet, not 'pink'"),
    ("soft-thinking:top_p=1.5", r"--top-p must lie in \[0, 1\], not 1.5"),
    ("soft-thinking:temperature=nan", "--temperature must be a finite number"),
    ("swi-reasoning:explicit_only=maybe", "--explicit-only takes true or false, not 'maybe'"),
    ("swi-reasoning:max_switch_count=-1", "--max-switch-count must be at least 0"),
    ("cot:max_topk=3", "unknown option 'max_topk' for cot; use one of its options: .*samples"),
    ("sc:samples=0", "--samples must be at least 1, not 0"),
    ("sc:seed=-1", "--seed must be at least 0, not -1"),  # numpy raised a ValueError traceback
    ("seal:alpha=1e30", r"--alpha must lie in \[-100, 100\]"),  # the logits became NaN, the answer empty
])
def test_bench_labels_are_typed_by_the_declaration(spec, message):
    with pytest.raises(LatentLocalError, match=message) as err:
        parse_method_spec(spec, argparse.Namespace())
    assert spec in str(err.value)  # the error says which label


def test_bench_labels_parse_to_the_declared_types():
    # a text option that looks like a number stays text (the old guess made it an int)
    _, _, options = parse_method_spec("seal:vector=123;alpha=1;always_on=true", argparse.Namespace())
    assert options == {"vector": "123", "alpha": 1.0, "always_on": True}
    assert isinstance(options["alpha"], float)
    _, _, options = parse_method_spec("swi-reasoning:max_switch_count=none;switch_window=8",
                                      argparse.Namespace(switch_window=3, max_topk=4))
    # the label wins over the flag; max_topk is not swir's; "none" is the value None (no cap)
    assert options == {"switch_window": 8, "max_switch_count": None}
    _, _, options = parse_method_spec("soft-thinking:mix=moi;moi_prior=filtered", argparse.Namespace(seed=3))
    assert options == {"seed": 3, "mix": "moi", "moi_prior": "filtered"}


def test_runner_from_options_checks_before_any_model():
    with pytest.raises(LatentLocalError, match="unknown option 'colour' for soft-reasoning"):
        registry.runner_from_options("soft-reasoning", {"colour": "red"})
    with pytest.raises(LatentLocalError, match="--candidates takes a whole number, not 'five'"):
        registry.runner_from_options("sr", {"candidates": "five"})
    with pytest.raises(LatentLocalError, match="--candidates takes a whole number, not True"):
        registry.runner_from_options("sr", {"candidates": True})
    with pytest.raises(LatentLocalError, match="--candidates must be at least 1, not 0"):
        registry.runner_from_options("sr", {"candidates": 0})
    with pytest.raises(LatentLocalError, match="--alpha must be a finite number"):
        registry.runner_from_options("seal", {"alpha": math.inf})
    with pytest.raises(LatentLocalError, match="--sigma must be positive"):
        registry.runner_from_options("soft-reasoning", {"sigma": "-1"})
    with pytest.raises(LatentLocalError, match="unknown method"):
        registry.runner_from_options("telepathy", {})
    with pytest.raises(LatentLocalError, match="do not combine"):  # a rule across two settings
        registry.runner_from_options("soft-thinking", {"noise": "gumbel", "mix": "moi"})
    # text and typed values, None = the default, flag spellings accepted
    cfg = registry.config_from_options("soft-reasoning", {"candidates": "3", "max-tokens": 40, "sigma": None})
    assert (cfg.candidates, cfg.max_tokens, cfg.sigma) == (3, 40, 2.0)
    # cot with several samples is self-consistency, with sc's own defaults for the rest
    cfg = registry.config_from_options("cot", {"samples": 3})
    assert isinstance(cfg, SelfConsistencyConfig) and (cfg.samples, cfg.temperature) == (3, 0.8)
    assert registry.config_from_options("cot", {"samples": 1}).temperature == 0.0


def test_method_settings_describe_every_option():
    for method in registry.method_names():
        rows = registry.method_settings(method)
        assert rows and len({r.name for r in rows}) == len(rows)
        for r in rows:
            assert r.help and r.type in (int, float, str, bool)
            assert r.default is None or r.optional or isinstance(r.default, r.type), (method, r.name)
            if r.default is not None:
                r.check(r.default)  # every default is a valid value
            if r.default is None:
                assert r.default_text, f"{method}.{r.name}: a None default needs shown= text"
    seal = {r.name: r for r in registry.method_settings("seal")}
    assert seal["vector"].path and seal["alpha"].optional and seal["always_on"].type is bool
    st_rows = {r.name: r for r in registry.method_settings("soft-thinking")}
    assert st_rows["noise"].choices == ("none", "gumbel", "dirichlet") and st_rows["noise"].kind == "choice"
    assert st_rows["top_p"].bounds == st.interval(0, 1, "[]")
    assert [r.name for r in registry.method_settings("cot")][:2] == ["max_tokens", "seed"]
    listing = json.loads(json.dumps([r.describe() for r in registry.method_settings("swi-reasoning")]))
    window = next(d for d in listing if d["name"] == "switch_window")
    assert window == {"name": "switch_window", "flag": "--switch-window", "type": "int", "default": 512,
                      "default_text": "512", "help": window["help"], "choices": [],
                      "bounds": {"lo": 0, "hi": None, "lo_open": False, "hi_open": False},
                      "optional": False, "path": False}


def test_every_setting_is_a_flag_that_parses_back():
    """Each declared setting is a CLI flag; its default given as text parses to itself."""
    parser = argparse.ArgumentParser()
    registry.add_method_flags(parser)
    for method in registry.method_names():
        for r in registry.method_settings(method):
            if r.default is None:
                continue
            argv = [r.flag] if r.type is bool else [f"{r.flag}={r.default}"]
            if r.type is bool and not r.default:
                argv = [r.flag]
            args = parser.parse_args(argv)
            got = registry.options_from_args(method, args)
            want = True if r.type is bool else r.default
            assert got == {r.name: want}, (method, r.name, got)


def test_flags_declared_twice_must_agree(monkeypatch):
    @dataclasses.dataclass(frozen=True)
    class Clash:
        samples: str = st.setting("many", help="a text where cot declares a number")

    fake = registry.MethodSpec("clash", "Clash", "a test method", Clash, lambda cfg: None)
    real = registry.specs()
    monkeypatch.setattr(registry, "specs", lambda: [*real, fake])
    with pytest.raises(TypeError, match="--samples: cot and clash declare it with different types"):
        registry.add_method_flags(argparse.ArgumentParser())


def test_runs_record_their_settings(smol, tmp_path):
    from latentlocal.datasets import Problem

    runner = registry.runner_from_options("cot", {"max_tokens": 3, "top_k": "7"})
    summary = list(runner(smol, "What is 2 + 3?"))[-1]
    assert isinstance(summary, Summary)
    assert summary.settings == {"samples": 1, "max_tokens": 3, "temperature": 0.0, "top_k": 7, "top_p": 0.95,
                                "min_p": 0.05, "seed": None, "answer_reserve": 256}
    assert json.loads(json.dumps(to_dict(summary)))["settings"] == summary.settings
    rec = record_for("cot", Problem(id="p", question="q", gold="5"), summary, 0.1)
    assert rec["settings"] == summary.settings and "settings.top_k" not in rec


def test_every_config_checks_its_settings_when_built_directly():
    """The library path (a config made in Python, no registry): each method's config refuses a
    value outside a setting's bounds, coerces an int given for a float, and refuses an answer
    reserve the budget cannot hold. Catches a config whose ``__post_init__`` skips validation."""
    for spec in registry.specs():
        cls = spec.config
        for s in st.settings_of(cls):
            b = s.bounds
            if b is None or b.lo is None:
                continue
            below = b.lo if b.lo_open else b.lo - 1
            with pytest.raises(LatentLocalError, match=s.flag):
                cls(**{s.field: below})
        floats = [s for s in st.settings_of(cls) if s.type is float and s.default is not None]
        if floats:
            f = floats[0]
            cfg = cls(**{f.field: 1} if (f.bounds is None or 1 in f.bounds) else {})
            assert type(getattr(cfg, f.field)) is float, (spec.name, f.name)
        if "answer_reserve" in {s.field for s in st.settings_of(cls)}:
            with pytest.raises(LatentLocalError, match="answer-reserve"):
                cls(answer_reserve=-1)
            assert isinstance(cls(), st.Budgeted)
            assert cls(max_tokens=64, answer_reserve=10).budget.reserve == 10
