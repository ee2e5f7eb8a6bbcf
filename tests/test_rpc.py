"""Layers on llama.cpp RPC workers: two ``latentlocal worker`` subprocesses on 127.0.0.1.

Every numeric check compares a run over RPC with a local run of the same build in this process.
The workers compute with the same CPU kernels as this process, and ggml's CPU matmul gives each
output row to one thread, so the thread count does not change a result: greedy tokens are
compared exactly, logits and states to the local parity tests' tolerances.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from latentlocal.llama_libs import rpc_library_path

if rpc_library_path() is None:
    pytest.skip("this llama-cpp-python build has no RPC backend (libggml-rpc); ./install.sh builds it "
                "with GGML_RPC=ON", allow_module_level=True)

from latentlocal import rpc  # noqa: E402
from latentlocal.engine import Engine  # noqa: E402
from latentlocal.engine_settings import EngineSettings  # noqa: E402
from latentlocal.errors import LatentLocalError  # noqa: E402
from latentlocal.methods.cot import prompt_tokens  # noqa: E402
from latentlocal.methods.seal.extract import _capture_rows, _Seq  # noqa: E402
from onestep import token_and_row_logits  # noqa: E402
from rpcworker import Worker, env, free_port  # noqa: E402

QUESTION = "Tom has 3 apples and buys 5 more. How many apples does he have?"


@pytest.fixture(scope="module")
def workers():
    ws = [Worker(), Worker()]
    yield ws
    for w in ws:
        w.kill()


@pytest.fixture(scope="module")
def local(smol_path):
    e = Engine.open(EngineSettings(model=smol_path, n_ctx=1024, n_seq_max=2, n_threads=1))
    yield e
    e.close()


@pytest.fixture(scope="module")
def split(workers, smol_path):
    """The bundled model's layers split across both workers."""
    e = Engine.open(EngineSettings(model=smol_path, n_ctx=1024, n_seq_max=2, n_threads=1,
                                   rpc=tuple(w.endpoint for w in workers)))
    yield e
    e.close()


def test_the_protocol_constant_is_this_builds(workers):
    # runs before any engine holds the workers (a worker serves one client at a time)
    w = workers[0]
    closed = sum("Client connection closed" in x for x in w.lines)
    assert rpc.probe(w.endpoint) == rpc.PROTOCOL
    # the probe leaves cleanly: no connection reset for the worker to log as an error
    w.wait_for("Client connection closed", closed + 1)
    assert not [x for x in w.lines if "failed" in x]


def _greedy(engine: Engine, n: int = 12) -> tuple[list[int], list[np.ndarray]]:
    toks = prompt_tokens(engine, QUESTION, None)
    engine.clear()
    engine.decode_tokens(toks)
    out, logits = [], []
    for _ in range(n):
        lg = np.array(engine.logits(-1))
        logits.append(lg)
        out.append(int(lg.argmax()))
        engine.decode_tokens([out[-1]])
    return out, logits


def _assert_same_greedy(got: list[int], got_logits: list[np.ndarray], want: list[int],
                        want_logits: list[np.ndarray]) -> None:
    """The same logits (test_engine's parity tolerance) and tokens as the local run, up to the
    first step whose local top-1 margin is narrow: there a correct split may pick the other token
    on some build, and the two runs then continue from different texts. Step 0 (the prompt alone)
    is always compared."""
    for i, (g, w) in enumerate(zip(got_logits, want_logits)):
        assert np.abs(g - w).max() <= 1e-3 * (w.max() - w.min()), f"logits differ at step {i}"
        top2 = np.sort(w)[-2:]
        if top2[1] - top2[0] < 0.5:
            return
        assert got[i] == want[i], f"token {i}"


def test_split_and_single_worker_greedy_tokens_equal_local(local, split, smol_path, workers):
    want, want_logits = _greedy(local)
    assert split.model.n_gpu_layers == split.n_layer + 1  # every layer (and the output) offloaded
    got, got_logits = _greedy(split)
    _assert_same_greedy(got, got_logits, want, want_logits)
    # all layers on the second worker, while the split model holds both: one shared connection
    with Engine.open(EngineSettings(model=smol_path, n_ctx=512, n_seq_max=1, n_threads=1,
                                    rpc=(workers[1].endpoint,))) as one:
        got1, logits1 = _greedy(one)
    _assert_same_greedy(got1, logits1, want, want_logits)


