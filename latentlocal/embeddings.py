"""Input embedding rows read straight from the GGUF's ``token_embd.weight``.

The tensor is found through the file's header (``gguf_header``) and memory-mapped; rows are
dequantized on demand (``gguf.quants.dequantize`` on just the rows asked for) and cached, so a
150k-token vocabulary never becomes a float matrix at start-up.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from latentlocal.errors import LatentLocalError
from latentlocal.gguf_header import GGUFHeader, TensorLocation

# Architectures whose graph multiplies by sqrt(n_embd) on the token path only (llama.cpp's
# gemma3.cpp and friends: ``ggml_scale(inpL, ubatch.token ? sqrtf(n_embd) : 1.0f)``), so rows fed
# as embeddings must carry that factor already. Gemma 1/2 scale both paths and need nothing.
TOKEN_PATH_ONLY_SCALE = frozenset({"gemma3", "gemma3n", "gemma4", "gemma-embedding"})


def input_scale(arch: str, n_embd: int) -> float:
    """Factor that makes an embedding row equivalent to feeding its token, for ``arch``."""
    return math.sqrt(n_embd) if arch in TOKEN_PATH_ONLY_SCALE else 1.0


class EmbeddingTable:
    """Rows of ``token_embd.weight``, scaled to be fed as embedding input."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        arch: str | None = None,
        n_embd: int | None = None,
        cache_rows: int = 8192,
        location: TensorLocation | None = None,
    ) -> None:
        """``arch``, ``n_embd`` and ``location`` (``gguf_header.locate_tensor``) are read from the
        file's header when not given (a loaded ``Model`` knows the first two already)."""
        if arch is None or n_embd is None or location is None:
            with GGUFHeader(path) as h:
                arch = arch or h.string("general.architecture") or "unknown"
                n_embd = n_embd or h.integer(f"{arch}.embedding_length")
                location = location or h.tensor("token_embd.weight")
            if location is None:
                raise LatentLocalError(
                    f"{path} has no token_embd.weight tensor, so its input embeddings cannot be read")
            if not n_embd:
                raise LatentLocalError(f"{path} does not record {arch}.embedding_length, the embedding width")
        self.qtype = GGMLQuantizationType(location.ggml_type)
        block, type_size = GGML_QUANT_SIZES[self.qtype]
        row_bytes = n_embd // block * type_size
        if n_embd % block or location.nbytes % row_bytes:
            raise LatentLocalError(
                f"token_embd.weight in {path} holds {location.nbytes} bytes, not whole rows of "
                f"width {n_embd}: the file is damaged"
            )
        self._data = np.memmap(path, dtype=np.uint8, mode="r", offset=location.offset,
                               shape=(location.nbytes // row_bytes, row_bytes))
        self.n_vocab = self._data.shape[0]
        self.n_embd = n_embd
        self.arch = arch
        self.scale = input_scale(arch, self.n_embd)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_rows = cache_rows

    @property
    def source_bytes(self) -> int:
        """Bytes of the memory-mapped quantized source (what the table holds instead of floats)."""
        return int(self._data.nbytes)

    @property
    def cached_bytes(self) -> int:
        return len(self._cache) * self.n_embd * 4

    def _dequantize(self, ids: np.ndarray) -> np.ndarray:
        from gguf.quants import dequantize

        raw = np.asarray(self._data[ids])
        rows = dequantize(raw, self.qtype).reshape(len(ids), self.n_embd).astype(np.float32)
        if self.scale != 1.0:
            rows *= np.float32(self.scale)
        return rows

    def rows(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Embedding rows (len(ids), n_embd) as float32, input scale applied."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_vocab):
            raise LatentLocalError(f"token ids must lie in 0..{self.n_vocab - 1}")
        out = np.empty((ids.size, self.n_embd), dtype=np.float32)
        missing = [i for i in dict.fromkeys(ids.tolist()) if i not in self._cache]
        if missing:
            fresh = self._dequantize(np.asarray(missing, dtype=np.int64))
            for i, row in zip(missing, fresh):
                self._cache[i] = row
            while len(self._cache) > self._cache_rows:
                self._cache.popitem(last=False)
        for k, i in enumerate(ids.tolist()):
            row = self._cache.get(i)
            if row is None:  # evicted while filling a huge request
                row = self._dequantize(np.asarray([i]))[0]
            else:
                self._cache.move_to_end(i)
            out[k] = row
        return out

    def row(self, token: int) -> np.ndarray:
        return self.rows([token])[0]

    def mix(self, ids: Sequence[int] | np.ndarray, weights: Sequence[float] | np.ndarray) -> np.ndarray:
        """Weighted sum of rows: the concept token of Soft Thinking."""
        w = np.asarray(weights, dtype=np.float32)
        return w @ self.rows(ids)
