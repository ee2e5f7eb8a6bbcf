"""llama.cpp RPC workers: endpoints, the reachability probe, device registration, and the guard
that turns ggml-rpc's abort on a broken connection into a clear message.

ggml-rpc (vendor/llama.cpp/ggml/src/ggml-rpc/ggml-rpc.cpp in llama-cpp-python 0.3.36) has no error
path back to the caller: a worker that cannot be reached aborts the process
(``rpc_dispatcher::start``, ggml-rpc.cpp:547 "Failed to connect", :550 "RPC handshake failed"),
and so does a connection that breaks mid-run (``RPC_STATUS_ASSERT`` in ``rpc_dispatcher::work``,
ggml-rpc.cpp:35 and :566-569). So every endpoint is probed here first (a plain TCP connect and
the protocol's HELLO, with a timeout) and refused with a ``LatentLocalError`` naming it; and while
workers are in use, ggml's abort callback (ggml.c:253-272, called before ``abort()``) prints which
worker went away and ends the process with exit code 2 instead of a raw abort and gdb backtrace.

A machine that vanishes (powered off, off the network) closes nothing, and ggml-rpc's transport
sets no socket timeout (transport.cpp:692-721): its ``recv`` would wait for ever. So the
connections to the workers get TCP keepalive and a user timeout (:func:`keep_alive_to`, and
:func:`keep_alive_on` for a worker's clients): after ``LATENTLOCAL_RPC_TIMEOUT`` seconds (30) of
silence from the other machine's kernel the ``recv`` fails, and the abort path above reports it.
A busy worker is not silent: its kernel answers the probes however long a graph takes.
"""

from __future__ import annotations

import collections
import math
import os
import socket
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from latentlocal.errors import LatentLocalError

# llama_libs (which loads llama.cpp) is imported where it is used: EngineSettings parses endpoints
# with this module, and the TUI builds settings before it loads any library.

DEFAULT_PORT = 50052  # llama.cpp's rpc-server default
# RPC_PROTO_{MAJOR,MINOR,PATCH}_VERSION in ggml-rpc.h of the pinned llama.cpp; tests/test_rpc.py
# checks it against a worker of this build
PROTOCOL = (7, 0, 0)
_HELLO = 14  # RPC_CMD_HELLO, fixed across versions (static_assert at ggml-rpc.cpp:84)
_CAPS = 24  # RPC_CONN_CAPS_SIZE (transport.h:11): hello request = caps; response = 4 bytes + caps
PROBE_TIMEOUT_S = 5.0
EXIT_WORKER_LOST = 2  # the CLI's exit status for every clear error
TIMEOUT_ENV = "LATENTLOCAL_RPC_TIMEOUT"
DEFAULT_TIMEOUT_S = 30.0


def parse_endpoints(text: str | Sequence[str]) -> tuple[str, ...]:
    """``HOST:PORT[,HOST:PORT...]`` (or a list of them) as endpoints, checked before anything connects."""
    items = text.split(",") if isinstance(text, str) else list(text)
    endpoints: list[str] = []
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise LatentLocalError(
                f"RPC worker '{item}' is not HOST:PORT (e.g. 192.168.1.20:{DEFAULT_PORT}); "
                "separate several with commas"
            )
        if ":" in host or host.startswith("["):
            # llama.cpp's transport connects with AF_INET and gethostbyname (transport.cpp:742-762)
            raise LatentLocalError(
                f"RPC worker '{item}': llama.cpp's RPC transport speaks IPv4 only; give an IPv4 "
                "address or a host name"
            )
        endpoint = f"{host}:{int(port)}"
        if endpoint in endpoints:
            raise LatentLocalError(f"RPC worker {endpoint} is given twice; name each worker once")
        endpoints.append(endpoint)
    return tuple(endpoints)


