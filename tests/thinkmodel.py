"""A think-token test model: the bundled SmolLM2 with two unused special tokens renamed.

No reasoning model ships offline, so tests build one: the GGUF is copied through the ``gguf``
package's reader and writer, with ``<gh_stars>`` and ``<issue_start>`` (ids 7 and 8, never used by
an instruction model) renamed ``<think>`` and ``</think>`` and typed user-defined, as Qwen3's
vocabulary types them. Weights are untouched, so the model never closes its thinking by itself:
that is what the tests need, to exercise budgets, forced ``</think>``, end-of-generation inside
thinking, and answers after thinking.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter, TokenType

from latentlocal.atomic import atomic_path

THINK_IDS = {7: "<think>", 8: "</think>"}
# bump when the file written below changes, so a stale cached copy is rebuilt
VERSION = 1


def _cache_dir() -> Path:
    env = os.environ.get("LATENTLOCAL_TEST_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "latentlocal-test"


def build_think_model(src: Path, dst: Path, arch: str | None = None) -> Path:
    """Copy ``src`` to ``dst`` with ``THINK_IDS`` renamed (and ``arch`` as the architecture name
    when given, for tests of unknown architectures; the file then only loads through our reader)."""
    reader = GGUFReader(str(src))
    src_arch = reader.get_field("general.architecture").contents()
    # A unique temp name: several test runs may build the same cached copy at once.
    with atomic_path(dst) as tmp:
        writer = GGUFWriter(str(tmp), arch=arch or src_arch, endianess=reader.endianess)
        for field in reader.fields.values():
            name = field.name
            if name.startswith("GGUF.") or name == "general.architecture":
                continue  # the writer writes these itself
            value = field.contents()
            if name == "tokenizer.ggml.tokens":
                value = list(value)
                for i, text in THINK_IDS.items():
                    value[i] = text
            elif name == "tokenizer.ggml.token_type":
                value = list(value)
                for i in THINK_IDS:
                    value[i] = int(TokenType.USER_DEFINED)
            if arch and name.startswith(src_arch + "."):
                name = arch + name[len(src_arch):]
            kind = field.types[0]
            sub = field.types[-1] if kind == GGUFValueType.ARRAY else None
            writer.add_key_value(name, value, kind, sub_type=sub)
        for t in reader.tensors:
            writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in reader.tensors:
            writer.write_tensor_data(np.asarray(t.data))
        writer.close()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    return dst


def think_model_path(src: Path) -> Path:
    """The cached think-token copy of ``src`` (built once per source file and VERSION)."""
    st = src.stat()
    key = hashlib.sha256(f"{src.resolve()}:{st.st_size}:{st.st_mtime_ns}:{VERSION}".encode()).hexdigest()[:12]
    dst = _cache_dir() / f"think-{src.stem}-{key}.gguf"
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        build_think_model(src, dst)
    return dst
