"""How to open an engine: the model and the context's size, threads, sequences and seed, with their defaults.

The one place these defaults live. The CLI's model flags, the TUI's Models tab, ``bench`` and the
benchmark scripts build an ``EngineSettings`` and open it with ``Engine.open(settings)``; the
``Engine`` constructor takes its own defaults from here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from latentlocal.errors import LatentLocalError
from latentlocal.models import resolve_model

MAX_SEQUENCES = 256  # llama.cpp's LLAMA_MAX_SEQ


@dataclass(frozen=True)
class EngineSettings:
    """What ``Engine.open`` loads and how (frozen: derive variants with ``dataclasses.replace``)."""

    # a .gguf path, a file name in the models folder, or None for the bundled model
    model: str | os.PathLike[str] | None = None
    # layers offloaded to the GPU (CUDA/Metal builds; a CPU build warns and ignores it)
    n_gpu_layers: int = 0
    # context size in tokens, shared by all sequences (kv_unified)
    n_ctx: int = 4096
    # CPU threads; None or 0: all cores the process may use, at most 8 (engine.default_threads)
    n_threads: int | None = None
    # sequences one context holds (sc chains, soft-reasoning candidates decode side by side)
    n_seq_max: int = 16
    seed: int = 0
    # let llama.cpp's own log through to stderr
    verbose: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.n_seq_max <= MAX_SEQUENCES:
            raise LatentLocalError(
                f"parallel sequences must be between 1 and {MAX_SEQUENCES}, not {self.n_seq_max}")
        if self.n_ctx < 0:
            raise LatentLocalError(f"the context size must not be negative, not {self.n_ctx}")
        if self.n_threads is not None and self.n_threads < 0:
            raise LatentLocalError(f"threads must not be negative, not {self.n_threads}")

    def model_path(self) -> Path:
        """The GGUF file ``model`` names (resolved the way ``--model`` is)."""
        return resolve_model(self.model)
