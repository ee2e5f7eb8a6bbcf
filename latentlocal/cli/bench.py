"""``latentlocal bench``: compare methods on a dataset (resumable) and write a report."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from latentlocal.cli.common import add_method_args, add_model_args, open_engine
from latentlocal.errors import LatentLocalError
from latentlocal.datasets import load_problems
from latentlocal.eval.report import RESULTS_NAME, read_results, rebuild_report, write_report
from latentlocal.engine import Engine
from latentlocal.engine_settings import MAX_SEQUENCES
from latentlocal.eval.runner import batch_context, check_resume, parse_method_spec, run_bench
from latentlocal.methods.registry import (
    chain_from_options,
    check_flags_used,
    config_from_options,
    runner_from_options,
)
from latentlocal.methods.settings import record
from latentlocal.progress import ProgressBar


def add_bench_parser(sub: Any) -> None:
    p = sub.add_parser("bench", help="compare methods on a dataset (resumable) and write a report")
    p.add_argument("--methods", default="cot",
                   help="comma-separated NAME[:key=value;...], e.g. cot,sc,sc:temperature=0.4 (default cot)")
    p.add_argument("--data", help="JSONL file with question and answer fields (GSM8K format works)")
    p.add_argument("--limit", type=int, default=None, help="problems to use")
    p.add_argument("--offset", type=int, default=0, help="skip this many problems first")
    p.add_argument("--shuffle-seed", type=int, default=None, help="shuffle the problems with this seed first")
    p.add_argument("--question-field", default="question")
    p.add_argument("--answer-field", default="answer")
    p.add_argument("--id-field", default="id")
    p.add_argument("--out", required=True, help="output folder: results.jsonl, report.md, report.png")
    p.add_argument("--report-only", action="store_true", help="rebuild the report from --out, no model")
    p.add_argument("--title", default=None)
    p.add_argument("--batch", type=int, default=1,
                   help="problems decoded at once, each in its own sequence of one context (cot and "
                        "soft-thinking; default 1: one at a time)")
    add_model_args(p)
    add_method_args(p, with_method=False)
    p.set_defaults(handler=cmd_bench)


def _with_room(engine: Engine, cells: int, batch: int) -> Engine:
    """``engine``, or a context on the same weights large enough for ``cells`` KV cells."""
    if cells <= engine.n_ctx:
        return engine
    print(f"bench: --batch {batch} needs a context of {cells} tokens ({batch} problems of up to "
          f"{cells // batch}); opening it instead of --n-ctx {engine.n_ctx}", file=sys.stderr)
    bigger = engine.sibling(n_ctx=cells)
    engine.close()  # the weights stay: the new context holds them, and frees them when it closes
    return bigger


def cmd_bench(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.report_only:
        md, png = rebuild_report(out, title=args.title)
        print(f"report: {md}  plot: {png}")
        return 0
    if not args.data:
        raise LatentLocalError("bench needs --data FILE (a JSONL of questions and answers)")
    specs = [s for s in args.methods.split(",") if s.strip()]
    if not specs:
        raise LatentLocalError(f"--methods {args.methods!r} names no method; e.g. --methods cot,soft-thinking")
    check_flags_used([s.partition(":")[0].strip() for s in specs], args)
    title = args.title or f"{Path(args.data).name} offset {args.offset} limit {args.limit}"
    command = "latentlocal " + shlex.join(getattr(args, "argv", sys.argv[1:]))
    problems = load_problems(args.data, args.question_field, args.answer_field, args.id_field,
                             limit=args.limit, offset=args.offset, shuffle_seed=args.shuffle_seed)
    if not problems:  # --limit 0
        raise LatentLocalError("--limit 0 selects no problems; pass a positive --limit, or none for all")
    batch = args.batch
    if not 1 <= batch <= MAX_SEQUENCES:
        raise LatentLocalError(f"--batch must be between 1 and {MAX_SEQUENCES}, not {batch}")
    methods = []
    chains = {}
    settings = {}
    for spec in specs:
        label, name, options = parse_method_spec(spec, args)
        methods.append((label, runner_from_options(name, options)))  # checked before the model loads
        settings[label] = record(config_from_options(name, options))
        if batch > 1:
            try:
                chains[label] = chain_from_options(name, options)
            except LatentLocalError as exc:
                raise LatentLocalError(
                    f"--batch {batch}: {exc}. Run it without --batch (the same --out keeps the "
                    "problems the batched methods finished)") from None
    if len({m[0] for m in methods}) != len(methods):
        raise LatentLocalError("the same method spec is listed twice in --methods")
    check_resume(out / RESULTS_NAME, settings, problems)
    try:  # before the model loads (and after every refusal), so a bad --out fails at once
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LatentLocalError(f"--out {out}: cannot make the folder ({exc.strerror or exc}); pick "
                               "another --out") from None
    if batch > 1:
        args.parallel = max(args.parallel, batch)  # a sequence for every problem in flight
    engine = open_engine(args)
    if batch > 1:
        engine = _with_room(engine, batch_context(engine, problems, chains, batch), batch)
    bar = ProgressBar(len(problems) * len(methods), unit="runs")
    try:
        results_path = run_bench(engine, problems, methods, out, progress=bar, batch=batch, chains=chains)
    finally:
        bar.close()
    results = read_results(results_path)
    dataset = f"{args.data} (offset {args.offset}, limit {args.limit}, shuffle {args.shuffle_seed})"
    md, png = write_report(out, results, title=title, command=command, dataset=dataset,
                           methods=[label for label, _ in methods])
    print(md.read_text())
    print(f"report: {md}  plot: {png}")
    return 0
