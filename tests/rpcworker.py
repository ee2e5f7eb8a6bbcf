"""``latentlocal worker`` subprocesses for the tests (tests/test_rpc.py, the TUI's Models tab)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
READY = "latentlocal worker: llama.cpp RPC"  # its line once the port accepts (cli/worker.py)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


class Worker:
    """``latentlocal worker`` in a subprocess, ready when it prints its serving line.

    Its stderr joins its stdout in one pipe, so llama.cpp's log lines keep their order with the
    server's "Client connection closed" lines.
    """

    def __init__(self, *extra: str, host: str = "127.0.0.1", sigint_ignored: bool = False) -> None:
        """``sigint_ignored``: start it as a shell without job control starts a background job."""
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "latentlocal.cli", "worker", "--host", host, "--port", str(self.port),
             "--threads", "1", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(),
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None)
        self.lines: list[str] = []
        for line in self.proc.stdout:  # blocks until the line (or EOF when the worker fails)
            self.lines.append(line)
            if READY in line:
                break
        else:
            raise RuntimeError(f"worker did not start: {''.join(self.lines)}")
        # keep draining its output so llama.cpp's per-client lines never fill the pipe
        self.changed = threading.Condition()
        self.drain = threading.Thread(target=self._drain, daemon=True)
        self.drain.start()

    def _drain(self) -> None:
        for line in self.proc.stdout:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()

    def wait_for(self, text: str, count: int, timeout: float = 10.0) -> None:
        """Until the worker has printed ``text`` ``count`` times."""
        with self.changed:
            assert self.changed.wait_for(lambda: sum(text in x for x in self.lines) >= count, timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
