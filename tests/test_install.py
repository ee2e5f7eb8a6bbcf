"""install.sh keeps one llama-cpp-python wheel per build configuration: a CPU install never gets
the CUDA build (or an AVX-512 build on a CPU without it) that an earlier install left in a cache,
and an interrupted build leaves nothing behind to be reused.

The venv's python is a stand-in that logs what install.sh asks of it and fakes pip's build (the
"wheel" it writes holds the CMAKE_ARGS it was built with), so the script's own logic runs in a
second, not the 8-minute build."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUB = r"""#!/usr/bin/env bash
printf '%s\n' "$*" >> "$STUB_LOG"
if [ "$1" = -m ] && [ "$2" = pip ]; then
  shift 2
  [ "$1" = --disable-pip-version-check ] && shift
  if [ "$1" = wheel ]; then
    while [ $# -gt 0 ]; do [ "$1" = -w ] && out="$2"; shift; done
    echo "BUILD $CMAKE_ARGS" >> "$STUB_LOG"
    echo "$CMAKE_ARGS" > "$out/llama_cpp_python-0.3.36-py3-none-any.whl"
    [ -z "${STUB_FAIL:-}" ] || exit 1
  elif [ "$1" = install ]; then
    for a in "$@"; do case "$a" in *.whl) echo "INSTALL $(cat "$a")" >> "$STUB_LOG" ;; esac; done
  fi
  exit 0
fi
# the cache key's hash runs for real; the import checks pass
if [ "$1" = -c ]; then case "$2" in *hashlib*) exec python3 "$@" ;; esac; fi
exit 0
"""

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("python3") is None,
                                reason="install.sh needs bash and python3")


@pytest.fixture
def sandbox(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    py = venv / "bin" / "python"
    py.write_text(STUB)
    py.chmod(0o755)
    log = tmp_path / "log"
    log.touch()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "LATENTLOCAL_CPU")}
    env.update(LATENTLOCAL_VENV=str(venv), LATENTLOCAL_WHEELS=str(tmp_path / "wheels"), STUB_LOG=str(log))

    def install(backend: str, **extra: str) -> tuple[int, list[str]]:
        before = len(log.read_text().splitlines())
        proc = subprocess.run([str(ROOT / "install.sh")], cwd=ROOT, env={**env, "LATENTLOCAL_BACKEND": backend, **extra},
                              capture_output=True, text=True, timeout=120)
        new = log.read_text().splitlines()[before:]
        return proc.returncode, [line for line in new if line.startswith(("BUILD", "INSTALL"))]

    return install, tmp_path / "wheels"


def test_each_build_configuration_has_its_own_wheel(sandbox):
    install, wheels = sandbox
    rc, cpu = install("cpu")
    assert rc == 0 and len(cpu) == 2 and cpu[0].startswith("BUILD") and "GGML_CUDA" not in cpu[0]
    assert cpu[1] == "INSTALL " + cpu[0].removeprefix("BUILD ")
    rc, cuda = install("cuda")
    assert rc == 0 and len(cuda) == 2 and "-DGGML_CUDA=on" in cuda[0]
    assert cuda[1] == "INSTALL " + cuda[0].removeprefix("BUILD ")
    # back to the CPU build: its own wheel, not the newer CUDA one, and no second build
    rc, again = install("cpu")
    assert rc == 0 and again == [cpu[1]]
    assert len(list(wheels.glob("*/llama_cpp_python-*.whl"))) == 2


def test_an_interrupted_build_leaves_no_wheel_to_reuse(sandbox):
    install, wheels = sandbox
    rc, lines = install("cpu", STUB_FAIL="1")
    assert rc != 0 and lines and lines[0].startswith("BUILD")
    assert not any(line.startswith("INSTALL") for line in lines)
    assert list(wheels.glob("**/*.whl")) == []
    rc, lines = install("cpu")
    assert rc == 0 and [line.split()[0] for line in lines] == ["BUILD", "INSTALL"]
