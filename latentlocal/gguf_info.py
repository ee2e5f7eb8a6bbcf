"""Model facts read from a GGUF header (ggml's reader, via ``engine.GGUFHeader``), without weights."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def read_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Architecture, block count, width, vocabulary size, name and file size of a GGUF."""
    from latentlocal.engine import GGUFHeader

    with GGUFHeader(path) as h:
        arch = h.string("general.architecture") or "unknown"
        return {
            "name": h.string("general.name") or Path(h.path).stem,
            "arch": arch,
            "n_layer": h.integer(f"{arch}.block_count"),
            "n_embd": h.integer(f"{arch}.embedding_length"),
            "n_vocab": h.array_len("tokenizer.ggml.tokens"),
            "size_bytes": Path(h.path).stat().st_size,
            "file_type": h.integer("general.file_type"),
        }
