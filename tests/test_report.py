"""Results file, statistics and report, checked against numbers worked out by hand."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from latentlocal.errors import LatentLocalError
from latentlocal.eval.report import (
    MethodRow,
    append_result,
    done_keys,
    holm_adjusted,
    main,
    mcnemar_exact_p,
    method_means,
    mixed_conditions,
    read_results,
    summarize,
    wilson_interval,
    write_report,
)

REPO = Path(__file__).resolve().parents[1]
Z95 = 1.959963984540054  # standard normal quantile at 0.975


def rec(method: str, pid: str, correct: bool, tokens: int, wall: float, **extra: object) -> dict:
    return {
        "method": method,
        "id": pid,
        "prediction": "1" if correct else "0",
        "gold": "1",
        "correct": correct,
        "generated_tokens": tokens,
        "wall_s": wall,
        **extra,
    }


def hand_results() -> list[dict]:
    cot = [True, True, False, False, True, False, True, False]  # 4/8
    soft = [True, False, True, True, True, True, False, True, True]  # 7/9, p9 has no cot twin
    out = [rec("soft", "p1", False, 999, 9.0)]  # superseded by the later soft/p1 record
    out += [rec("cot", f"p{i + 1}", c, 100, 2.0) for i, c in enumerate(cot)]
    out += [rec("soft", f"p{i + 1}", c, 10 * (i + 1), 0.5, temperature=0.7) for i, c in enumerate(soft)]
    out += [rec("seal", "p1", True, 30, 1.0), rec("seal", "p2", True, 31, 1.0)]
    return out


def wilson_by_formula(k: int, n: int) -> tuple[float, float]:
    # Independent form (as in Wilson 1927 / scipy): (2k + z^2 ± z sqrt(z^2 + 4k(1 - k/n))) / 2(n + z^2)
    root = Z95 * math.sqrt(Z95**2 + 4 * k * (1 - k / n))
    return ((2 * k + Z95**2 - root) / (2 * (n + Z95**2)), (2 * k + Z95**2 + root) / (2 * (n + Z95**2)))


@pytest.mark.parametrize(("k", "n"), [(0, 5), (4, 8), (7, 9), (10, 10), (1, 1), (137, 500)])
def test_wilson_matches_independent_formula(k: int, n: int) -> None:
    lo, hi = wilson_interval(k, n)
    elo, ehi = wilson_by_formula(k, n)
    assert lo == pytest.approx(max(0.0, elo), abs=1e-12)
    assert hi == pytest.approx(min(1.0, ehi), abs=1e-12)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_mcnemar_exact() -> None:
    assert mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(3, 3) == 1.0
    assert mcnemar_exact_p(4, 2) == pytest.approx(44 / 64)  # 2 * (C(6,0)+C(6,1)+C(6,2)) / 2^6
    assert mcnemar_exact_p(2, 4) == mcnemar_exact_p(4, 2)
    assert mcnemar_exact_p(10, 0) == pytest.approx(2 / 1024)
    assert 0 < mcnemar_exact_p(2000, 1800) < 0.01  # large n stays exact, no overflow


def test_summarize_by_hand() -> None:
    rows = summarize(hand_results())
    assert [r.method for r in rows] == ["cot", "soft", "seal"]  # cot first, then first appearance
    cot, soft, seal = rows

    lo, hi = wilson_by_formula(4, 8)
    assert (cot.n, cot.correct) == (8, 4)
    assert cot.accuracy == 0.5
    assert (cot.ci_low, cot.ci_high) == (pytest.approx(lo), pytest.approx(hi))
    assert cot.mean_tokens == 100.0 and cot.mean_wall_s == 2.0
    assert cot.tokens_per_s == pytest.approx(800 / 16.0)
    assert (cot.paired_n, cot.acc_diff, cot.b, cot.c, cot.p_value) == (None, None, None, None, None)

    # soft: p1 record is the later one (correct, 10 tokens); 9 problems, 7 right
    lo, hi = wilson_by_formula(7, 9)
    assert (soft.n, soft.correct) == (9, 7)
    assert soft.accuracy == pytest.approx(7 / 9)
    assert (soft.ci_low, soft.ci_high) == (pytest.approx(lo), pytest.approx(hi))
    assert soft.mean_tokens == pytest.approx(450 / 9)
    assert soft.mean_wall_s == pytest.approx(0.5)
    assert soft.tokens_per_s == pytest.approx(450 / 4.5)
    # paired on p1..p8: soft right & cot wrong = p3,p4,p6,p8; soft wrong & cot right = p2,p7
    assert (soft.paired_n, soft.b, soft.c) == (8, 4, 2)
    assert soft.acc_diff == pytest.approx(6 / 8 - 4 / 8)
    assert soft.p_value == pytest.approx(44 / 64)
    # paired interval: 0.25 +- 1.96 * sqrt(6 - 2^2 / 8) / 8
    half = 1.959964 * math.sqrt(6 - 4 / 8) / 8
    assert (soft.diff_low, soft.diff_high) == (pytest.approx(0.25 - half), pytest.approx(0.25 + half))

    assert (seal.n, seal.correct, seal.paired_n, seal.b, seal.c, seal.p_value) == (2, 2, 2, 0, 0, 1.0)
    assert seal.acc_diff == 0.0
    assert seal.tokens_per_s == pytest.approx(61 / 2.0)
    # Holm over the two paired methods: soft's p (the smaller) x 2, capped at 1; seal's 1 stays
    assert (cot.p_holm, soft.p_holm, seal.p_holm) == (None, 1.0, 1.0)


def test_holm_adjustment_by_hand() -> None:
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> raised to 0.06
    assert holm_adjusted([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjusted([0.2, 0.9]) == [0.4, 0.9]
    assert holm_adjusted([0.6, 0.7]) == [1.0, 1.0]  # capped at 1
    assert holm_adjusted([0.03]) == [0.03]  # one test: unadjusted
    assert holm_adjusted([]) == []


def test_holm_family_is_the_methods_paired_with_cot() -> None:
    # cot right on p0-p9; "bad" wrong on all ten (b 0, c 10, exact p = 2 / 2^10); "same" right on
    # all ten (p 1); "none" shares no id with cot, so it has no p: the family is bad and same (m 2)
    results = [rec("cot", f"p{i}", True, 1, 1.0) for i in range(10)]
    results += [rec("bad", f"p{i}", False, 1, 1.0) for i in range(10)]
    results += [rec("same", f"p{i}", True, 1, 1.0) for i in range(10)]
    results += [rec("none", "q0", True, 1, 1.0)]
    rows = {r.method: r for r in summarize(results)}
    assert rows["bad"].p_value == pytest.approx(2 / 1024)
    assert rows["bad"].p_holm == pytest.approx(2 * 2 / 1024)
    assert rows["same"].p_holm == 1.0
    assert rows["none"].p_value is None and rows["none"].p_holm is None


def test_paired_difference_interval() -> None:
    from latentlocal.eval.report import paired_diff_interval

    # GSM8K 7000-7299, soft-thinking vs cot (README): 18 / 32 of 300
    lo, hi = paired_diff_interval(18, 32, 300)
    assert (lo, hi) == (pytest.approx(-0.09256, abs=5e-5), pytest.approx(-0.00077, abs=5e-5))
    # the same discordant pairs among more agreeing ones: a smaller, surer difference
    assert hi - lo < paired_diff_interval(18, 32, 50)[1] - paired_diff_interval(18, 32, 50)[0]
    assert paired_diff_interval(0, 0, 10) == (0.0, 0.0)  # every pair agreed
    assert paired_diff_interval(10, 0, 10) == (1.0, 1.0)  # kept within [-1, 1]
    lo, hi = paired_diff_interval(9, 1, 10)
    assert -1.0 <= lo < 0.8 < hi <= 1.0


def test_summarize_without_baseline_and_zero_wall() -> None:
    rows = summarize([rec("soft", "a", True, 0, 0.0)])
    assert rows == [MethodRow("soft", 1, 1, 1.0, rows[0].ci_low, 1.0, 0.0, 0.0, None)]
    assert summarize([]) == []
    with pytest.raises(LatentLocalError, match="correct"):
        summarize([{"method": "cot", "id": "a"}])


def test_report_contains_hand_numbers(tmp_path: Path) -> None:
    md, png = write_report(tmp_path, hand_results(), title="Toy run", command="latentlocal bench --limit 9",
                           dataset="toy.jsonl offset 0 limit 9")
    assert (md, png) == (tmp_path / "report.md", tmp_path / "report.png")
    text = md.read_text(encoding="utf-8")
    lo, hi = wilson_by_formula(4, 8)
    row_cot = f"| cot | 8 | 4 | 50.0% | [{100 * lo:.1f}%, {100 * hi:.1f}%] | 100.0 | 2.00 | 50.0 | — | — | — | — |"
    assert row_cot in text
    assert "[21.5%, 78.5%]" in text  # the same interval, written out
    lo, hi = wilson_by_formula(7, 9)
    row_soft = f"| soft | 9 | 7 | 77.8% | [{100 * lo:.1f}%, {100 * hi:.1f}%] | 50.0 | 0.50 | 100.0 | +25.0 pp [-32.5, +82.5] (8) | 4 / 2 | 0.688 | 1 |"
    assert row_soft in text
    assert "| seal | 2 | 2 | 100.0% |" in text and "| +0.0 pp [+0.0, +0.0] (2) | 0 / 0 | 1 | 1 |" in text
    assert "# Toy run" in text
    assert "latentlocal bench --limit 9" in text
    assert "toy.jsonl offset 0 limit 9" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # temp files replaced


def test_method_means_by_hand(tmp_path: Path) -> None:
    results = [
        rec("seal", "p1", True, 30, 1.0, **{"thoughts.execution": 4, "cold_stop": True, "mode": "x"}),
        rec("seal", "p2", False, 31, 1.0, **{"thoughts.execution": 1, "cold_stop": False, "mode": "x"}),
        rec("seal", "p3", False, 31, 1.0, **{"thoughts.execution": 9, "cold_stop": False}),
        rec("seal", "p3", False, 31, 1.0, **{"thoughts.execution": 1, "cold_stop": False}),  # supersedes
        rec("cot", "p1", True, 10, 1.0),
        rec("soft", "p1", True, 10, 1.0, steps=2),
        rec("soft", "p2", True, 10, 1.0),  # lacks "steps": no mean over a partial field
    ]
    means = method_means(results)
    assert means == {"seal": {"thoughts.execution": 2.0, "cold_stop": pytest.approx(1 / 3)}}
    md, _ = write_report(tmp_path, results, title="t")
    assert "- `seal`: thoughts.execution 2, cold_stop 0.333" in md.read_text()


def test_mixed_run_conditions_are_flagged(tmp_path: Path) -> None:
    results = [
        rec("sc", "p1", True, 10, 1.0, batch=1, threads=2),
        rec("sc", "p2", True, 10, 1.0, batch=1, threads=1),
        rec("sc", "p3", True, 10, 1.0, batch=1, threads=1),
        rec("sc", "p4", True, 10, 1.0, batch=1),  # an older row: no thread count, not counted
        rec("cot", "p1", True, 10, 1.0, batch=4, threads=1),
        rec("cot", "p2", True, 10, 1.0, batch=1, threads=1),
        rec("cot", "p2", True, 10, 1.0, batch=4, threads=1),  # supersedes: cot is all batch 4
        rec("st", "p1", True, 10, 1.0, batch=4, threads=1),
        rec("st", "p2", True, 10, 1.0, batch=1, threads=1),
        rec("seal", "p1", True, 10, 1.0, batch=4, threads=1, build="cpu AVX AVX2"),
        rec("seal", "p2", True, 10, 1.0, batch=4, threads=1, build="cpu AVX AVX2 AVX512"),
    ]
    assert mixed_conditions(results) == {"sc": {"threads": {2: 1, 1: 2}}, "st": {"batch": {4: 1, 1: 1}},
                                         "seal": {"build": {"cpu AVX AVX2": 1, "cpu AVX AVX2 AVX512": 1}}}
    md, _ = write_report(tmp_path, results, title="t")
    text = md.read_text()
    assert "## Mixed run conditions" in text
    assert "- `sc`: threads 1: 2, 2: 1 results" in text and "- `st`: batch 1: 1, 4: 1 results" in text
    assert "- `seal`: build cpu AVX AVX2 AVX512: 1, cpu AVX AVX2: 1 results" in text
    assert "- `cot`:" not in text.split("## Mixed run conditions")[1].split("##")[0]
    md, _ = write_report(tmp_path, [r for r in results if r["method"] == "cot"], title="t")
    assert "Mixed run conditions" not in md.read_text()


def test_report_with_no_results(tmp_path: Path) -> None:
    md, png = write_report(tmp_path, [])
    assert "No results yet." in md.read_text(encoding="utf-8")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_append_read_and_done_keys(tmp_path: Path) -> None:
    path = tmp_path / "run" / "results.jsonl"
    assert done_keys(path) == set()
    for r in hand_results():
        append_result(path, r)
    assert len(path.read_text(encoding="utf-8").splitlines()) == len(hand_results())
    got = read_results(path)
    assert len(got) == 8 + 9 + 2  # duplicate (soft, p1) collapsed
    soft_p1 = next(r for r in got if (r["method"], r["id"]) == ("soft", "p1"))
    assert soft_p1["generated_tokens"] == 10  # the last one kept
    assert done_keys(path) == {(r["method"], r["id"]) for r in hand_results()}
    with pytest.raises(LatentLocalError, match="lacks"):
        append_result(path, {"method": "cot"})


def test_truncated_last_line_is_tolerated_and_repaired(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    append_result(path, rec("cot", "a", True, 5, 1.0))
    append_result(path, rec("cot", "b", False, 5, 1.0))
    with open(path, "ab") as f:  # a run killed mid-write
        f.write(json.dumps(rec("cot", "c", True, 5, 1.0)).encode()[:25])
    assert [r["id"] for r in read_results(path)] == ["a", "b"]
    assert done_keys(path) == {("cot", "a"), ("cot", "b")}
    # resuming appends after the partial line without corrupting the file
    append_result(path, rec("cot", "c", True, 5, 1.0))
    assert [r["id"] for r in read_results(path)] == ["a", "b", "c"]
    assert path.read_text(encoding="utf-8").count("\n") == 3


def test_complete_last_record_without_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(rec("cot", "a", True, 5, 1.0)), encoding="utf-8")
    append_result(path, rec("cot", "b", True, 5, 1.0))
    assert [r["id"] for r in read_results(path)] == ["a", "b"]


def test_corrupt_middle_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    lines = [json.dumps(rec("cot", "a", True, 5, 1.0)), '{"method": "cot", "id": ', json.dumps(rec("cot", "b", True, 5, 1.0))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(LatentLocalError, match=r"results\.jsonl:2: bad JSON"):
        read_results(path)


def test_bad_records_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"method": "cot", "id": "a"}) + "\n" + json.dumps(rec("cot", "b", True, 1, 1.0)) + "\n")
    with pytest.raises(LatentLocalError, match=r"results\.jsonl:1: result lacks prediction"):
        read_results(path)
    with pytest.raises(LatentLocalError, match="not found"):
        read_results(tmp_path / "missing.jsonl")


def test_regenerate_from_file_via_module(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    for r in hand_results():
        append_result(results, r)
    with open(results, "ab") as f:
        f.write(b'{"method": "cot", "id": "p9", "pred')  # killed mid-write
    md, png = write_report(tmp_path, read_results(results), title="Toy | run", command="latentlocal bench -->")
    before = md.read_text(encoding="utf-8")
    png.unlink()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, "-m", "latentlocal.eval.report", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert md.read_text(encoding="utf-8") == before
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_folder_filled_by_several_runs_keeps_each_methods_command(tmp_path: Path) -> None:
    """The report said only the last bench command, so a table whose cot rows came from an
    earlier run (another --limit, other methods) named a command that made none of them."""
    results = hand_results()
    for r in results:
        append_result(tmp_path / "results.jsonl", r)
    first = "latentlocal bench --limit 9 --methods cot,soft --out d"
    write_report(tmp_path, [r for r in results if r["method"] != "seal"], title="t", command=first,
                 dataset="toy offset 0 limit 9", methods=["cot", "soft"])
    write_report(tmp_path, results, title="t", command="latentlocal bench --limit 2 --methods seal --out d",
                 dataset="toy offset 0 limit 2", methods=["seal"])
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert first in text and "--methods seal" in text
    assert "- `cot`, `soft` on toy offset 0 limit 9:" in text and "- `seal` on toy offset 0 limit 2:" in text
    # soft rerun alone: cot keeps the first command, soft takes the new one
    write_report(tmp_path, results, title="t", command="latentlocal bench --methods soft --out d",
                 dataset="toy offset 0 limit 9", methods=["soft"])
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "- `cot` on toy offset 0 limit 9:" in text and "- `soft` on toy offset 0 limit 9:" in text
    assert text.split("\n", 1)[1].count("--methods cot,soft") == 1 and "- `seal` on toy offset 0 limit 2:" in text
    assert main([str(tmp_path)]) == 0  # a rebuild keeps all three
    assert (tmp_path / "report.md").read_text(encoding="utf-8") == text
    # a run whose methods no longer have rows drops out
    write_report(tmp_path, [r for r in results if r["method"] == "cot"], title="t",
                 command="latentlocal bench --methods cot --out d", methods=["cot"])
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "Commands" not in text and "Command:" in text and "--methods soft" not in text


def test_a_report_from_before_the_run_record_names_its_methods_from_its_command(tmp_path: Path) -> None:
    results = hand_results()
    legacy = {"title": "t", "dataset": "toy limit 2", "command": "latentlocal bench --methods 'seal' --out d"}
    (tmp_path / "report.md").write_text("<!-- latentlocal-report " + json.dumps(legacy) + " -->\n\n# t\n")
    write_report(tmp_path, results, title="t", command="latentlocal bench --methods cot,soft --out d",
                 dataset="toy limit 9", methods=["cot", "soft"])
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "- `seal` on toy limit 2:" in text and "- `cot`, `soft` on toy limit 9:" in text
    (tmp_path / "report.md").write_text("<!-- latentlocal-report " + json.dumps(legacy) + " -->\n\n# t\n")
    write_report(tmp_path, results, title="t", command="latentlocal bench --methods soft --out d",
                 dataset="toy limit 9", methods=["soft"])
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "- `cot`: made by a command this report did not record" in text
    assert "Command:" not in text and "- Dataset:" not in text  # no one command claims the whole table


def test_main_reports_missing_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 1
    assert "results.jsonl" in capsys.readouterr().err


def test_plot_keeps_a_long_title_and_long_method_names_inside_the_image() -> None:
    # A bench title names slice, model and settings; one line of it ran off both edges of the
    # image, and the rightmost point's label ran off the right edge.
    from latentlocal.eval.report import _figure

    title = ("SVAMP dev [0:300), Qwen2.5-Coder-0.5B-Instruct Q4_K_M, max 320 tokens, batch 4, "
             "with every method of issue 18 in one folder")
    results = [rec("cot", "a", True, 180, 1.0), rec("cot", "b", False, 182, 1.0),
               rec("soft-thinking:noise=dirichlet;dirichlet_alpha=1", "a", True, 400, 1.0),
               rec("soft-thinking:noise=dirichlet;dirichlet_alpha=1", "b", True, 410, 1.0),
               # just right of the middle, so labelled to its left: on one line it ran off the left edge
               rec("seal:vector=vectors/qwen2.5-coder-0.5b-instruct.seal.gguf", "a", False, 300, 1.0)]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = _figure(summarize(results), title)
    canvas = FigureCanvasAgg(fig)  # what savefig draws with
    canvas.draw()
    renderer = canvas.get_renderer()
    width, height = fig.bbox.width, fig.bbox.height
    ax = fig.axes[0]
    assert len(ax.texts) == 3  # one label per method
    box = ax.title.get_window_extent(renderer)
    assert 0 <= box.x0 and box.x1 <= width and 0 <= box.y0 and box.y1 <= height
    frame = ax.get_window_extent(renderer)  # a label must not run over the axis' tick labels either
    from matplotlib.text import Text

    for t in ax.texts:
        box = Text.get_window_extent(t, renderer)  # the text, not the line to its point
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, t.get_text()


def _texts_in_frame(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    ax = fig.axes[0]
    return ([Text.get_window_extent(t, renderer) for t in ax.texts],  # the text, not its line
            ax.get_window_extent(renderer), renderer)


def test_plot_labels_of_close_points_do_not_overlap() -> None:
    # Four methods all at 0%, as in the Gemma GSM8K table ("soft-thinking" was drawn over "cot"),
    # two of them at the very same point
    from latentlocal.eval.report import _figure

    results = [rec(name, f"p{j}", False, tokens, 1.0) for name, tokens in
               [("cot", 240.0), ("soft-thinking", 240.0), ("soft-thinking:noise=gumbel", 248.3),
                ("soft-thinking:mix=moi", 221.0)] for j in range(3)]
    boxes, frame, _ = _texts_in_frame(_figure(summarize(results), "t"))
    assert len(boxes) == 4
    for i, a in enumerate(boxes):
        assert frame.x0 <= a.x0 and a.x1 <= frame.x1 and frame.y0 <= a.y0 and a.y1 <= frame.y1
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (a, b)


def test_many_methods_are_named_in_a_legend_inside_the_image() -> None:
    # Nine methods of similar length and accuracy, as the 300-problem tables have.
    from latentlocal.eval.report import _figure

    names = ["cot", "soft-thinking", "soft-thinking:noise=gumbel", "soft-thinking:noise=dirichlet",
             "seal:vector=vectors/qwen2.5-coder-0.5b-instruct.seal.gguf", "swi-reasoning",
             "sc:temperature=0.4;samples=8", "sc:temperature=0.8;samples=8", "soft-reasoning"]
    results = [rec(name, f"p{j}", j < 4 + i % 2, 180 + 1.5 * i, 1.0) for i, name in enumerate(names)
               for j in range(10)]
    fig = _figure(summarize(results), "t")
    boxes, _, renderer = _texts_in_frame(fig)
    assert boxes == []  # no labels beside the points
    legend = fig.axes[0].get_legend()
    assert [t.get_text().split("\n")[0] for t in legend.get_texts()] == [n.split(":")[0] for n in names]
    box = legend.get_window_extent(renderer)
    assert 0 <= box.x0 and box.x1 <= fig.bbox.width and 0 <= box.y0 and box.y1 <= fig.bbox.height


def test_more_methods_than_colours_keep_distinct_legend_entries() -> None:
    from latentlocal.eval.report import _figure

    results = [rec(f"m{i}", f"p{j}", j < i % 5, 100 + i, 1.0) for i in range(23) for j in range(5)]
    ax = _figure(summarize(results), "t").axes[0]
    handles, _ = ax.get_legend_handles_labels()
    looks = {(h.lines[0].get_color(), h.lines[0].get_marker()) for h in handles}
    assert len(handles) == 23 and len(looks) == 23  # no two methods drawn alike


def test_token_axis_turns_logarithmic_when_methods_differ_several_fold() -> None:
    # sc's 8 chains write ~8x CoT's tokens: on a linear axis the single-chain methods crowd together
    from latentlocal.eval.report import _figure

    close = [rec(m, "p1", True, t, 1.0) for m, t in (("cot", 180), ("soft", 190))]
    apart = close + [rec("sc", "p1", True, 1500, 1.0)]
    assert _figure(summarize(close), "t").axes[0].get_xscale() == "linear"
    ax = _figure(summarize(apart), "t").axes[0]
    assert ax.get_xscale() == "log" and "log scale" in ax.get_xlabel()
    lo, hi = ax.get_xlim()
    assert lo < 180 and hi > 1500  # every point inside the axes
