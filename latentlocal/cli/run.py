"""``latentlocal run PROMPT``: answer one prompt with a method, as text or one JSON object per event."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from latentlocal.cli.common import add_method_args, add_model_args, open_engine
from latentlocal.errors import LatentLocalError


def add_run_parser(sub: Any) -> None:
    run = sub.add_parser("run", help="answer one prompt with a method")
    run.add_argument("prompt", help="the question or task")
    run.add_argument("--json", action="store_true", help="one JSON object per event, one per line")
    add_model_args(run)
    add_method_args(run)
    run.set_defaults(handler=cmd_run)


def _print_human(events: Iterator, out: TextIO | None = None) -> None:
    from latentlocal import events as ev

    out = out or sys.stdout
    last_phase = None
    for e in events:
        if isinstance(e, ev.Token):
            if e.seq != 0:
                continue
            if e.phase != last_phase and e.phase == "answer" and last_phase == "think":
                out.write("\n--- answer ---\n")
            last_phase = e.phase
            out.write(e.text)
            out.flush()
        elif isinstance(e, ev.ColdStop):
            out.write(f"\n[cold stop after {e.patience} low-entropy steps]\n")
        elif isinstance(e, ev.SequenceDone) and e.seq != 0:
            print(f"\n[sample {e.seq}: {e.answer} ({e.generated_tokens} tokens)]", file=out)
        elif isinstance(e, ev.Round):
            best = max((c.reward for c in e.candidates), default=float("nan"))
            print(f"[round {e.index}: answers {[c.answer for c in e.candidates]} "
                  f"best reward {best:.3f}, verifier {e.verifier_answer}]", file=out)
        elif isinstance(e, ev.Notice):
            print(f"\nwarning: {e.message}", file=sys.stderr)
        elif isinstance(e, ev.Summary):
            out.write("\n")
            print(f"Answer: {e.answer}", file=out)
            out.flush()
            print(f"[{e.method}: {e.generated_tokens} tokens in {e.elapsed_s:.2f}s "
                  f"({e.tokens_per_s:.1f} tok/s), finish: {e.finish_reason}]", file=sys.stderr)


def _print_json(events: Iterator, out: TextIO | None = None) -> None:
    from latentlocal.events import to_dict

    out = out or sys.stdout
    for e in events:
        out.write(json.dumps(to_dict(e), ensure_ascii=False) + "\n")
        out.flush()


def cmd_run(args: argparse.Namespace) -> int:
    from latentlocal.methods.registry import check_flags_used, make_runner

    if not args.prompt.strip():  # an unset shell variable: nothing to answer
        raise LatentLocalError("the prompt is empty; pass the question as the argument, e.g. "
                               "latentlocal run \"What is 12 * 7?\"")
    check_flags_used([args.method], args)
    runner = make_runner(args.method, args)  # validate options before loading the model
    engine = open_engine(args)
    events = runner(engine, args.prompt, None)
    (_print_json if args.json else _print_human)(events)
    return 0
