"""Evaluation results: the append-only results file, per-method statistics and the report.

Works from ``DIR/results.jsonl`` alone (no model), so a report can be regenerated at any time,
including from a run that was killed half way::

    python -m latentlocal.eval.report DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import os
import shlex
import sys
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from latentlocal.atomic import write_bytes_atomic
from latentlocal.errors import LatentLocalError
from latentlocal.jsonl import append_object, read_objects

__all__ = [
    "BASELINE",
    "MethodRow",
    "append_result",
    "done_keys",
    "holm_adjusted",
    "main",
    "mcnemar_exact_p",
    "mixed_conditions",
    "paired_diff_interval",
    "read_results",
    "summarize",
    "wilson_interval",
    "write_report",
]

BASELINE = "cot"
RESULTS_NAME = "results.jsonl"
REQUIRED_KEYS = ("method", "id", "prediction", "gold", "correct", "generated_tokens", "wall_s")
# Report settings live in an HTML comment inside report.md so that
# `python -m latentlocal.eval.report DIR` can rebuild an identical report without a side file.
_META_PREFIX = "<!-- latentlocal-report "
_META_SUFFIX = " -->"


# ---------------------------------------------------------------------------------------------
# results file


def _check_record(rec: Any, where: str) -> dict[str, Any]:
    if not isinstance(rec, dict):
        raise LatentLocalError(f"{where}: expected a JSON object, got {type(rec).__name__}; one result per line")
    missing = [k for k in REQUIRED_KEYS if k not in rec]
    if missing:
        raise LatentLocalError(
            f"{where}: result lacks {', '.join(missing)}; every result needs {', '.join(REQUIRED_KEYS)}"
        )
    if not isinstance(rec["correct"], bool):
        raise LatentLocalError(f"{where}: 'correct' must be true or false, got {rec['correct']!r}; fix the record")
    for key in ("generated_tokens", "wall_s"):
        val = rec[key]
        if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val) or val < 0:
            raise LatentLocalError(f"{where}: {key!r} must be a non-negative number, got {val!r}; fix the record")
    return rec


def _key(rec: dict[str, Any]) -> tuple[str, str]:
    return (str(rec["method"]), str(rec["id"]))


def _dedupe(results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    # A resumed or re-run problem supersedes the earlier record; keeping the first position
    # keeps method order stable ("first appearance") across re-runs.
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for rec in results:
        latest[_key(rec)] = rec
    return list(latest.values())


def read_results(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Records from a results JSONL file, the last one winning for a repeated (method, id).

    An unparsable final line is skipped (a run killed mid-write); a corrupt line anywhere else
    is an error, because silently dropping finished work would bias the statistics.
    """
    path = Path(path)
    if not path.exists():
        raise LatentLocalError(f"results file {path} not found; pass the run directory that holds {RESULTS_NAME}")
    if path.is_dir():
        raise LatentLocalError(f"{path} is a directory; pass the results .jsonl file inside it")
    rows = read_objects(path, fix="fix or delete that line and re-run", torn_tail_ok=True)
    return _dedupe(_check_record(rec, f"{path}:{lineno}") for lineno, rec in rows)


