"""A venv whose llama.cpp was built for instruction sets this CPU lacks is refused with the fix,
before llama.cpp could load and die of SIGILL; a build that fits is never refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from latentlocal.cpu_build import STAMP, build_label, built_for, check_cpu_build, cpu_flags
from latentlocal.errors import LatentLocalError

AVX2_ARGS = ("0.3.36 cpu -DLLAVA_BUILD=OFF -DGGML_RPC=ON -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON "
             "-DGGML_FMA=ON -DGGML_F16C=ON")
AVX512_ARGS = AVX2_ARGS + " -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON"
EPYC = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx f16c fma avx2 bmi2\n\nprocessor\t: 1\n"


def _files(tmp_path: Path, stamp: str, cpuinfo: str) -> tuple[Path, Path]:
    (tmp_path / STAMP).write_text(stamp + "\n")
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    return tmp_path / STAMP, tmp_path / "cpuinfo"


def test_an_avx512_build_on_an_avx2_cpu_is_refused_with_the_fix(tmp_path):
    stamp, cpuinfo = _files(tmp_path, AVX512_ARGS, EPYC)
    with pytest.raises(LatentLocalError) as exc:
        check_cpu_build(stamp, cpuinfo)
    msg = str(exc.value)
    assert "built for AVX512, AVX512_VNNI, AVX512_BF16, which this CPU lacks" in msg  # only what it lacks
    assert "./install.sh" in msg and "LATENTLOCAL_CPU=avx2" in msg


def test_builds_that_fit_the_cpu_and_unknown_facts_pass(tmp_path):
    stamp, cpuinfo = _files(tmp_path, AVX2_ARGS, EPYC)
    check_cpu_build(stamp, cpuinfo)
    # the AVX-512 build on a CPU that has it
    stamp, cpuinfo = _files(tmp_path, AVX512_ARGS, EPYC.replace("bmi2", "bmi2 avx512f avx512_vnni avx512_bf16"))
    check_cpu_build(stamp, cpuinfo)
    # no stamp (not installed by install.sh), no cpuinfo (macOS), no flags line (not x86)
    check_cpu_build(tmp_path / "none", cpuinfo)
    check_cpu_build(stamp, tmp_path / "none")
    _, arm = _files(tmp_path, AVX512_ARGS, "processor\t: 0\nFeatures\t: fp asimd\n")
    check_cpu_build(stamp, arm)


def test_stamps_and_flags_parse():
    assert built_for(AVX512_ARGS) == ["GGML_AVX", "GGML_AVX2", "GGML_FMA", "GGML_F16C", "GGML_AVX512",
                                      "GGML_AVX512_VNNI", "GGML_AVX512_BF16"]
    assert built_for("0.3.36 cuda -DGGML_CUDA=on -DGGML_AVX512=OFF") == []
    assert cpu_flags(EPYC) == {"fpu", "sse2", "avx", "f16c", "fma", "avx2", "bmi2"}
    assert cpu_flags("processor\t: 0\nFeatures\t: fp asimd\n") is None


def test_build_labels(tmp_path):
    stamp = tmp_path / STAMP
    stamp.write_text(AVX512_ARGS)
    assert build_label(stamp) == "cpu AVX AVX2 FMA F16C AVX512 AVX512_VNNI AVX512_BF16"
    stamp.write_text("0.3.36 cuda -DLLAVA_BUILD=OFF -DGGML_RPC=ON -DGGML_CUDA=on")
    assert build_label(stamp) == "cuda"
    stamp.write_text("")
    assert build_label(stamp) is None
    assert build_label(tmp_path / "none") is None


def test_this_venvs_build_fits_this_cpu():
    """The real stamp against the real CPU: a wrong flag name in the table would refuse every
    correct install here."""
    stamp = Path(sys.prefix) / STAMP
    if not stamp.is_file() or not Path("/proc/cpuinfo").is_file():
        pytest.skip("no install.sh stamp in this venv, or no /proc/cpuinfo")
    assert built_for(stamp.read_text())  # install.sh names the instruction sets on x86 Linux
    check_cpu_build()


def test_the_cli_says_it_before_llama_cpp_loads(tmp_path):
    """The check runs where llama.cpp is first imported, and the CLI prints its message (no
    traceback, exit 2). Run in a child whose sys.prefix is a venv built "for AVX-512" on a CPU
    without it; the child must not have loaded llama_cpp."""
    stamp, cpuinfo = _files(tmp_path, AVX512_ARGS, EPYC)
    code = (
        "import sys, pathlib, latentlocal.cpu_build as cb\n"
        "real = cb.check_cpu_build\n"
        f"cb.check_cpu_build = lambda: real(pathlib.Path({str(stamp)!r}), pathlib.Path({str(cpuinfo)!r}))\n"
        "from latentlocal.cli import main\n"
        "rc = main(['run', 'hi', '--max-tokens', '1'])\n"
        "assert 'llama_cpp' not in sys.modules, 'llama_cpp loaded'\n"
        "sys.exit(rc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 2, proc.stderr
    assert "built for AVX512" in proc.stderr and "Traceback" not in proc.stderr
