"""Reading a GGUF file's header without loading its weights: the file check, metadata, tensor index.

Everything that looks inside a model file before llama.cpp loads it goes through here: the
clear errors for a missing, non-GGUF or damaged file, ``GGUFHeader`` (ggml's own C reader), where a
tensor's bytes lie (``locate_tensor``, for ``embeddings``), and the facts ``latentlocal models``
and the TUI's Models tab show (``read_info``).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any, NamedTuple

from latentlocal.errors import LatentLocalError
from latentlocal.llama_libs import ggml_base


def check_gguf_file(path: str | os.PathLike[str]) -> Path:
    """Fail with a clear message before llama.cpp sees a file that is missing or not GGUF."""
    p = Path(path).expanduser()
    if not p.exists():
        raise LatentLocalError(f"model file not found: {p}; pass --model PATH to an existing .gguf file")
    if p.is_dir():
        raise LatentLocalError(f"{p} is a folder, not a model file; pass --model PATH to a .gguf file")
    with p.open("rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise LatentLocalError(
            f"{p} is not a GGUF file (it does not start with the GGUF magic); "
            "convert it with llama.cpp's convert_hf_to_gguf.py or pick a .gguf file"
        )
    return p


class _GgufInitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


class TensorLocation(NamedTuple):
    """Where a tensor's bytes lie in a GGUF file."""

    offset: int  # from the start of the file
    ggml_type: int
    nbytes: int


_GGUF_INT_GETTERS = {  # gguf_type -> getter (ggml aborts when a getter meets another type)
    0: ("gguf_get_val_u8", ctypes.c_uint8), 1: ("gguf_get_val_i8", ctypes.c_int8),
    2: ("gguf_get_val_u16", ctypes.c_uint16), 3: ("gguf_get_val_i16", ctypes.c_int16),
    4: ("gguf_get_val_u32", ctypes.c_uint32), 5: ("gguf_get_val_i32", ctypes.c_int32),
    10: ("gguf_get_val_u64", ctypes.c_uint64), 11: ("gguf_get_val_i64", ctypes.c_int64),
}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def _gguf_lib() -> ctypes.CDLL:
    lib = ggml_base()
    if not getattr(lib, "_latentlocal_gguf", False):
        sig = {
            "gguf_init_from_file": ([ctypes.c_char_p, _GgufInitParams], ctypes.c_void_p),
            "gguf_free": ([ctypes.c_void_p], None),
            "gguf_find_tensor": ([ctypes.c_void_p, ctypes.c_char_p], ctypes.c_int64),
            "gguf_get_tensor_offset": ([ctypes.c_void_p, ctypes.c_int64], ctypes.c_size_t),
            "gguf_get_tensor_size": ([ctypes.c_void_p, ctypes.c_int64], ctypes.c_size_t),
            "gguf_get_tensor_type": ([ctypes.c_void_p, ctypes.c_int64], ctypes.c_int),
            "gguf_get_data_offset": ([ctypes.c_void_p], ctypes.c_size_t),
            "gguf_find_key": ([ctypes.c_void_p, ctypes.c_char_p], ctypes.c_int64),
            "gguf_get_kv_type": ([ctypes.c_void_p, ctypes.c_int64], ctypes.c_int),
            "gguf_get_val_str": ([ctypes.c_void_p, ctypes.c_int64], ctypes.c_char_p),
            "gguf_get_arr_n": ([ctypes.c_void_p, ctypes.c_int64], ctypes.c_size_t),
        }
        for name, restype in _GGUF_INT_GETTERS.values():
            sig[name] = ([ctypes.c_void_p, ctypes.c_int64], restype)
        for name, (argtypes, restype) in sig.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = argtypes, restype
        lib._latentlocal_gguf = True
    return lib


class GGUFHeader:
    """A GGUF's metadata and tensor index read by ggml's own C reader (no weights loaded).

    The gguf package parses every metadata field in Python first: 3 s for SmolLM2's 49k-token
    vocabulary and 13 s for Qwen2.5's 152k here, against milliseconds in C.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = check_gguf_file(path)
        self._lib = _gguf_lib()
        self._ctx = self._lib.gguf_init_from_file(str(self.path).encode(), _GgufInitParams(True, None))
        if not self._ctx:
            raise LatentLocalError(f"{self.path} is truncated or corrupt: ggml cannot read its GGUF "
                                   "header; download or copy it again")

    def __enter__(self) -> GGUFHeader:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._ctx:
            self._lib.gguf_free(self._ctx)
            self._ctx = None

    def _key(self, key: str) -> tuple[int, int] | None:
        kid = self._lib.gguf_find_key(self._ctx, key.encode())
        return None if kid < 0 else (kid, self._lib.gguf_get_kv_type(self._ctx, kid))

    def string(self, key: str) -> str | None:
        found = self._key(key)
        if found is None or found[1] != _GGUF_STRING:
            return None
        return self._lib.gguf_get_val_str(self._ctx, found[0]).decode("utf-8", "replace")

    def integer(self, key: str) -> int | None:
        found = self._key(key)
        if found is None or found[1] not in _GGUF_INT_GETTERS:
            return None
        return int(getattr(self._lib, _GGUF_INT_GETTERS[found[1]][0])(self._ctx, found[0]))

    def array_len(self, key: str) -> int | None:
        found = self._key(key)
        if found is None or found[1] != _GGUF_ARRAY:
            return None
        return int(self._lib.gguf_get_arr_n(self._ctx, found[0]))

    def tensor(self, name: str) -> TensorLocation | None:
        tid = self._lib.gguf_find_tensor(self._ctx, name.encode())
        if tid < 0:
            return None
        lib, ctx = self._lib, self._ctx
        return TensorLocation(
            offset=int(lib.gguf_get_data_offset(ctx) + lib.gguf_get_tensor_offset(ctx, tid)),
            ggml_type=int(lib.gguf_get_tensor_type(ctx, tid)),
            nbytes=int(lib.gguf_get_tensor_size(ctx, tid)),
        )


def locate_tensor(path: str | os.PathLike[str], name: str) -> TensorLocation | None:
    """Where tensor ``name`` lies in a GGUF file, or None if it has none."""
    with GGUFHeader(path) as h:
        return h.tensor(name)


def read_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Architecture, block count, width, attention heads, vocabulary size, name and file size of a
    GGUF."""
    with GGUFHeader(path) as h:
        arch = h.string("general.architecture") or "unknown"
        return {
            "name": h.string("general.name") or Path(h.path).stem,
            "arch": arch,
            "n_layer": h.integer(f"{arch}.block_count"),
            "n_embd": h.integer(f"{arch}.embedding_length"),
            # None where they are per-block arrays (the KV estimate then waits for the load)
            "n_head": h.integer(f"{arch}.attention.head_count"),
            "n_head_kv": h.integer(f"{arch}.attention.head_count_kv") or h.integer(f"{arch}.attention.head_count"),
            "n_vocab": h.array_len("tokenizer.ggml.tokens"),
            "size_bytes": Path(h.path).stat().st_size,
            "file_type": h.integer("general.file_type"),
        }