def append_result(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one record as a JSON line, flushed and fsynced so a killed run keeps finished work."""
    _check_record(record, "append_result")
    append_object(path, record)


def done_keys(path: str | os.PathLike[str]) -> set[tuple[str, str]]:
    """(method, id) pairs already in the results file; empty if it does not exist yet."""
    path = Path(path)
    if not path.exists():
        return set()
    return {_key(rec) for rec in read_results(path)}


# ---------------------------------------------------------------------------------------------
# statistics


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials.

    Wilson rather than the normal approximation because accuracies near 0% or 100% on small
    benchmarks are the norm here, where the normal interval leaves [0, 1].
    """
    if n <= 0:
        return (0.0, 1.0)
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    # At k=0 / k=n the bound is exactly 0 / 1; rounding would otherwise leave 3e-17 and put the
    # interval off its own point estimate.
    lo = 0.0 if k == 0 else max(0.0, float(ci.low))
    hi = 1.0 if k == n else min(1.0, float(ci.high))
    return (lo, hi)


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: binomial test of b out of b+c discordant pairs at p=0.5.

    Exact rather than chi-square because discordant counts on small benchmarks are far too low
    for the approximation.
    """
    if b + c == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(b, b + c, 0.5).pvalue)


def paired_diff_interval(b: int, c: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Interval for the difference of two accuracies measured on the same n problems, from the
    discordant counts (b = only the method right, c = only the baseline right): the Wald interval
    for paired proportions, (b - c) / n +- z * sqrt(b + c - (b - c)^2 / n) / n.

    Paired, not two independent Wilson intervals: the methods share the problems, so most of the
    variation cancels, and only the discordant pairs carry the difference. With b = c = 0 it is
    the point 0 (every pair agreed).
    """
    if n <= 0:
        return (-1.0, 1.0)
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))
    d = (b - c) / n
    half = z * math.sqrt(max(0.0, b + c - (b - c) ** 2 / n)) / n
    return (max(-1.0, d - half), min(1.0, d + half))


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of p-values tested together, in their given order.

    A report compares every method with the baseline, so at nine methods one raw p below 0.05
    turns up by chance far more often than one time in twenty; Holm keeps the chance of any false
    rejection among them at the level (family-wise) without assuming the tests independent (they
    are not: they share the baseline's answers). The k-th smallest p is multiplied by m - k + 1,
    and the adjusted values are made non-decreasing in that order.
    """
    m = len(p_values)
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda j: p_values[j])):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class MethodRow:
    """One method's line in the report; the paired fields are None for the baseline itself or
    when there is no baseline to pair with."""

    method: str
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    mean_tokens: float
    mean_wall_s: float
    tokens_per_s: float | None
    paired_n: int | None = None
    acc_diff: float | None = None
    b: int | None = None
    c: int | None = None
    p_value: float | None = None
    diff_low: float | None = None
    diff_high: float | None = None
    # p_value adjusted (Holm) over every method of the report paired with the baseline
    p_holm: float | None = None


def summarize(results: Sequence[dict[str, Any]]) -> list[MethodRow]:
    """Per-method accuracy (Wilson 95% CI), cost, and paired comparison with the "cot" baseline.

    Rows: "cot" first, then methods in order of first appearance.
    """
    checked = [_check_record(rec, f"result {i}") for i, rec in enumerate(results)]
    by_method: dict[str, dict[str, dict[str, Any]]] = {}
    for rec in _dedupe(checked):
        method, pid = _key(rec)
        by_method.setdefault(method, {})[pid] = rec
    order = sorted(by_method, key=lambda m: m != BASELINE)  # stable: keeps first-appearance order
    base = by_method.get(BASELINE)

    rows = []
    for method in order:
        recs = by_method[method]
        n = len(recs)
        k = sum(1 for r in recs.values() if r["correct"])
        tokens = sum(r["generated_tokens"] for r in recs.values())
        wall = sum(float(r["wall_s"]) for r in recs.values())
        lo, hi = wilson_interval(k, n)
        paired: dict[str, Any] = {}
        if base is not None and method != BASELINE:
            # Paired on shared ids only: a method run on a subset must not be compared with the
            # baseline's accuracy on different problems.
            shared = [pid for pid in recs if pid in base]
            b = sum(1 for pid in shared if recs[pid]["correct"] and not base[pid]["correct"])
            c = sum(1 for pid in shared if not recs[pid]["correct"] and base[pid]["correct"])
            paired = {
                "paired_n": len(shared),
                "acc_diff": (b - c) / len(shared) if shared else None,
                "b": b,
                "c": c,
                "p_value": mcnemar_exact_p(b, c) if shared else None,
            }
            if shared:
                paired["diff_low"], paired["diff_high"] = paired_diff_interval(b, c, len(shared))
        rows.append(
            MethodRow(
                method=method,
                n=n,
                correct=k,
                accuracy=k / n,
                ci_low=lo,
                ci_high=hi,
                mean_tokens=tokens / n,
                mean_wall_s=wall / n,
                tokens_per_s=tokens / wall if wall > 0 else None,
                **paired,
            )
        )
    tested = [i for i, r in enumerate(rows) if r.p_value is not None]
    for i, p in zip(tested, holm_adjusted([rows[i].p_value for i in tested])):
        rows[i] = dataclasses.replace(rows[i], p_holm=p)
    return rows


def method_means(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per method, the mean of every numeric method-specific field all its records carry.

    Booleans count as 0/1, so a flag such as ``cold_stop`` becomes the fraction of problems where
    it fired; SEAL's ``thoughts.<class>`` become mean thoughts per problem.
    """
    by_method: dict[str, list[dict[str, Any]]] = {}
    for rec in _dedupe(_check_record(r, f"result {i}") for i, r in enumerate(results)):
        by_method.setdefault(str(rec["method"]), []).append(rec)
    out: dict[str, dict[str, float]] = {}
    for method, recs in by_method.items():
        keys = [k for k in recs[0] if k not in REQUIRED_KEYS]
        means: dict[str, float] = {}
        for key in keys:
            vals = [r.get(key) for r in recs]
            if all(isinstance(v, (int, float)) and math.isfinite(v) for v in vals):
                means[key] = sum(float(v) for v in vals) / len(vals)
        if means:
            out[method] = means
    return out


# Run conditions that move llama.cpp's numerics, and so single greedy answers, or (reasoning on a
# model with think tokens) the whole run: one method's rows made under two of them are not one
# measurement
CONDITIONS = ("batch", "threads", "build", "reasoning")


def mixed_conditions(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[Any, int]]]:
    """Per method, each condition of :data:`CONDITIONS` whose recorded values differ among its
    results, with the number of results at each value. Rows that do not record a condition
    (older results files) are left out of its count."""
    counts: dict[str, dict[str, dict[Any, int]]] = {}
    for rec in _dedupe(_check_record(r, f"result {i}") for i, r in enumerate(results)):
        for cond in CONDITIONS:
            if cond in rec:
                per = counts.setdefault(str(rec["method"]), {}).setdefault(cond, {})
                per[rec[cond]] = per.get(rec[cond], 0) + 1
    mixed = {m: {c: v for c, v in conds.items() if len(v) > 1} for m, conds in counts.items()}
    return {m: conds for m, conds in mixed.items() if conds}


