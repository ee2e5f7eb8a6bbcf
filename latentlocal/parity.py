"""Is feeding a token's embedding row the same as feeding the token, on this model?

Soft Thinking and Soft Reasoning feed embedding rows. That is only right when llama.cpp's graph
treats a row like the token it came from: Gemma 3 scales the token path only (handled by
``embeddings.input_scale``), and an architecture added to llama.cpp later may do something else
again. The suite checks the shipped architectures (``tests/test_engine.py::
test_embedding_rows_give_the_token_logits``); any other architecture is checked here once per
model file before a method feeds rows, and refused with a clear error when the two differ.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from latentlocal.atomic import write_text_atomic
from latentlocal.engine import Engine, Model
from latentlocal.errors import LatentLocalError

# architectures whose row/token parity the test suite pins
PARITY_TESTED = frozenset({"llama", "gemma3"})
# relative to the logits' range, as the suite's parity test; a wrong input scale is off by far more
TOLERANCE = 2e-3
_PROBE_TEXT = "Tom has 3 apples and buys 5 more. How many"
_CACHE_VERSION = 1


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "latentlocal" / "embedding-parity.json"


def _key(model: Model) -> str:
    st = model.path.stat()
    return f"{_CACHE_VERSION}|{model.path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{model.arch}"


def _load_cache() -> dict[str, dict]:
    try:
        data = json.loads(_cache_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_cache(entries: dict[str, dict]) -> None:
    path = _cache_file()
    try:
        write_text_atomic(path, json.dumps(entries, indent=1))
    except OSError:
        pass  # a read-only cache only costs the check again next time


def measure(engine: Engine) -> float:
    """Max |logits(tokens) - logits(rows)| at the last position of a short probe, over the
    logits' range. Leaves the engine's KV cleared."""
    model = engine.model
    toks = model.tokenize(_PROBE_TEXT)[:12]
    engine.clear()
    engine.decode_tokens(toks)
    by_token = np.array(engine.logits(-1), dtype=np.float64)
    engine.clear()
    engine.decode_embeddings(model.embeddings.rows(toks))
    by_row = np.array(engine.logits(-1), dtype=np.float64)
    engine.clear()
    scale = float(by_token.max() - by_token.min()) or 1.0
    if by_token.argmax() != by_row.argmax():
        return max(1.0, float(np.abs(by_token - by_row).max()) / scale)
    return float(np.abs(by_token - by_row).max()) / scale


def check_embedding_input(engine: Engine) -> None:
    """Refuse embedding-row input on a model where it is known or measured to be wrong."""
    model = engine.model
    if model.multi_position_rope:
        engine._check_rows(np.zeros((1, model.n_embd), dtype=np.float32))  # raises, naming the arch
    if model.arch in PARITY_TESTED or model.embedding_input_checked:
        return
    if model.embedding_input_checked is None:
        cache = _load_cache()
        key = _key(model)
        entry = cache.get(key)
        if entry is None:
            # in a context of its own: the caller's sequences (a server's or a batch's running
            # problems) stay as they are
            with engine.sibling(n_ctx=64, n_batch=64, n_seq_max=1) as probe:
                diff = measure(probe)
            entry = {"arch": model.arch, "relative_diff": diff, "ok": diff <= TOLERANCE}
            cache[key] = entry
            _save_cache(cache)
        model.embedding_input_checked = bool(entry["ok"])
        model.embedding_parity = float(entry["relative_diff"])
    if not model.embedding_input_checked:
        raise LatentLocalError(
            f"{model.name} is a '{model.arch}' model, an architecture latentlocal has no parity test "
            f"for, and feeding its token embeddings as input rows does not reproduce the tokens' "
            f"logits (difference {model.embedding_parity:.3g} of the logit range, tolerance "
            f"{TOLERANCE}): its graph treats input embeddings differently (an input scale, as Gemma 3 "
            "has). soft-thinking and soft-reasoning would feed wrong inputs, so they refuse; cot, sc "
            "and seal work. Please report the architecture"
        )
