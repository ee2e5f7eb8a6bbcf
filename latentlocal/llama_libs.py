"""The native libraries llama-cpp-python ships: its ctypes bindings to libllama (``C``), and
libggml-base, libggml (the backend registry) and libggml-rpc typed here.

Imported by ``engine`` (decoding, layer capture), ``gguf_header`` (ggml's GGUF reader) and ``rpc``
(workers), so a broken install fails in one place with one message.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

from latentlocal.cpu_build import check_cpu_build
from latentlocal.errors import LatentLocalError
from latentlocal.openmp import spin_less

spin_less()  # before llama.cpp (and its OpenMP runtime) loads: libgomp reads it once
check_cpu_build()  # before llama.cpp loads: a build for another CPU dies of SIGILL, not an exception

try:
    import llama_cpp.llama_cpp as C
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise LatentLocalError(
        f"llama-cpp-python is not importable ({exc}); reinstall with ./install.sh"
    ) from exc

__all__ = ["C", "ggml_base", "ggml_registry", "ggml_rpc", "rpc_library_path"]


# ggml_abort_callback_t (ggml.h): called with the message before ggml aborts the process
ABORT_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_char_p)

# enum ggml_backend_dev_type (ggml-backend.h)
DEVICE_CPU, DEVICE_GPU, DEVICE_IGPU, DEVICE_ACCEL = 0, 1, 2, 3


def _lib_dir() -> Path:
    return Path(C.__file__).parent / "lib"


def _find_lib(stem: str) -> Path | None:
    """``lib{stem}`` in llama_cpp/lib: the copy this process already runs, else the first by name.

    A wheel holds libggml-base.so, .so.0 and .so.0.25.3 as three separate files (wheels have no
    symlinks), and libllama loads the .so.0. Loading another of them would map a second instance
    with its own globals: an abort callback set there is never called, a device registry there is
    another registry. ``libggml.*`` never matches libggml-base.
    """
    lib_dir = _lib_dir()
    mapped = _mapped(lib_dir, f"lib{stem}.")
    if mapped is not None:
        return mapped
    candidates = sorted(lib_dir.glob(f"lib{stem}.*")) + sorted(lib_dir.glob(f"{stem}.*"))
    return candidates[0] if candidates else None


def _mapped(lib_dir: Path, prefix: str) -> Path | None:
    """A file of ``lib_dir`` named ``prefix...`` that this process has mapped (Linux's
    /proc/self/maps; None elsewhere, or when none is)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    folder = lib_dir.resolve()
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6:
            path = Path(fields[5])
            if path.name.startswith(prefix) and path.parent == folder:
                return path
    return None


@functools.cache
def ggml_base() -> ctypes.CDLL:
    """libggml-base from llama_cpp/lib, with the tensor accessors layer capture calls typed."""
    path = _find_lib("ggml-base")
    if path is None:
        raise LatentLocalError(
            f"libggml-base not found in {_lib_dir()}; layer capture and GGUF headers need "
            "llama-cpp-python's shared libraries: reinstall with ./install.sh"
        )
    lib = ctypes.CDLL(str(path))
    p, size = ctypes.c_void_p, ctypes.c_size_t
    lib.ggml_get_name.argtypes = [p]
    lib.ggml_get_name.restype = ctypes.c_char_p
    lib.ggml_nbytes.argtypes = [p]
    lib.ggml_nbytes.restype = size
    lib.ggml_backend_tensor_get.argtypes = [p, p, size, size]
    lib.ggml_backend_tensor_get.restype = None
    # the device API (ggml-backend.h) the RPC devices are found and described with
    lib.ggml_backend_reg_dev_count.argtypes = [p]
    lib.ggml_backend_reg_dev_count.restype = size
    lib.ggml_backend_reg_dev_get.argtypes = [p, size]
    lib.ggml_backend_reg_dev_get.restype = p
    lib.ggml_backend_dev_name.argtypes = [p]
    lib.ggml_backend_dev_name.restype = ctypes.c_char_p
    lib.ggml_backend_dev_description.argtypes = [p]
    lib.ggml_backend_dev_description.restype = ctypes.c_char_p
    lib.ggml_backend_dev_type.argtypes = [p]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    lib.ggml_set_abort_callback.argtypes = [ABORT_CALLBACK]
    lib.ggml_set_abort_callback.restype = ABORT_CALLBACK
    return lib


@functools.cache
def ggml_registry() -> ctypes.CDLL:
    """libggml, which holds the backend registry (every device this build was made with)."""
    path = _find_lib("ggml")
    if path is None:
        raise LatentLocalError(f"libggml not found in {_lib_dir()}: reinstall with ./install.sh")
    lib = ctypes.CDLL(str(path))
    lib.ggml_backend_dev_count.argtypes = []
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
    lib.ggml_backend_dev_by_type.restype = ctypes.c_void_p
    return lib


def rpc_library_path() -> Path | None:
    """libggml-rpc in llama_cpp/lib, where install.sh's GGML_RPC=ON build puts it (None: absent)."""
    return _find_lib("ggml-rpc")


@functools.cache
def ggml_rpc() -> ctypes.CDLL:
    """The RPC backend (ggml-rpc.h): client registration and the worker's server loop."""
    path = rpc_library_path()
    if path is None:
        raise LatentLocalError(
            f"this llama-cpp-python build has no RPC backend (no libggml-rpc in {_lib_dir()}); "
            "reinstall with ./install.sh, which builds it with GGML_RPC=ON"
        )
    lib = ctypes.CDLL(str(path))
    p = ctypes.c_void_p
    lib.ggml_backend_rpc_add_server.argtypes = [ctypes.c_char_p]
    lib.ggml_backend_rpc_add_server.restype = p
    lib.ggml_backend_rpc_start_server.argtypes = [
        ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.POINTER(p),
    ]
    lib.ggml_backend_rpc_start_server.restype = None
    return lib