# ---------------------------------------------------------------------------------------------
# report


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _p(p: float) -> str:
    return "1" if p >= 1 else (f"{p:.3g}" if p >= 1e-4 else f"{p:.1e}")


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(rows: list[MethodRow]) -> list[str]:
    header = [
        "Method", "n", "Correct", "Accuracy", "95% CI (Wilson)", "Mean gen. tokens",
        "Mean wall (s)", "Tokens/s", f"Δ acc vs {BASELINE} [95% CI] (paired n)", "b / c", "McNemar p",
        "Holm p",
    ]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for r in rows:
        if r.paired_n is None:
            diff = bc = p = holm = "—"
        elif r.paired_n == 0:
            diff, bc, p, holm = "no shared ids (0)", "—", "—", "—"
        else:
            assert r.acc_diff is not None and r.p_value is not None and r.p_holm is not None
            assert r.diff_low is not None and r.diff_high is not None
            diff = (f"{100 * r.acc_diff:+.1f} pp [{100 * r.diff_low:+.1f}, {100 * r.diff_high:+.1f}] "
                    f"({r.paired_n})")
            bc = f"{r.b} / {r.c}"
            p = _p(r.p_value)
            holm = _p(r.p_holm)
        cells = [
            _md_cell(r.method),
            str(r.n),
            str(r.correct),
            _pct(r.accuracy),
            f"[{_pct(r.ci_low)}, {_pct(r.ci_high)}]",
            f"{r.mean_tokens:.1f}",
            f"{r.mean_wall_s:.2f}",
            "—" if r.tokens_per_s is None else f"{r.tokens_per_s:.1f}",
            diff,
            bc,
            p,
            holm,
        ]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _code_block(text: str) -> list[str]:
    fence = "````" if "```" in text else "```"
    return [f"{fence}text", text, fence]


