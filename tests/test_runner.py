"""The benchmark runner: method specs, resume after interruption, the CLI end to end."""

from __future__ import annotations

import argparse
import itertools
import json
import threading

import pytest

from latentlocal.errors import LatentLocalError
from latentlocal.eval import runner as runner_mod
from latentlocal.datasets import Problem
from latentlocal.eval.report import read_results, write_report
from latentlocal.events import Summary, Token

PROBLEMS = [Problem(id=f"p{i}", question=f"What is {i} + {i}?", gold=str(2 * i)) for i in range(6)]


def fake_method(bias: int):
    """A deterministic stand-in for a method: right on even ids, wrong otherwise (plus bias)."""

    def run(engine, question, cancel=None):
        n = int(question.split()[2])
        yield Token(text="x", token_id=1)
        answer = str(2 * n if (n + bias) % 2 == 0 else 2 * n + 1)
        extra = {"extra_field": n, "thoughts": {"execution": n, "reflection": 1}, "layers": [n]}
        yield Summary("fake", answer, f"Final answer: {answer}", 10 + n, 1.0, "eos", extra)

    return run


@pytest.fixture
def fixed_clock(monkeypatch):
    """Every problem takes exactly 0.5 s, so reports of two runs can be compared byte for byte."""
    ticks = itertools.count()
    monkeypatch.setattr(runner_mod.time, "perf_counter", lambda: next(ticks) * 0.25)


def test_resume_after_interruption_gives_the_same_report(tmp_path, fixed_clock):
    methods = [("cot", fake_method(0)), ("other", fake_method(1))]
    whole = tmp_path / "whole"
    runner_mod.run_bench(None, PROBLEMS, methods, whole)

    part = tmp_path / "part"
    cancel = threading.Event()
    calls = {"n": 0}

    def interrupting(engine, question, c=None):
        calls["n"] += 1
        if calls["n"] == 4:
            cancel.set()  # the user pressed Ctrl+C during the 4th problem
        yield from fake_method(0)(engine, question, c)

    runner_mod.run_bench(None, PROBLEMS, [("cot", interrupting), methods[1]], part, cancel=cancel)
    partial = read_results(part / "results.jsonl")
    assert 0 < len(partial) < len(PROBLEMS) * 2
    # problem by problem: every problem before the stop has both methods (paired); the stop
    # lands during the 4th problem's first method
    ids = [r["id"] for r in partial]
    assert ids[:6] == [p.id for p in PROBLEMS[:3] for _ in range(2)] and ids[6:] in ([], ["p3"])
    # a kill in the middle of a write leaves half a line behind
    with open(part / "results.jsonl", "a") as f:
        f.write('{"method": "cot", "id": "p5", "predic')
    runner_mod.run_bench(None, PROBLEMS, methods, part)

    a = read_results(whole / "results.jsonl")
    b = read_results(part / "results.jsonl")
    assert sorted(json.dumps(r, sort_keys=True) for r in a) == sorted(json.dumps(r, sort_keys=True) for r in b)
    md_a, _ = write_report(whole, a, title="t", command="c")
    md_b, _ = write_report(part, b, title="t", command="c")
    assert md_a.read_text() == md_b.read_text()


def test_finished_problems_are_not_run_again(tmp_path, fixed_clock):
    seen = []

    def counting(engine, question, cancel=None):
        seen.append(question)
        yield from fake_method(0)(engine, question, cancel)

    runner_mod.run_bench(None, PROBLEMS[:3], [("cot", counting)], tmp_path)
    runner_mod.run_bench(None, PROBLEMS[:5], [("cot", counting)], tmp_path)
    assert len(seen) == 5
    rows = read_results(tmp_path / "results.jsonl")
    assert [r["id"] for r in rows] == ["p0", "p1", "p2", "p3", "p4"]
    assert rows[1]["correct"] is False and rows[2]["correct"] is True
    assert rows[3]["extra_field"] == 3
    # named counts flatten one level; lists are dropped (results stay one short line each)
    assert rows[3]["thoughts.execution"] == 3 and rows[3]["thoughts.reflection"] == 1
    assert "layers" not in rows[3] and "thoughts" not in rows[3]


def test_records_count_thoughts_from_text_when_the_method_does_not():
    p = PROBLEMS[1]
    plain = Summary("cot", "2", "Add 1 and 1.\n\nWait, let me check.\n\nFinal answer: 2", 9, 1.0, "answer")
    rec = runner_mod.record_for("cot", p, plain, 1.0)
    assert (rec["thoughts.execution"], rec["thoughts.reflection"], rec["thoughts.transition"]) == (1, 1, 0)
    own = Summary("seal", "2", "x\n\ny", 9, 1.0, "answer", {"thoughts": {"execution": 5, "reflection": 0}})
    rec = runner_mod.record_for("seal", p, own, 1.0)
    assert rec["thoughts.execution"] == 5 and "thoughts.transition" not in rec  # the method's own counts win


