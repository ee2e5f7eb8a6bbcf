"""llama.cpp's OpenMP spin setting (latentlocal.openmp): made before llama.cpp loads, in every
latentlocal process, never over the user's own choice."""

from __future__ import annotations

import os
import subprocess
import sys

from latentlocal.openmp import SPINS, spin_less

# Records GOMP_SPINCOUNT at the moment llama_cpp is imported (libgomp reads it when it loads with
# llama.cpp, once), then runs a command's parser the way the `latentlocal` command does.
PROBE = """
import os, sys
seen = []
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "llama_cpp" and not seen:
            seen.append(os.environ.get("GOMP_SPINCOUNT"))
        return None
sys.meta_path.insert(0, Watch())
from latentlocal.cli import main
try:
    main(sys.argv[1:] + ["--help"])
except SystemExit:
    pass
assert seen, "the command never loaded llama.cpp"
print("SPIN", seen[0])
"""


def _spin_at_load(command: list[str], **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", PROBE, *command], env={**base, **env},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.splitlines()[-1].removeprefix("SPIN ")


def test_every_command_spins_less_before_llama_cpp_loads():
    """Beside any other work on the cores, GNU OpenMP's default 300,000 spins dropped the CLI to
    0.6-1.8 tok/s (10,000: 3.9-30) and the terminal UI to 0.3x the CLI. A module that imports
    llama_cpp before latentlocal.llama_libs, or a setting made after the import, fails here."""
    for command in (["run"], ["tui"], ["serve"], ["bench"], ["seal", "extract"], []):
        assert _spin_at_load(command) == str(SPINS), command
    assert _spin_at_load(["run"], GOMP_SPINCOUNT="7") == "7"               # the user's own
    assert _spin_at_load(["serve"], OMP_WAIT_POLICY="passive") == "None"   # ditto


def test_spin_less_respects_the_user_and_the_load_order(monkeypatch):
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setitem(sys.modules, "llama_cpp", sys.modules.get("llama_cpp", object()))
    assert not spin_less() and "GOMP_SPINCOUNT" not in os.environ  # too late: loaded already
    monkeypatch.delitem(sys.modules, "llama_cpp")
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert not spin_less() and "GOMP_SPINCOUNT" not in os.environ  # the user's choice
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert spin_less(123) and os.environ["GOMP_SPINCOUNT"] == "123"
    assert not spin_less(456) and os.environ["GOMP_SPINCOUNT"] == "123"