def _render_markdown(
    rows: list[MethodRow], results: list[dict[str, Any]], title: str, runs: list[dict[str, Any]]
) -> str:
    meta = json.dumps({"title": title, "runs": runs}, ensure_ascii=False, sort_keys=True)
    meta = meta.replace(">", "\\u003e")  # keeps "-->" inside a string from closing the comment
    lines = [_META_PREFIX + meta + _META_SUFFIX, "", f"# {title or 'Evaluation report'}", ""]
    # one command for the whole table only where it made every row (or says nothing of methods)
    covered = {m for run in runs for m in run.get("methods") or []}
    unrecorded = [r.method for r in rows if r.method not in covered]
    whole = len(runs) == 1 and (runs[0].get("methods") is None or not unrecorded)
    if whole and runs[0].get("dataset"):
        lines.append(f"- Dataset: {runs[0]['dataset']}")
    ids = {str(r["id"]) for r in results}
    lines.append(f"- Problems: {len(ids)} distinct ids, {len(results)} results, {len(rows)} methods")
    lines.append("")
    if whole and runs[0].get("command"):
        lines += ["Command:", "", *_code_block(runs[0]["command"]), ""]
    elif runs and not whole:
        lines += ["Commands (each method's rows come from the last of these that ran it):", ""]
        for run in runs:
            names = ", ".join(f"`{m}`" for m in run.get("methods") or []) or "methods not recorded"
            where = f" on {run['dataset']}" if run.get("dataset") else ""
            lines += [f"- {names}{where}:", "", *textwrap.indent("\n".join(_code_block(
                str(run.get("command") or "(command not recorded)"))), "  ").split("\n"), ""]
        if unrecorded:
            lines += ["- " + ", ".join(f"`{m}`" for m in unrecorded) + ": made by a command this "
                      "report did not record (it kept only the last one before it kept one per method)", ""]
    if not rows:
        lines += ["No results yet.", ""]
    else:
        lines += _table(rows)
        lines += [
            "",
            f"Accuracy is correct/n with a 95% Wilson score interval. Tokens/s is total generated "
            f"tokens over total wall time. The paired columns compare each method with `{BASELINE}` "
            f"on the problem ids both ran: b = method right and {BASELINE} wrong, c = method wrong "
            f"and {BASELINE} right, p = exact two-sided McNemar test (binomial test of b out of b+c "
            "at 0.5), and the difference's 95% interval is the paired (Wald) one from b and c. "
            f"Holm p is that p adjusted (Holm's step-down) for the {BASELINE} comparisons of this "
            "report taken together: below 0.05 it is a difference at a 5% family-wise error rate.",
            "",
            "![accuracy vs generated tokens](report.png)",
            "",
        ]
        mixed = mixed_conditions(results)
        if mixed:
            lines += ["## Mixed run conditions", "",
                      "These methods' results were not all made under one batch size, thread "
                      "count and llama.cpp build (backend and instruction sets). Each changes "
                      "llama.cpp's arithmetic and so can change single answers: "
                      "rerun the minority rows (delete them from results.jsonl, run bench again) "
                      "for one configuration.", ""]
            for method, conds in mixed.items():
                cells = "; ".join(
                    f"{cond} " + ", ".join(f"{v}: {n}" for v, n in sorted(vals.items(), key=str))
                    for cond, vals in conds.items())
                lines.append(f"- `{_md_cell(method)}`: {_md_cell(cells)} results")
            lines.append("")
        means = method_means(results)
        if means:
            lines += ["## Method-specific means", "",
                      "Per problem, over each method's results (true/false fields as the fraction true).", ""]
            for method, vals in means.items():
                cells = ", ".join(f"{k} {v:.3g}" for k, v in vals.items())
                lines.append(f"- `{_md_cell(method)}`: {_md_cell(cells)}")
            lines.append("")
    return "\n".join(lines)


def _plot_label(method: str) -> str:
    """A method label on lines of its own, the name and then each option, a path by its file
    name: a label on one line (``seal:vector=vectors/...seal.gguf``) ran past the image's edge."""
    name, _, options = method.partition(":")
    lines = [name]
    for option in filter(None, options.split(";")):
        key, eq, value = option.partition("=")
        lines.append(f"{key}={PurePath(value).name}" if eq and "/" in value else option)
    return "\n".join(lines)


INLINE_LABELS = 4  # methods labelled beside their points; more get a legend
MARKERS = "osD^v"
LOG_X_SPREAD = 4  # most / fewest mean tokens beyond which the plot's token axis is logarithmic