def test_tensor_split_puts_the_layers_where_asked(local, smol_path, workers):
    want, want_logits = _greedy(local, n=4)
    settings = EngineSettings(model=smol_path, n_ctx=512, n_seq_max=1, n_threads=1,
                              rpc=tuple(w.endpoint for w in workers), tensor_split=(1, 3), n_gpu_layers=20)
    with Engine.open(settings) as e:
        assert e.model.n_gpu_layers == 20  # the other 10 blocks stay on this machine's CPU
        got, got_logits = _greedy(e, n=4)
    _assert_same_greedy(got, got_logits, want, want_logits)
    with pytest.raises(LatentLocalError, match="3 shares but there are 2 devices"):
        Engine.open(EngineSettings(model=smol_path, rpc=tuple(w.endpoint for w in workers),
                                   tensor_split=(1, 1, 1)))


def test_embedding_rows_give_the_token_logits_in_several_sequences(split):
    by_token, by_row = token_and_row_logits(split, prompt_tokens(split, QUESTION, None), [28, 1000])
    np.testing.assert_allclose(by_row, by_token, atol=1e-3)  # test_engine's one-step tolerance


@pytest.mark.parametrize("il", [5, 25])  # a block on each worker
def test_a_control_vector_shifts_the_captured_block_by_exactly_the_vector(split, il):
    cap = split.sibling(capture_layers=[il - 1, il, il + 1], n_seq_max=1)
    toks = prompt_tokens(split, QUESTION, None)[:24]

    def run() -> dict[int, np.ndarray]:
        cap.clear()
        cap.decode_tokens(toks, logits="last")
        return {k: cap.captured(k).copy() for k in (il - 1, il, il + 1)}

    base = run()
    v = np.random.default_rng(0).normal(size=split.n_embd).astype(np.float32)
    cap.set_control_vector({il: v}, scale=0.5)
    steered = run()
    cap.close()
    np.testing.assert_array_equal(steered[il - 1], base[il - 1])
    tol = 4 * np.finfo(np.float32).eps * np.abs(base[il]).max()  # as test_engine's control vector test
    np.testing.assert_allclose(steered[il] - base[il], np.broadcast_to(0.5 * v, base[il].shape), atol=tol)
    assert not np.allclose(steered[il + 1], base[il + 1])


def test_seal_extraction_captures_the_local_states(local, split):
    toks = prompt_tokens(local, QUESTION, None) + local.model.tokenize(" He has 8 apples.\n\nWait", False)
    positions = [len(toks) - 9, len(toks) - 3, len(toks) - 1]
    layers = [0, 12, local.n_layer - 1]
    got = {}
    for name, e in (("local", local), ("rpc", split)):
        cap = e.sibling(capture_layers=layers, n_seq_max=1)
        got[name] = _capture_rows(_Seq(cap, []), toks, positions, layers)
        cap.close()
    want = got["local"]
    assert want.shape == (3, 3, local.n_embd) and np.abs(want).max() > 0
    # test_engine's capture tolerance
    np.testing.assert_allclose(got["rpc"], want, atol=2e-3 * np.abs(want).max())


def test_a_worker_that_is_not_there_is_named_within_seconds(smol_path):
    ep = f"127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(LatentLocalError, match=f"no RPC worker answers at {ep}.*latentlocal worker"):
        Engine.open(EngineSettings(model=smol_path, rpc=ep))
    assert time.monotonic() - t0 < rpc.PROBE_TIMEOUT_S


class FakeWorker:
    """A TCP server that answers the RPC HELLO with a given version, or never answers."""

    def __init__(self, version: tuple[int, int, int] | None) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.version = version
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.recv(1 + 8 + 24)
            if self.version is None:
                conn.recv(1)  # until the client gives up
                return
            conn.sendall((28).to_bytes(8, "little") + bytes([*self.version, 0]) + bytes(24))


def test_another_llama_cpp_version_gets_llama_cpps_version_error():
    fake = FakeWorker((6, 1, 0))
    with pytest.raises(LatentLocalError, match=r"RPC server version mismatch: 6\.1\.0.*same latentlocal"):
        rpc.probe(fake.endpoint)


def test_a_worker_that_does_not_answer_the_hello_is_refused_after_the_timeout():
    fake = FakeWorker(None)
    with pytest.raises(LatentLocalError, match="did not answer llama.cpp's HELLO within 0.5 s"):
        rpc.probe(fake.endpoint, timeout=0.5)


@pytest.mark.parametrize("bad, why", [("localhost", "not HOST:PORT"), ("h:0", "not HOST:PORT"),
                                      ("h:1,h:1", "twice"), ("[::1]:5", "IPv4 only")])
