"""A worker's machine vanishing mid-run, inside a private network namespace (``unshare -rn``).

Taking the namespace's only interface (loopback) down drops every packet between the run and its
worker without closing either end, which is what a machine that loses power or its network does:
no FIN, no RST, the sockets stay open and silent. tests/test_rpc.py runs this file as
``unshare -rn python tests/rpcvanish.py`` and reads the JSON line it prints.

Steps: a worker and a ``latentlocal run --rpc`` in the namespace, both with a 3-second
LATENTLOCAL_RPC_TIMEOUT; the run is paused after its first token, the network taken down, the run
resumed: it must end with the lost-worker message within seconds. Then, with the network back, a
second run on the same worker must work (the worker dropped its silent client by itself).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from rpcworker import Worker, env

QUESTION = "Tom has 3 apples and buys 5 more. How many apples does he have?"
TIMEOUT_S = 3


def _run(endpoint: str, max_tokens: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "latentlocal.cli", "run", QUESTION, "--json", "--max-tokens",
         str(max_tokens), "--n-ctx", "1024", "--threads", "1", "--rpc", endpoint],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())


def _link(state: str) -> None:
    subprocess.run(["ip", "link", "set", "lo", state], check=True)


def main() -> int:
    os.environ["LATENTLOCAL_RPC_TIMEOUT"] = str(TIMEOUT_S)  # env() hands it to both processes
    _link("up")
    out: dict[str, object] = {}
    w = Worker()
    run = None
    try:
        run = _run(w.endpoint, 400)
        for line in run.stdout:  # until the first generated token
            if json.loads(line).get("type") == "token":
                break
        run.send_signal(signal.SIGSTOP)  # so it cannot finish before the network is gone
        _link("down")
        run.send_signal(signal.SIGCONT)
        t0 = time.monotonic()
        try:
            _, err = run.communicate(timeout=60)
            out.update(rc=run.returncode, err=err, seconds=round(time.monotonic() - t0, 1))
        except subprocess.TimeoutExpired:
            out.update(rc=None, err="the run still waited on its worker after 60 s", seconds=None)
        # The worker is left with a silent client too, and it serves one client at a time: the
        # second run's probe is answered only once the worker has dropped that connection (by its
        # own keepalive, or at its next probe once the network is back: the run's machine then
        # answers with a reset). Without keepalive the worker waits on it for ever.
        _link("up")
        again = _run(w.endpoint, 8)
        try:
            stdout, err2 = again.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            again.kill()
            stdout, err2 = again.communicate()
        summaries = [e for e in map(json.loads, stdout.splitlines()) if e.get("type") == "summary"]
        out.update(rerun_rc=again.returncode, rerun_err=err2[-2000:], rerun_summary=bool(summaries))
    finally:
        if run is not None and run.poll() is None:
            run.kill()
        w.kill()
    out["worker_log"] = "".join(w.lines[-12:])
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
