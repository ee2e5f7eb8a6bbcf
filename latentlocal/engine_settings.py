"""How to open an engine: the model and the context's size, threads, sequences and seed, with their defaults.

The one place these defaults live. The CLI's model flags, the TUI's Models tab, ``bench`` and the
benchmark scripts build an ``EngineSettings`` and open it with ``Engine.open(settings)``; the
``Engine`` constructor takes its own defaults from here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from latentlocal.errors import LatentLocalError
from latentlocal.models import resolve_model
from latentlocal.rpc import parse_endpoints

MAX_SEQUENCES = 256  # llama.cpp's LLAMA_MAX_SEQ
MAX_THREADS = 512  # ggml's GGML_MAX_N_THREADS (10000 threads looked like a hang)
# whether a model with <think> and </think> tokens thinks: "auto" decides from the vocabulary,
# "off" closes the thinking span empty at the prompt (Qwen3's enable_thinking=False), "on"
# refuses a model without the tokens
REASONING_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class EngineSettings:
    """What ``Engine.open`` loads and how (frozen: derive variants with ``dataclasses.replace``)."""

    # a .gguf path, a file name in the models folder, or None for the bundled model
    model: str | os.PathLike[str] | None = None
    # layers offloaded to the GPU (CUDA/Metal builds; a CPU build warns and ignores it) or, with
    # ``rpc``, to the workers; with ``rpc`` 0 means every layer (llama.cpp's own default)
    n_gpu_layers: int = 0
    # llama.cpp RPC workers (``latentlocal worker``) as "HOST:PORT" strings, or one comma-separated
    # string; their devices come first, as with llama.cpp's --rpc
    rpc: tuple[str, ...] = ()
    # the share of the offloaded layers each device gets (workers, then local GPUs), as llama.cpp's
    # --tensor-split; also "3,1"; empty: in proportion to each device's free memory
    tensor_split: tuple[float, ...] = ()
    # context size in tokens, shared by all sequences (kv_unified)
    n_ctx: int = 4096
    # CPU threads; None or 0: all cores the process may use, at most 8 (engine.default_threads)
    n_threads: int | None = None
    # sequences one context holds (sc chains, soft-reasoning candidates decode side by side)
    n_seq_max: int = 16
    seed: int = 0
    # thinking on models with think tokens (REASONING_MODES; see prompts.reasoning_format)
    reasoning: str = "auto"
    # let llama.cpp's own log through to stderr
    verbose: bool = False

    def __post_init__(self) -> None:
        # both also come as the text of --rpc / --tensor-split or the TUI's fields
        object.__setattr__(self, "rpc", parse_endpoints(self.rpc))
        object.__setattr__(self, "tensor_split", parse_shares(self.tensor_split))
        if not 1 <= self.n_seq_max <= MAX_SEQUENCES:
            raise LatentLocalError(
                f"parallel sequences (--parallel) must be between 1 and {MAX_SEQUENCES} (llama.cpp's "
                f"limit), not {self.n_seq_max}")
        if self.n_ctx < 0:
            raise LatentLocalError(f"the context size must not be negative, not {self.n_ctx}")
        if self.n_threads is not None and not 0 <= self.n_threads <= MAX_THREADS:
            raise LatentLocalError(f"threads must lie in 0..{MAX_THREADS} (0: all cores), not {self.n_threads}")
        if self.seed < 0:
            # numpy's generators take no negative seed (llama.cpp's -1, "random", is not offered)
            raise LatentLocalError(f"the seed must not be negative, not {self.seed}")
        if self.reasoning not in REASONING_MODES:
            raise LatentLocalError(
                f"reasoning (--reasoning) must be one of {', '.join(REASONING_MODES)}, not "
                f"'{self.reasoning}'")

    def model_path(self) -> Path:
        """The GGUF file ``model`` names (resolved the way ``--model`` is)."""
        return resolve_model(self.model)


def parse_shares(shares: str | Sequence[float]) -> tuple[float, ...]:
    """A tensor split, ``"3,1"`` or numbers: non-negative shares, not all zero (or none at all)."""
    items = [x for x in shares.split(",") if x.strip()] if isinstance(shares, str) else list(shares)
    try:
        split = tuple(float(x) for x in items)
    except (TypeError, ValueError):
        raise LatentLocalError(
            f"tensor split '{shares}' is not comma-separated numbers (e.g. 3,1 puts three quarters "
            "of the offloaded layers on the first device)") from None
    if split and (min(split) < 0 or not sum(split) > 0 or not all(map(math.isfinite, split))):
        raise LatentLocalError(
            f"tensor split {','.join(f'{x:g}' for x in split)}: shares must be finite, not negative, "
            "and not all zero (e.g. 3,1 puts three quarters of the offloaded layers on the first device)")
    return split


def kv_bytes_per_token(n_layer: int, n_embd: int, n_head: int, n_head_kv: int) -> int:
    """f16 K and V bytes one context token takes in every block (grouped-query heads counted)."""
    return 2 * 2 * n_layer * (n_embd // max(1, n_head)) * n_head_kv


def physical_memory() -> int:
    """Bytes of RAM, or 0 where the platform does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 0


def check_kv_memory(n_ctx: int, bytes_per_token: int, name: str) -> None:
    """Refuse a CPU context whose KV cache cannot fit this machine's memory: llama.cpp would try
    to allocate it all (minutes of swapping before it fails, or an OOM kill). Offloaded layers
    keep their cache on their device, so callers check only CPU contexts."""
    ram = physical_memory()
    if ram and bytes_per_token > 0 and n_ctx * bytes_per_token > ram:
        raise LatentLocalError(
            f"a context of {n_ctx} tokens needs about {n_ctx * bytes_per_token / 2**30:.0f} GiB "
            f"of KV cache for {name}, more than this machine's {ram / 2**30:.0f} GiB of "
            f"memory; pass a smaller --n-ctx ({ram // bytes_per_token // 2} tokens would "
            "take half of it)")