def test_bad_endpoints_are_refused_before_connecting(bad, why):
    with pytest.raises(LatentLocalError, match=why):
        EngineSettings(rpc=bad)


def test_killing_the_worker_mid_run_ends_the_run_with_a_clear_error(smol_path):
    w = Worker()
    try:
        run = subprocess.Popen(
            [sys.executable, "-m", "latentlocal.cli", "run", QUESTION, "--json", "--max-tokens", "400",
             "--n-ctx", "1024", "--threads", "1", "--rpc", w.endpoint],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
        for line in run.stdout:  # wait for the first generated token
            if json.loads(line).get("type") == "token":
                break
        run.send_signal(signal.SIGSTOP)  # so the run cannot finish before the worker is gone
        w.kill()
        run.send_signal(signal.SIGCONT)
        t0 = time.monotonic()
        _, err = run.communicate(timeout=30)
        assert time.monotonic() - t0 < 30
    finally:
        w.kill()
        if run.poll() is None:
            run.kill()
    assert run.returncode == 2, err
    assert f"the RPC worker at {w.endpoint} went away" in err
    assert "Remote RPC server crashed" in err  # llama.cpp's own words, passed on
    assert "backtrace" not in err.lower() and "gdb" not in err.lower()


def test_the_worker_warns_off_loopback_and_stops_on_ctrl_c():
    # started with SIGINT ignored, as `latentlocal worker &` in a script is: it must stop anyway
    w = Worker(host="0.0.0.0", sigint_ignored=True)
    try:
        w.proc.send_signal(signal.SIGINT)
        w.proc.wait(10)
        w.drain.join(10)  # to the end of its output
        err = "".join(w.lines)
    finally:
        w.kill()
    assert w.proc.returncode == 0
    assert "no authentication" in err and "stopped" in err



def _connections_to(endpoints: list[str]) -> list[socket.socket]:
    """This process's TCP connections to these endpoints (duplicates: the caller closes them)."""
    import os

    peers = {(ep.rpartition(":")[0], int(ep.rpartition(":")[2])) for ep in endpoints}
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        try:
            if sock.type == socket.SOCK_STREAM and sock.getpeername()[:2] in peers:
                found.append(sock)
                continue
        except OSError:
            pass
        sock.close()
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_the_connections_to_the_workers_have_keepalive_and_a_timeout(split, workers):
    socks = _connections_to([w.endpoint for w in workers])
    try:
        peers = {s.getpeername()[1] for s in socks}
        assert peers == {w.port for w in workers}  # ggml-rpc's connection to each worker
        for s in socks:
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == int(rpc.DEFAULT_TIMEOUT_S * 1000)
            idle = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
            probes = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)
            interval = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)
            assert idle + probes * interval <= rpc.DEFAULT_TIMEOUT_S
    finally:
        for s in socks:
            s.close()


@pytest.mark.parametrize("raw", ["soon", "0", "-5", "nan", "1"])
def test_a_bad_rpc_timeout_is_refused_with_the_fix(monkeypatch, raw):
    monkeypatch.setenv(rpc.TIMEOUT_ENV, raw)
    with pytest.raises(LatentLocalError, match="LATENTLOCAL_RPC_TIMEOUT=.*at least 2.*or unset it"):
        rpc.silence_timeout()
    monkeypatch.setenv(rpc.TIMEOUT_ENV, "12.5")
    assert rpc.silence_timeout() == 12.5


def _private_network() -> bool:
    try:
        return subprocess.run(["unshare", "-rn", "ip", "link", "set", "lo", "up"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _private_network(), reason="needs `unshare -rn` (user and network namespaces) "
                    "and `ip` to cut a network without root")
def test_a_worker_whose_network_vanishes_ends_the_run_and_frees_the_worker():
    """No FIN, no RST: the run must not wait for ever (tests/rpcvanish.py says how)."""
    from rpcworker import REPO

    proc = subprocess.run(["unshare", "-rn", sys.executable, str(REPO / "tests" / "rpcvanish.py")],
                          capture_output=True, text=True, timeout=300, env=env(),
                          cwd=str(REPO / "tests"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["rc"] == 2, out["err"]
    assert out["seconds"] < 30  # the 3 s timeout plus the abort message's reachability check
    assert "went away" in out["err"] and "Restart the worker" in out["err"]
    assert "backtrace" not in out["err"].lower()
    assert out["rerun_rc"] == 0 and out["rerun_summary"], (out["rerun_err"], out["worker_log"])
