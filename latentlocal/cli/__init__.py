"""The ``latentlocal`` command: one module per subcommand (run, models, tui, seal, bench, serve, worker)."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from latentlocal.errors import LatentLocalError


def _warning_line(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    return f"warning: {message}\n"


def build_parser() -> argparse.ArgumentParser:
    # The subcommands load llama.cpp's bindings; imported here, within main's error handling, so
    # an install that cannot run on this machine (latentlocal.llama_libs) is a message, not a traceback.
    from latentlocal.cli.bench import add_bench_parser
    from latentlocal.cli.models import add_models_parser
    from latentlocal.cli.run import add_run_parser
    from latentlocal.cli.seal import add_seal_parser
    from latentlocal.cli.serve import add_serve_parser
    from latentlocal.cli.tui import add_tui_parser
    from latentlocal.cli.worker import add_worker_parser

    parser = argparse.ArgumentParser(
        prog="latentlocal",
        description="Latent-space reasoning for local GGUF models (Soft Thinking, SEAL, Soft Reasoning).",
    )
    sub = parser.add_subparsers(dest="command")
    add_run_parser(sub)
    add_models_parser(sub)
    add_tui_parser(sub)
    add_seal_parser(sub)
    add_bench_parser(sub)
    add_serve_parser(sub)
    add_worker_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    warnings.formatwarning = _warning_line
    try:
        args = build_parser().parse_args(argv)
        args.argv = list(argv) if argv is not None else sys.argv[1:]
        if not hasattr(args, "handler"):  # no command: the terminal UI
            from latentlocal.cli.tui import cmd_tui
            args.handler = cmd_tui
        return args.handler(args)
    except LatentLocalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:
        # a file the run had to write or read (a full disk, a read-only or missing folder): one
        # line naming it, not a traceback; what was written before stays (writes are atomic)
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}; check that path and its free space", file=sys.stderr)
        return 2

