"""Model facts read from a GGUF header with the gguf package, without loading weights."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from latentlocal.errors import LatentLocalError


def read_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Architecture, block count, width, vocabulary size, name and file size of a GGUF."""
    from gguf import GGUFReader

    from latentlocal.engine import check_gguf_file

    p = check_gguf_file(path)
    try:
        reader = GGUFReader(str(p), "r")
    except Exception as exc:
        raise LatentLocalError(f"{p} is truncated or corrupt ({exc.__class__.__name__}); "
                               "download or copy it again") from exc

    def field(key: str) -> Any:
        f = reader.get_field(key)
        return f.contents() if f is not None else None

    arch = field("general.architecture") or "unknown"
    vocab = field("tokenizer.ggml.tokens")
    return {
        "name": field("general.name") or p.stem,
        "arch": arch,
        "n_layer": field(f"{arch}.block_count"),
        "n_embd": field(f"{arch}.embedding_length"),
        "n_vocab": len(vocab) if vocab is not None else None,
        "size_bytes": Path(p).stat().st_size,
        "file_type": field("general.file_type"),
    }