def test_method_specs_parse_overrides():
    base = argparse.Namespace(temperature=None, samples=None, max_tokens=None)
    label, name, options = runner_mod.parse_method_spec("sc:temperature=0.4;samples=3", base)
    assert (label, name, options) == ("sc:temperature=0.4;samples=3", "sc", {"temperature": 0.4, "samples": 3})
    assert base.temperature is None
    with pytest.raises(LatentLocalError, match="unknown option"):
        runner_mod.parse_method_spec("sc:colour=red", base)
    with pytest.raises(LatentLocalError, match="unknown method"):
        runner_mod.parse_method_spec("magic", base)
    with pytest.raises(LatentLocalError, match="key=value"):
        runner_mod.parse_method_spec("sc:temperature", base)


def test_bench_cli_on_the_bundled_model(tmp_path, capsys):
    from latentlocal.cli import main

    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"What is {i} plus {i}?", "answer": f"#### {2 * i}"})
                              for i in range(1, 4)) + "\n")
    out = tmp_path / "out"
    argv = ["bench", "--methods", "cot", "--data", str(data), "--limit", "2", "--out", str(out),
            "--max-tokens", "24", "--threads", "2", "--n-ctx", "1024"]
    assert main(argv) == 0
    rows = read_results(out / "results.jsonl")
    assert [r["id"] for r in rows] == ["data:0", "data:1"]
    assert all(r["generated_tokens"] > 0 for r in rows)
    assert [(r["batch"], r["threads"]) for r in rows] == [(1, 2), (1, 2)]  # run conditions recorded
    from latentlocal.cpu_build import build_label
    assert all(r.get("build") == build_label() for r in rows)
    md = (out / "report.md").read_text()
    assert "| cot | 2 |" in md and "latentlocal bench --methods cot" in md
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the report rebuilds from the results file without a model, keeping the command that ran
    assert main(["bench", "--out", str(out), "--report-only"]) == 0
    md = (out / "report.md").read_text()
    assert "latentlocal bench --methods cot" in md and "--report-only" not in md
    (out / "report.md").unlink()
    assert main(["bench", "--out", str(out), "--report-only"]) == 0
    assert "| cot | 2 |" in (out / "report.md").read_text()
    assert main(["bench", "--out", str(out), "--methods", "cot"]) == 2
    assert "needs --data" in capsys.readouterr().err
    # resuming with the settings the rows recorded runs only the new problem; with another
    # --max-tokens it is refused before anything runs (both would pool in one report row)
    argv[argv.index("--limit") + 1] = "3"
    assert main(argv) == 0
    assert [r["id"] for r in read_results(out / "results.jsonl")] == ["data:0", "data:1", "data:2"]
    capsys.readouterr()
    argv[argv.index("--max-tokens") + 1] = "12"
    assert main(argv) == 2
    assert "max_tokens 24 there, 12 now" in capsys.readouterr().err
    assert len(read_results(out / "results.jsonl")) == 3


def test_resume_check_compares_each_label_with_its_recorded_settings(tmp_path):
    results = tmp_path / "results.jsonl"
    runner_mod.check_resume(results, {"cot": {"max_tokens": 8}})  # no file yet: nothing to check
    rows = [{"method": "cot", "id": "p1", "prediction": "1", "gold": "1", "correct": True,
             "generated_tokens": 3, "wall_s": 0.1, "settings": {"max_tokens": 8, "seed": None}},
            {"method": "sc", "id": "p1", "prediction": "1", "gold": "1", "correct": True,
             "generated_tokens": 3, "wall_s": 0.1}]  # an older row: no settings recorded
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    runner_mod.check_resume(results, {"cot": {"max_tokens": 8, "seed": None}, "sc": {"samples": 9}})
    runner_mod.check_resume(results, {"seal": {"alpha": 2.0}})  # labels not in the file
    with pytest.raises(LatentLocalError, match=r"'cot' results made with other settings \(seed None there, "
                                               r"3 now\).*'cot:seed=3'"):
        runner_mod.check_resume(results, {"cot": {"max_tokens": 8, "seed": 3}})
    same = [Problem(id="p1", question="q", gold="1")]
    runner_mod.check_resume(results, {}, same)
    other = [Problem(id="p1", question="another file's q", gold="20")]  # same id, other data
    with pytest.raises(LatentLocalError, match="p1 with gold answer '1', and the data now gives '20'"):
        runner_mod.check_resume(results, {}, other)