def _figure(rows: list[MethodRow], title: str) -> Any:
    # Lazy import: matplotlib costs ~0.5 s and is only needed here. Agg because reports are
    # written from headless benchmark runs and from inside the TUI.
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Beyond a few methods, labels beside their points crowd each other (the 300-problem tables
    # have nine): a legend under the axes names them instead, by colour.
    legend = len(rows) > INLINE_LABELS
    rows_of_legend = -(-len(rows) // 3) if legend else 0
    fig = Figure(figsize=(7, 4.5 + 0.45 * rows_of_legend), dpi=120)
    FigureCanvasAgg(fig)  # a renderer to measure the labels with (_separate)
    ax = fig.add_subplot()
    labels = []
    if rows:
        lo, hi = min(r.mean_tokens for r in rows), max(r.mean_tokens for r in rows)
        # Headroom above the highest CI so a 100% point is not clipped by the frame.
        top = max(5.0, min(103.0, max(100 * r.ci_high for r in rows) * 1.1))
        # sc and soft-reasoning write several times CoT's tokens: on a linear axis every
        # single-chain method would crowd into one corner
        log_x = lo > 0 and hi / lo > LOG_X_SPREAD
        for i, r in enumerate(rows):
            y = 100 * r.accuracy
            yerr = [[y - 100 * r.ci_low], [100 * r.ci_high - y]]
            name = _plot_label(r.method)
            # the colour cycle has ten colours: past them a new marker keeps the legend unambiguous
            marker = MARKERS[i // 10 % len(MARKERS)]
            bar = ax.errorbar([r.mean_tokens], [y], yerr=yerr, fmt=marker, capsize=4, label=name)
            if legend:
                continue
            color = bar.lines[0].get_color()
            # a point in the right half is labelled to its left and one in the upper half below
            # it, so a long method name (a line per option) stays inside the axes
            right = hi > lo and r.mean_tokens > (math.sqrt(lo * hi) if log_x else (lo + hi) / 2)
            upper = y > top / 2
            labels.append(ax.annotate(
                name, (r.mean_tokens, y), textcoords="offset points",
                xytext=(-6 if right else 6, -4 if upper else 4), ha="right" if right else "left",
                va="top" if upper else "bottom", fontsize=9, color=color,
                # a label moved clear of another (_separate) stays tied to its point by this line
                arrowprops={"arrowstyle": "-", "color": color, "lw": 0.6, "shrinkA": 0, "shrinkB": 3}))
        if legend:
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=3, fontsize=8, frameon=False)
        ax.set_ylim(bottom=0, top=top)
        if log_x:
            from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

            ax.set_xscale("log")
            # ticks at 1, 2 and 5 of each decade, written as plain numbers (not 10^2)
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("mean generated tokens per problem (log scale)")
    else:
        ax.text(0.5, 0.5, "no results yet", ha="center", va="center", transform=ax.transAxes)
    if not ax.get_xlabel():
        ax.set_xlabel("mean generated tokens per problem")
    ax.set_ylabel("accuracy (%), 95% Wilson CI")
    # Wrapped: a bench title (slice, model, settings) is wider than the axes, and tight_layout
    # does not shrink a title, so one line would run off both edges of the image.
    ax.set_title(textwrap.fill(title or "Evaluation report", 70), fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    _separate(labels, fig)
    return fig


def _separate(labels: list[Any], fig: Any, tries: int = 12) -> None:
    """Move each label that overlaps one placed before it away from its point's half (down
    below a point in the upper half, up above one in the lower half) until it is clear: methods
    of similar length and accuracy otherwise print their names over each other."""
    from matplotlib.text import Text

    renderer = fig.canvas.get_renderer()
    placed = []
    for label in labels:
        step = 1 if label.get_va() == "bottom" else -1
        for _ in range(tries):
            box = Text.get_window_extent(label, renderer)  # the text alone, not its line
            if not any(box.overlaps(other) for other in placed):
                break
            x, y = label.xyann
            label.xyann = (x, y + step * (box.height * 72 / fig.dpi + 2))
        placed.append(Text.get_window_extent(label, renderer))


def _render_png(rows: list[MethodRow], title: str) -> bytes:
    fig = _figure(rows, title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _methods_in_command(command: str) -> list[str] | None:
    """The --methods of a recorded bench command line (how reports written before the per-run
    record say which methods a command ran); None where the line does not parse."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    if "bench" not in words:
        return None
    value = "cot"  # bench's default
    for i, word in enumerate(words):
        if word == "--methods" and i + 1 < len(words):
            value = words[i + 1]
        elif word.startswith("--methods="):
            value = word.partition("=")[2]
    return [m.strip() for m in value.split(",") if m.strip()]


def _recorded_runs(meta: dict[str, Any]) -> list[dict[str, Any]]:
    runs = meta.get("runs")
    if isinstance(runs, list):
        return [r for r in runs if isinstance(r, dict)]
    if meta.get("command") or meta.get("dataset"):  # a report written before runs were kept
        command = meta.get("command")
        return [{"command": command, "dataset": meta.get("dataset"),
                 "methods": _methods_in_command(command) if isinstance(command, str) else None}]
    return []


def _write(out: Path, results: Sequence[dict[str, Any]], title: str,
           runs: list[dict[str, Any]]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    results = _dedupe(_check_record(rec, f"result {i}") for i, rec in enumerate(results))
    rows = summarize(results)
    md_path, png_path = out / "report.md", out / "report.png"
    write_bytes_atomic(png_path, _render_png(rows, title))
    write_bytes_atomic(md_path, _render_markdown(rows, results, title, runs).encode("utf-8"))
    return md_path, png_path


def write_report(
    out_dir: str | os.PathLike[str],
    results: Sequence[dict[str, Any]],
    title: str = "",
    command: str | None = None,
    *,
    dataset: str | None = None,
    methods: Sequence[str] | None = None,
) -> tuple[Path, Path]:
    """Write ``report.md`` (table + command + dataset) and ``report.png`` (accuracy vs tokens).

    ``dataset`` defaults to the distinct ``dataset`` values found in the records, if any.
    With ``methods`` (the ones this command ran), the commands the existing report.md recorded
    for the other methods that still have rows are kept beside it: a folder filled by several
    bench runs says how each method's rows were made, not only what the last run was.
    Returns (markdown path, png path).
    """
    out = Path(out_dir)
    if dataset is None:
        names = list(dict.fromkeys(str(r["dataset"]) for r in results if r.get("dataset")))
        dataset = ", ".join(names) or None
    runs: list[dict[str, Any]] = []
    if methods is not None:
        ran, present = set(methods), {str(r["method"]) for r in results}
        for run in _recorded_runs(_read_meta(out / "report.md")):
            left = [m for m in run.get("methods") or [] if m not in ran and m in present]
            if left:
                runs.append({**run, "methods": left})
    if command or dataset or methods is not None:
        runs.append({"command": command, "dataset": dataset,
                     "methods": list(methods) if methods is not None else None})
    return _write(out, results, title, runs)


def _read_meta(md_path: Path) -> dict[str, Any]:
    """Title and runs a previous write_report stored in report.md; {} if none."""
    try:
        first = md_path.read_text(encoding="utf-8").split("\n", 1)[0]
    except (OSError, UnicodeDecodeError):
        return {}
    if not (first.startswith(_META_PREFIX) and first.endswith(_META_SUFFIX)):
        return {}
    try:
        meta = json.loads(first[len(_META_PREFIX) : -len(_META_SUFFIX)])
    except json.JSONDecodeError:
        return {}
    return meta if isinstance(meta, dict) else {}


def rebuild_report(
    out_dir: str | os.PathLike[str],
    title: str | None = None,
    command: str | None = None,
    dataset: str | None = None,
) -> tuple[Path, Path]:
    """Rewrite report.md / report.png from results.jsonl, keeping the title and the commands
    the existing report recorded unless new ones are given (then the one given stands alone)."""
    out = Path(out_dir)
    meta = _read_meta(out / "report.md")
    runs = _recorded_runs(meta)
    if command is not None or dataset is not None:
        one = runs[-1] if len(runs) == 1 else {}
        runs = [{"command": command if command is not None else one.get("command"),
                 "dataset": dataset if dataset is not None else one.get("dataset"), "methods": None}]
    return _write(out, read_results(out / RESULTS_NAME),
                  title if title is not None else str(meta.get("title") or ""), runs)


def main(argv: list[str] | None = None) -> int:
    """``python -m latentlocal.eval.report DIR``: rebuild DIR/report.{md,png} from DIR/results.jsonl."""
    parser = argparse.ArgumentParser(
        prog="python -m latentlocal.eval.report",
        description="Regenerate report.md and report.png from DIR/results.jsonl (no model needed).",
    )
    parser.add_argument("dir", type=Path, help="run directory containing results.jsonl")
    parser.add_argument("--title", default=None, help="report title (default: keep the existing one)")
    parser.add_argument("--command", default=None, help="command line to show (default: keep the existing one)")
    parser.add_argument("--dataset", default=None, help="dataset description (default: keep the existing one)")
    args = parser.parse_args(argv)
    try:
        md, png = rebuild_report(args.dir, args.title, args.command, args.dataset)
    except LatentLocalError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(md)
    print(png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
