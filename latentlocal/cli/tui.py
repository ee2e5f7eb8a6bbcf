"""``latentlocal tui`` (also no command at all): start the terminal UI, the one module that imports it."""

from __future__ import annotations

import argparse
from typing import Any

from latentlocal.errors import LatentLocalError


def add_tui_parser(sub: Any) -> None:
    sub.add_parser("tui", help="start the terminal UI (also the default with no command)").set_defaults(
        handler=cmd_tui)


def cmd_tui(args: argparse.Namespace) -> int:
    try:
        from tui.app import main as tui_main
    except ImportError as exc:
        raise LatentLocalError(f"the terminal UI is not installed ({exc}); reinstall with ./install.sh") from exc
    return tui_main()
