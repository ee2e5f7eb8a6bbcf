"""The native libraries llama-cpp-python ships: its ctypes bindings to libllama (``C``) and libggml-base.

Imported by ``engine`` (decoding, layer capture) and ``gguf_header`` (ggml's GGUF reader), so a
broken install fails in one place with one message.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

from latentlocal.errors import LatentLocalError
from latentlocal.openmp import spin_less

spin_less()  # before llama.cpp (and its OpenMP runtime) loads: libgomp reads it once

try:
    import llama_cpp.llama_cpp as C
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise LatentLocalError(
        f"llama-cpp-python is not importable ({exc}); reinstall with ./install.sh"
    ) from exc

__all__ = ["C", "ggml_base"]


@functools.cache
def ggml_base() -> ctypes.CDLL:
    """libggml-base from llama_cpp/lib, with the tensor accessors layer capture calls typed."""
    lib_dir = Path(C.__file__).parent / "lib"
    candidates = sorted(lib_dir.glob("libggml-base.*")) + sorted(lib_dir.glob("ggml-base.*"))
    if not candidates:
        raise LatentLocalError(
            f"libggml-base not found in {lib_dir}; layer capture and GGUF headers need "
            "llama-cpp-python's shared libraries: reinstall with ./install.sh"
        )
    lib = ctypes.CDLL(str(candidates[0]))
    lib.ggml_get_name.argtypes = [ctypes.c_void_p]
    lib.ggml_get_name.restype = ctypes.c_char_p
    lib.ggml_nbytes.argtypes = [ctypes.c_void_p]
    lib.ggml_nbytes.restype = ctypes.c_size_t
    lib.ggml_backend_tensor_get.argtypes = [
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t,
    ]
    lib.ggml_backend_tensor_get.restype = None
    return lib
