"""``latentlocal tui`` (also no command at all): start the terminal UI, the one module that imports it."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from latentlocal import rpc
from latentlocal.errors import LatentLocalError


def add_tui_parser(sub: Any) -> None:
    sub.add_parser("tui", help="start the terminal UI (also the default with no command)").set_defaults(
        handler=cmd_tui)


def cmd_tui(args: argparse.Namespace) -> int:
    try:
        from tui.app import main as tui_main
    except ImportError as exc:
        raise LatentLocalError(f"the terminal UI is not installed ({exc}); reinstall with ./install.sh") from exc
    import sys

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        # Textual needs a terminal on both: without one it died in termios with a traceback
        raise LatentLocalError("the terminal UI needs a terminal, and this input or output is not "
                               "one (a pipe, a file, a job without -t); use a command instead, such "
                               "as `latentlocal run \"QUESTION\"` (see latentlocal --help)")
    restore = _terminal_restorer()
    if restore is not None:
        rpc.add_fatal_hook(restore)
    try:
        return tui_main()
    finally:
        if restore is not None:
            rpc.remove_fatal_hook(restore)


def _terminal_restorer() -> Callable[[], None] | None:
    """What gives the shell its terminal back if a lost RPC worker ends the process mid-screen
    (latentlocal.rpc's abort guard exits without Textual's own cleanup)."""
    import os
    import sys

    try:
        import termios
    except ImportError:
        return None
    try:
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
    except (termios.error, OSError, ValueError, AttributeError):
        return None

    def restore() -> None:
        # leave the alternate screen; show the cursor; stop mouse reports and bracketed paste
        os.write(sys.__stdout__.fileno(), b"\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?1015l"
                 b"\x1b[?2004l\x1b[?25h\x1b[?1049l\r\n")
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    return restore