def probe(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> tuple[int, int, int]:
    """Connect to a worker and exchange llama.cpp's RPC HELLO; its protocol version, or a clear error.

    The worker serves one client at a time (``ggml_backend_rpc_start_server``'s accept loop), so a
    worker busy with another client accepts the connection but answers only when that one leaves.
    """
    host, _, port = endpoint.rpartition(":")
    start = f"start one there with: latentlocal worker --host {host} --port {port}"
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except socket.gaierror as exc:
        raise LatentLocalError(f"RPC worker {endpoint}: cannot resolve '{host}' ({exc.strerror})") from exc
    except TimeoutError as exc:
        raise LatentLocalError(
            f"no RPC worker answers at {endpoint} (no connection within {timeout:g} s: the host is down "
            f"or a firewall drops the port); {start}") from exc
    except OSError as exc:
        raise LatentLocalError(
            f"no RPC worker answers at {endpoint} ({exc.strerror or exc}); {start}") from exc
    with sock:
        try:
            sock.sendall(struct.pack("<BQ", _HELLO, _CAPS) + bytes(_CAPS))
            head = _recv_exactly(sock, 8)
            (size,) = struct.unpack("<Q", head)
            if size != 4 + _CAPS:
                raise LatentLocalError(
                    f"the RPC worker at {endpoint} answered the HELLO with {size} bytes, not {4 + _CAPS}: "
                    "it runs another llama.cpp RPC protocol; install the same latentlocal "
                    "(llama-cpp-python 0.3.36) on both machines")
            # read all of it: closing with unread bytes resets the connection, which the worker
            # logs as "recv failed"
            major, minor, patch = _recv_exactly(sock, size)[:3]
        except TimeoutError as exc:
            raise LatentLocalError(
                f"the RPC worker at {endpoint} accepted the connection but did not answer llama.cpp's "
                f"HELLO within {timeout:g} s: it is serving another client (a worker serves one at a "
                "time), or it is not a llama.cpp RPC worker") from exc
        except ConnectionError as exc:
            raise LatentLocalError(
                f"the RPC worker at {endpoint} closed the connection during llama.cpp's HELLO: it "
                "refused this client's protocol version (its own log says which: llama.cpp's 'HELLO "
                "request size mismatch'); install the same latentlocal (llama-cpp-python 0.3.36) on "
                "both machines") from exc
    # the client's own check (negotiate_hello, ggml-rpc.cpp:356): same major, minor not newer
    if major != PROTOCOL[0] or minor > PROTOCOL[1]:
        raise LatentLocalError(
            f"RPC server version mismatch: {major}.{minor}.{patch} (llama.cpp's version check): the "
            f"worker at {endpoint} speaks RPC protocol {major}.{minor}.{patch}, this build "
            f"{'.'.join(map(str, PROTOCOL))}; install the same latentlocal (llama-cpp-python 0.3.36) "
            "on both machines")
    return major, minor, patch


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def worker_devices(endpoints: Sequence[str]) -> list[int]:
    """Probe each worker, register it with ggml-rpc and return its devices (ggml_backend_dev_t).

    As llama.cpp's ``--rpc`` does (common/arg.cpp:1166-1185, ``ggml_backend_rpc_add_server``), but
    the devices are handed to the model in ``llama_model_params.devices`` instead of the global
    registry, so a local model opened later in the same process does not pick them up.
    """
    from latentlocal.llama_libs import ggml_base, ggml_rpc

    for ep in endpoints:
        # A worker this process already holds a model on is connected already: ggml-rpc shares one
        # connection per endpoint (get_dispatcher, ggml-rpc.cpp:583-600), while a probe would be a
        # second client that the worker leaves waiting.
        if not _in_use[ep]:
            probe(ep)
    rpc, base = ggml_rpc(), ggml_base()
    devices: list[int] = []
    for ep in endpoints:
        reg = rpc.ggml_backend_rpc_add_server(ep.encode())
        n = base.ggml_backend_reg_dev_count(reg) if reg else 0
        if not n:
            raise LatentLocalError(f"the RPC worker at {ep} reports no devices")
        devices += [base.ggml_backend_reg_dev_get(reg, i) for i in range(n)]
    _in_use.update(endpoints)
    return devices


def release(endpoints: Sequence[str]) -> None:
    """A model on these workers was freed (the counterpart of ``worker_devices``)."""
    _in_use.subtract(endpoints)


_in_use: collections.Counter[str] = collections.Counter()


def local_gpus() -> list[int]:
    """This machine's GPU devices, the ones llama.cpp offloads to when given no device list
    (src/llama.cpp:218-263: discrete GPUs, integrated ones only when there is no discrete one)."""
    from latentlocal.llama_libs import DEVICE_GPU, DEVICE_IGPU, ggml_base, ggml_registry

    reg, base = ggml_registry(), ggml_base()
    devs = [reg.ggml_backend_dev_get(i) for i in range(reg.ggml_backend_dev_count())]
    gpus = [d for d in devs if base.ggml_backend_dev_type(d) == DEVICE_GPU]
    return gpus or [d for d in devs if base.ggml_backend_dev_type(d) == DEVICE_IGPU]


# ---------------------------------------------------------------------------------------------
# a vanished machine: keepalive on the connections ggml-rpc opened
# ---------------------------------------------------------------------------------------------


def silence_timeout() -> float:
    """Seconds of silence from a worker's (or a client's) machine before its connection fails:
    ``LATENTLOCAL_RPC_TIMEOUT``, else 30."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 2):
        raise LatentLocalError(
            f"{TIMEOUT_ENV}={raw!r} is not a number of seconds of at least 2: set it to how long a "
            f"silent machine may take before the run ends (default {DEFAULT_TIMEOUT_S:g}), or unset it")
    return value


def _tcp_connections() -> Iterator[socket.socket]:
    """This process's connected IPv4 TCP sockets, each as a duplicate that is closed after use."""
    try:
        names = os.listdir("/dev/fd")  # Linux (/proc/self/fd) and macOS alike
    except OSError:
        return
    for name in names:
        try:
            fd = int(name)
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            dup = os.dup(fd)
        except (ValueError, OSError):
            continue
        try:
            sock = socket.socket(fileno=dup)  # family and type read from the descriptor
        except OSError:
            os.close(dup)
            continue
        with sock:
            if sock.family != socket.AF_INET or sock.type != socket.SOCK_STREAM:
                continue
            try:
                sock.getpeername()
            except OSError:  # a listening or unconnected socket
                continue
            yield sock


def _keep_alive(sock: socket.socket, timeout: float) -> bool:
    """Whether the options took (a connection closing meanwhile refuses them: nothing to guard)."""
    # idle, then 3 probes: about 5/6 of the timeout; TCP_USER_TIMEOUT (Linux) caps the wait for
    # an acknowledgement, probes included, at the timeout
    idle = getattr(socket, "TCP_KEEPIDLE", getattr(socket, "TCP_KEEPALIVE", None))  # macOS: KEEPALIVE
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for opt, value in ((idle, max(1, int(timeout / 3))),
                           (getattr(socket, "TCP_KEEPINTVL", None), max(1, int(timeout / 6))),
                           (getattr(socket, "TCP_KEEPCNT", None), 3),
                           (getattr(socket, "TCP_USER_TIMEOUT", None), int(timeout * 1000))):
            if opt is not None:
                sock.setsockopt(socket.IPPROTO_TCP, opt, value)
    except OSError:
        return False
    return True


def keep_alive_to(endpoints: Sequence[str], timeout: float | None = None) -> int:
    """Keepalive on this process's connections to these workers; how many connections got it."""
    timeout = silence_timeout() if timeout is None else timeout
    peers: set[tuple[str, int]] = set()
    for ep in endpoints:
        host, _, port = ep.rpartition(":")
        try:
            peers.add((socket.gethostbyname(host), int(port)))
        except OSError:
            continue
    done = 0
    for sock in _tcp_connections():
        if sock.getpeername()[:2] in peers and _keep_alive(sock, timeout):
            done += 1
    return done


def keep_alive_on(port: int, timeout: float | None = None) -> int:
    """Keepalive on the connections clients made to this process's ``port`` (a worker's)."""
    timeout = silence_timeout() if timeout is None else timeout
    done = 0
    for sock in _tcp_connections():
        if sock.getsockname()[1] == port and _keep_alive(sock, timeout):
            done += 1
    return done


# ---------------------------------------------------------------------------------------------
# the abort guard
# ---------------------------------------------------------------------------------------------

_guard_lock = threading.Lock()
_guarded: list[str] = []
_fatal_hooks: list[Callable[[], None]] = []
_recent_log: Callable[[], list[str]] = list
_callback = None  # the ctypes callback ggml holds: kept alive for the process


def add_fatal_hook(hook: Callable[[], None]) -> None:
    """Run ``hook`` before the process ends on a lost worker (e.g. the TUI restores the terminal)."""
    _fatal_hooks.append(hook)


def remove_fatal_hook(hook: Callable[[], None]) -> None:
    if hook in _fatal_hooks:
        _fatal_hooks.remove(hook)


def guard_aborts(endpoints: Sequence[str], recent_log: Callable[[], list[str]] | None = None) -> None:
    """From now on a ggml abort names these workers and exits with status 2 (no core, no gdb)."""
    global _callback, _recent_log
    with _guard_lock:
        for ep in endpoints:
            if ep not in _guarded:
                _guarded.append(ep)
        if recent_log is not None:
            _recent_log = recent_log
        if _callback is None:
            from latentlocal.llama_libs import ABORT_CALLBACK, ggml_base

            _callback = ABORT_CALLBACK(_on_abort)
            ggml_base().ggml_set_abort_callback(_callback)


def _reachable(ep: str) -> bool:
    host, _, port = ep.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except OSError:
        return False


def abort_message(reason: str, endpoints: Sequence[str], log: Sequence[str]) -> str:
    """What the user reads when ggml aborts while workers are in use."""
    gone = [ep for ep in endpoints if not _reachable(ep)]
    for _ in range(5):  # a killed worker's connection can close a moment before its port does
        if gone:
            break
        time.sleep(0.1)
        gone = [ep for ep in endpoints if not _reachable(ep)]
    said = "; ".join(line.strip() for line in log if line.strip())
    llama = reason.strip() + (f" ({said})" if said else "")
    if gone:
        who = f"the RPC worker{'s' if len(gone) > 1 else ''} at {', '.join(gone)} went away"
    else:
        who = f"a connection to the RPC workers ({', '.join(endpoints)}) broke"
    return (f"error: {who}; llama.cpp's RPC backend cannot continue without it and ended this run. "
            f"llama.cpp said: {llama}. Restart the worker and run again (bench resumes where it stopped)\n")


def _on_abort(message: bytes | None) -> None:
    # Runs on whichever thread ggml aborts in (often ggml-rpc's dispatcher thread) and must not
    # return: ggml calls abort() after it. Everything here is best effort before os._exit.
    try:
        for hook in list(_fatal_hooks):
            try:
                hook()
            except Exception:
                pass
        reason = (message or b"").decode("utf-8", "replace")
        # ggml prefixes file:line; the user needs the sentence
        reason = reason.split(": ", 1)[1] if reason.count(": ") and "ggml-rpc" in reason else reason
        text = abort_message(reason, list(_guarded), _recent_log())
        try:
            sys.stdout.flush()
        except Exception:
            pass
        os.write(2, text.encode("utf-8", "replace"))
    finally:
        os._exit(EXIT_WORKER_LOST)

