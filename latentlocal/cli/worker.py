"""The ``latentlocal worker`` subcommand: llama.cpp's RPC server from this install's own build.

Another machine's ``--rpc HOST:PORT`` puts model layers here. The server loop
(``ggml_backend_rpc_start_server``, ggml-rpc.cpp:2087-2163) never returns while it serves, and a
ctypes call cannot be interrupted, so it runs in a daemon thread and the main thread waits for
Ctrl-C (SIGINT is delivered to the main thread), then ends the process.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from latentlocal.cli.common import check_bindable
from latentlocal.errors import LatentLocalError
from latentlocal.rpc import DEFAULT_PORT, PROTOCOL, keep_alive_on, silence_timeout


def add_worker_parser(sub: Any) -> None:
    p = sub.add_parser("worker", help="serve this machine's CPU (or GPUs) to another machine's --rpc "
                       "(llama.cpp's RPC server)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; the LAN address or "
                        "0.0.0.0 to serve other machines; the protocol has no authentication)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores, at most 8)")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="keep the tensors clients send in DIR, so the next load of the same model "
                        "skips sending them (llama.cpp's rpc-server --cache)")
    p.set_defaults(handler=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    from latentlocal.engine import default_threads
    from latentlocal.llama_libs import DEVICE_CPU, ggml_base, ggml_registry, ggml_rpc
    from latentlocal.rpc import local_gpus

    if not 0 < args.port < 65536:
        raise LatentLocalError(f"--port must lie in 1..65535, not {args.port}")
    if args.threads is not None and args.threads < 1:
        raise LatentLocalError(f"--threads must be at least 1, not {args.threads}")
    threads = args.threads or default_threads()
    timeout = silence_timeout()
    cache = None
    if args.cache:
        cache = Path(args.cache).expanduser()
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LatentLocalError(f"--cache {args.cache}: cannot create the folder ({exc.strerror})") from exc
    check_bindable(args.host, args.port)
    rpc, base = ggml_rpc(), ggml_base()
    # rpc-server's choice (tools/rpc/rpc-server.cpp:182-199): the accelerators, else the CPU
    devices = local_gpus() or [ggml_registry().ggml_backend_dev_by_type(DEVICE_CPU)]
    names = ", ".join(base.ggml_backend_dev_description(d).decode("utf-8", "replace") for d in devices)
    endpoint = f"{args.host}:{args.port}"
    if args.host != "127.0.0.1":
        print(f"warning: listening on {args.host}: llama.cpp's RPC protocol has no authentication or "
              "encryption: anyone who can reach this port can use this machine's memory and CPU. "
              "Bind an address of a private network you trust, never one the internet reaches",
              file=sys.stderr, flush=True)
    arr = (ctypes.c_void_p * len(devices))(*devices)
    failed = threading.Event()
    # A process started in the background by a shell without job control (a script's `&`, some
    # CI runners) inherits SIGINT ignored, and Python then leaves it ignored: Ctrl-C or kill -INT
    # would never stop the worker. SIGTERM (kill, systemd) stops it the same way.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    def serve() -> None:
        # returns only when the socket cannot be opened or accept fails (ggml-rpc.cpp:2138-2148)
        rpc.ggml_backend_rpc_start_server(endpoint.encode(), str(cache).encode() if cache else None,
                                          threads, len(devices), arr)
        failed.set()

    threading.Thread(target=serve, name="rpc-server", daemon=True).start()
    try:
        _wait_listening(args.host, args.port, failed)
        if not failed.is_set():
            # printed once the port accepts: scripts and tests wait for this line
            print(f"latentlocal worker: llama.cpp RPC {'.'.join(map(str, PROTOCOL))} serving on "
                  f"{endpoint} ({names}, {threads} threads{f', cache {cache}' if cache else ''})",
                  flush=True)
            print(f"  use it from another machine with: --rpc {_reachable_name(args.host)}:{args.port}"
                  "   (Ctrl-C stops)", flush=True)
        # A client whose machine vanishes would hold the worker (it serves one client at a time)
        # for ever: each client's connection gets keepalive within half a second of its accept.
        while not failed.wait(0.5):
            keep_alive_on(args.port, timeout)
    except KeyboardInterrupt:
        print("latentlocal worker: stopped", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # the server thread is inside C and cannot be joined; end without running C++ static
        # destructors under it
        os._exit(0)
    raise LatentLocalError(f"the RPC server on {endpoint} stopped: llama.cpp could not listen or "
                           "accept there (its message is above)")


def _wait_listening(host: str, port: int, failed: threading.Event) -> None:
    """Until the server's socket accepts a connection (it is served and dropped at once)."""
    target = "127.0.0.1" if host in ("0.0.0.0", "") else host
    while not failed.is_set():
        try:
            with socket.create_connection((target, port), timeout=1.0):
                return
        except OSError:
            failed.wait(0.05)


def _reachable_name(host: str) -> str:
    if host not in ("0.0.0.0", ""):
        return host
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "THIS-MACHINE"
