"""Was this venv's llama.cpp built for instruction sets this CPU lacks?

install.sh names the x86 instruction sets it builds llama.cpp with (never "native") and records
them in the venv (``.latentlocal-llama-backend``). A venv built on an AVX-512 machine and then run
on an AVX2-only one (a copied venv, a shared home on mixed cluster nodes, a VM moved to another
host) dies of SIGILL at the first such instruction. Checked before llama.cpp loads, so it is a
message with the fix instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

from latentlocal.errors import LatentLocalError

STAMP = ".latentlocal-llama-backend"

# CMake option (ggml/CMakeLists.txt) -> the /proc/cpuinfo flag the instructions need
CPU_FLAGS = {
    "GGML_AVX": "avx",
    "GGML_AVX2": "avx2",
    "GGML_FMA": "fma",
    "GGML_F16C": "f16c",
    "GGML_AVX_VNNI": "avx_vnni",
    "GGML_AVX512": "avx512f",
    "GGML_AVX512_VBMI": "avx512vbmi",
    "GGML_AVX512_VNNI": "avx512_vnni",
    "GGML_AVX512_BF16": "avx512_bf16",
    "GGML_AMX_TILE": "amx_tile",
    "GGML_AMX_INT8": "amx_int8",
    "GGML_AMX_BF16": "amx_bf16",
}


def built_for(stamp_text: str) -> list[str]:
    """The instruction-set options a stamp's CMake arguments turned on, in their order."""
    on = []
    for arg in stamp_text.split():
        name, _, value = arg.removeprefix("-D").partition("=")
        if name in CPU_FLAGS and value.upper() in ("ON", "1", "TRUE", "YES") and name not in on:
            on.append(name)
    return on


def build_label(stamp: Path | None = None) -> str | None:
    """This venv's llama.cpp build in a few words, from install.sh's stamp: the backend and the
    x86 instruction sets it was built with ("cpu AVX AVX2 FMA F16C AVX512"). Kernels differ per
    instruction set, and so do single greedy answers, so bench rows record it. None without a
    stamp (a llama-cpp-python that install.sh did not build)."""
    stamp = stamp if stamp is not None else Path(sys.prefix) / STAMP
    try:
        text = stamp.read_text()
    except OSError:
        return None
    # the stamp reads "<version> <backend> <cmake args...>"
    words = text.split()
    if len(words) < 2:
        return None
    return " ".join([words[1], *(n.removeprefix("GGML_") for n in built_for(text))])


def cpu_flags(cpuinfo_text: str) -> set[str] | None:
    """The first processor's flags in a /proc/cpuinfo text (None when it lists none: not x86)."""
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return None


def check_cpu_build(stamp: Path | None = None, cpuinfo: Path = Path("/proc/cpuinfo")) -> None:
    """Raise if the venv's llama.cpp needs instructions this CPU does not have. Silent where
    either fact is unknown: no stamp (not installed by install.sh), no x86 flags (macOS, ARM)."""
    stamp = stamp if stamp is not None else Path(sys.prefix) / STAMP
    try:
        wanted = built_for(stamp.read_text())
        have = cpu_flags(cpuinfo.read_text())
    except OSError:
        return
    if have is None:
        return
    missing = [name for name in wanted if CPU_FLAGS[name] not in have]
    if missing:
        names = ", ".join(n.removeprefix("GGML_") for n in missing)
        raise LatentLocalError(
            f"llama-cpp-python in {stamp.parent} was built for {names}, which this CPU lacks "
            "(was the venv built on another machine?); it would crash at the first such "
            "instruction. Rerun ./install.sh on this machine, or build a venv for older CPUs "
            "with LATENTLOCAL_CPU=avx2 ./install.sh")
