"""Control vectors in the GGUF layout that llama.cpp loads with ``--control-vector``.

The layout, as llama.cpp's ``common_control_vector_load_one`` and ``llama_adapter_cvec::apply``
read it:

* ``general.architecture = "controlvector"``, ``controlvector.model_hint`` (the model's
  architecture string, e.g. ``"llama"``) and ``controlvector.layer_count``; llama.cpp reads none of
  the latter two, they are for humans and for us.
* One 1-D F32 tensor ``direction.N`` per steered block, all the same width (n_embd). It is added
  to the output of transformer block N, counting blocks from 0. Block 0 cannot be steered: the
  runtime buffer has no slot for it, so llama.cpp rejects any file with a ``direction.0``.
* Blocks without a tensor get zeros.

Files are written atomically (``latentlocal.atomic``: temp file beside it, fsync, ``os.replace``) so an
interrupted extraction never leaves a half-written vector where the runtime would load it. A JSON
manifest (how the vector was made, for which model file) can sit beside it as ``<stem>.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Mapping

import gguf
import numpy as np

from latentlocal.atomic import atomic_path, write_bytes_atomic
from latentlocal.errors import LatentLocalError

__all__ = [
    "ARCH",
    "ControlVector",
    "check_overwritable",
    "export_gguf",
    "import_gguf",
    "manifest_path",
    "read_manifest",
    "save",
    "sha256_file",
    "write_manifest",
]

ARCH = "controlvector"
KEY_MODEL_HINT = f"{ARCH}.model_hint"
KEY_LAYER_COUNT = f"{ARCH}.layer_count"

# Canonical decimal only: llama.cpp's std::stoi would also take "direction.01" or "direction.1x",
# but accepting those would let two tensors name the same block.
_DIRECTION_RE = re.compile(r"direction\.(0|[1-9][0-9]*)")
# llama.cpp parses the index with std::stoi, which throws above INT32_MAX.
_MAX_LAYER = 2**31 - 1
_UINT32_MAX = 2**32 - 1
_HASH_CHUNK = 1 << 20


@dataclass
class ControlVector:
    """Per-block steering directions for one model architecture.

    ``directions`` maps a 0-based block index to a float32 vector of n_embd; block ``il``'s
    vector is added to that block's output. ``n_layer`` is the model's block count when known;
    it only decides what ``controlvector.layer_count`` says and what ``to_buffer`` checks against.
    """

    model_hint: str
    directions: dict[int, np.ndarray]
    n_layer: int | None = None

    def __post_init__(self) -> None:
        # Normalise once here so every consumer (writer, buffer, scaling) sees float32 1-D arrays
        # and plain int keys; layer 0 is tolerated here and refused where it would reach llama.cpp,
        # so a method can build all blocks and drop block 0 before export.
        normalised: dict[int, np.ndarray] = {}
        for layer, vec in self.directions.items():
            if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
                raise LatentLocalError(
                    f"control vector layer key {layer!r} is not an int; key directions by block index"
                )
            layer = int(layer)
            if layer < 0:
                raise LatentLocalError(
                    f"control vector layer {layer} is negative; blocks are numbered from 0"
                )
            arr = np.asarray(vec, dtype=np.float32)
            if arr.ndim != 1:
                raise LatentLocalError(
                    f"direction for layer {layer} has shape {arr.shape}; each direction must be a "
                    "1-D vector of n_embd floats"
                )
            normalised[layer] = np.ascontiguousarray(arr)
        self.directions = normalised
        if self.n_layer is not None:
            if isinstance(self.n_layer, bool) or int(self.n_layer) < 1:
                raise LatentLocalError(
                    f"n_layer={self.n_layer!r} is not a positive block count; pass the model's "
                    "n_layer or None"
                )
            self.n_layer = int(self.n_layer)

    @property
    def layers(self) -> list[int]:
        return sorted(self.directions)

    @property
    def n_embd(self) -> int:
        if not self.directions:
            raise LatentLocalError("control vector has no directions; it has no width (n_embd)")
        widths = {int(v.shape[0]) for v in self.directions.values()}
        if len(widths) != 1:
            detail = ", ".join(f"layer {il}: {self.directions[il].shape[0]}" for il in self.layers)
            raise LatentLocalError(
                f"control vector directions have different widths ({detail}); every direction "
                "must be n_embd long"
            )
        return widths.pop()

    @property
    def layer_count(self) -> int:
        if self.n_layer is not None:
            return self.n_layer
        if not self.directions:
            raise LatentLocalError("control vector has no directions; cannot infer layer_count")
        return max(self.directions) + 1

    def scaled(self, s: float) -> ControlVector:
        """A copy with every direction multiplied by ``s`` (negative flips the steering)."""
        factor = np.float32(s)
        if not np.isfinite(factor):
            raise LatentLocalError(f"scale {s!r} is not a finite float32; pass a finite number")
        return ControlVector(
            model_hint=self.model_hint,
            directions={il: (v * factor).astype(np.float32) for il, v in self.directions.items()},
            n_layer=self.n_layer,
        )

    def to_buffer(self, n_layer: int, n_embd: int) -> np.ndarray:
        """The flat float32 buffer for ``llama_set_adapter_cvec(ctx, data, len, n_embd, ...)``.

        Length ``n_embd * n_layer`` (llama.h: "an n_embd x n_layers buffer starting from
        layer 1"): block ``il``'s direction sits at ``[(il-1)*n_embd : il*n_embd]``. llama.cpp
        copies slots for blocks 1..n_layer-1 only, so the last slot is always zero; the buffer is
        full length anyway because llama.cpp leaves any block whose slot is missing with the
        previously set vector, and zeros here clear it.
        """
        if isinstance(n_layer, bool) or int(n_layer) < 2:
            raise LatentLocalError(
                f"n_layer={n_layer!r}: a model needs at least 2 blocks to be steerable (block 0 "
                "cannot be steered)"
            )
        if isinstance(n_embd, bool) or int(n_embd) < 1:
            raise LatentLocalError(f"n_embd={n_embd!r} is not a positive width")
        n_layer, n_embd = int(n_layer), int(n_embd)
        width = self.n_embd
        if width != n_embd:
            raise LatentLocalError(
                f"control vector is {width} wide but the model's n_embd is {n_embd}; it was made "
                "for a different model, re-extract it for this one"
            )
        if self.n_layer is not None and self.n_layer != n_layer:
            raise LatentLocalError(
                f"control vector was made for a {self.n_layer}-block model but this model has "
                f"{n_layer} blocks; re-extract it for this model"
            )
        if 0 in self.directions:
            raise LatentLocalError(
                "control vector has a direction for block 0, which llama.cpp cannot steer; drop "
                "layer 0 from the directions"
            )
        too_deep = [il for il in self.layers if il >= n_layer]
        if too_deep:
            raise LatentLocalError(
                f"control vector steers block(s) {too_deep} but the model only has blocks "
                f"0..{n_layer - 1}; re-extract it for this model"
            )
        buf = np.zeros(n_layer * n_embd, dtype=np.float32)
        for il, vec in self.directions.items():
            buf[(il - 1) * n_embd : il * n_embd] = vec
        return buf


# --------------------------------------------------------------------------------------------
# GGUF export


def _check_exportable(cv: ControlVector) -> None:
    if not isinstance(cv.model_hint, str) or not cv.model_hint:
        # GGUFWriter.add_string silently drops empty strings, which would write a file with no
        # model_hint key at all.
        raise LatentLocalError(
            "control vector has an empty model_hint; set it to the model's general.architecture "
            "(e.g. 'llama', 'qwen2')"
        )
    if not cv.directions:
        raise LatentLocalError("control vector has no directions; nothing to export")
    if 0 in cv.directions:
        raise LatentLocalError(
            "control vector has a direction for layer 0, but block 0 cannot be steered and "
            "llama.cpp rejects any file with direction.0; drop layer 0 before exporting"
        )
    n_embd = cv.n_embd  # raises on mixed widths
    if n_embd == 0:
        raise LatentLocalError("control vector directions are empty (n_embd 0); nothing to export")
    top = max(cv.directions)
    if top > _MAX_LAYER:
        raise LatentLocalError(f"layer {top} is beyond what llama.cpp can parse; check the layer keys")
    if cv.n_layer is not None and top >= cv.n_layer:
        raise LatentLocalError(
            f"control vector steers block {top} but n_layer is {cv.n_layer} (blocks "
            f"0..{cv.n_layer - 1}); fix n_layer or the layer keys"
        )
    if cv.layer_count > _UINT32_MAX:
        raise LatentLocalError(f"layer_count {cv.layer_count} does not fit in uint32")
    for il in cv.layers:
        if not np.all(np.isfinite(cv.directions[il])):
            raise LatentLocalError(
                f"direction for layer {il} contains NaN or inf; it would corrupt generation, "
                "re-extract it"
            )


def export_gguf(cv: ControlVector, path: str | os.PathLike[str]) -> None:
    """Write ``cv`` as a llama.cpp control-vector GGUF at ``path``, atomically."""
    _check_exportable(cv)
    path = Path(path)
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(tmp, ARCH)
        try:
            writer.add_string(KEY_MODEL_HINT, cv.model_hint)
            writer.add_uint32(KEY_LAYER_COUNT, cv.layer_count)
            for il in cv.layers:
                # Native-order float32: GGUFWriter byte-swaps to little-endian itself when needed.
                writer.add_tensor(f"direction.{il}", np.ascontiguousarray(cv.directions[il], dtype=np.float32))
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.flush()
            for f in writer.fout or []:
                os.fsync(f.fileno())
        finally:
            writer.close()


# --------------------------------------------------------------------------------------------
# GGUF import


def _fail(path: Path, problem: str, fix: str) -> LatentLocalError:
    return LatentLocalError(f"control vector {path}: {problem}; {fix}")


def _string_field(reader: gguf.GGUFReader, key: str) -> str | None | bool:
    """The field's string value, None if absent, False if present with a non-string type."""
    fld = reader.get_field(key)
    if fld is None:
        return None
    if fld.types != [gguf.GGUFValueType.STRING]:
        return False
    return str(fld.contents())


_INT_TYPES = {
    gguf.GGUFValueType.UINT8, gguf.GGUFValueType.INT8, gguf.GGUFValueType.UINT16,
    gguf.GGUFValueType.INT16, gguf.GGUFValueType.UINT32, gguf.GGUFValueType.INT32,
    gguf.GGUFValueType.UINT64, gguf.GGUFValueType.INT64,
}


def _ggml_n_dims(dims: np.ndarray) -> int:
    # Mirrors ggml_n_dims: trailing size-1 dims do not count, so llama.cpp takes [n, 1] as 1-D.
    n = 1
    for i, d in enumerate(dims.tolist()):
        if d > 1:
            n = i + 1
    return n


class _BoundedReader(gguf.GGUFReader):
    # gguf-py slices its memmap without bounds checks, so a read past the end quietly returns a
    # short or empty array. A corrupted array length (e.g. 2**40 uint8 items) then makes it loop
    # and allocate near-forever instead of failing; checking every read turns that into an error.
    def _get(self, offset: int, dtype: Any, count: int = 1, *args: Any, **kwargs: Any) -> Any:
        count = int(count)
        need = int(offset) + np.dtype(dtype).itemsize * count
        if offset < 0 or count < 0 or need > self.data.shape[0]:
            raise ValueError(
                f"reading {count} x {np.dtype(dtype).name} at byte {offset} runs past the end of "
                f"the file ({self.data.shape[0]} bytes)"
            )
        return super()._get(offset, dtype, count, *args, **kwargs)


def _open_reader(path: Path) -> gguf.GGUFReader:
    if not path.exists():
        raise _fail(path, "file not found", "check the path, or extract the vector first")
    if not path.is_file():
        raise _fail(path, "is not a regular file", "pass the path of a .gguf file")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise _fail(path, f"cannot be read ({e.strerror})", "check its permissions") from e
    if magic != b"GGUF":
        raise _fail(path, "is not a GGUF file (bad magic)", "pass a control vector .gguf, or re-export it")
    # A model file passed by mistake: its header says so in milliseconds, where the full reader
    # takes seconds over a large vocabulary (the TUI's Inspect waited on it)
    from latentlocal.gguf_header import GGUFHeader

    arch = None
    with contextlib.suppress(LatentLocalError), GGUFHeader(path) as header:
        arch = header.string("general.architecture")  # a damaged header: the full reader says how
    if isinstance(arch, str) and arch != ARCH:
        raise _fail(path, f"general.architecture is '{arch}', not '{ARCH}'",
                    "this is not a control vector (a model file?); pass a control vector .gguf")
    try:
        return _BoundedReader(path)
    except Exception as e:  # noqa: BLE001
        # GGUFReader has no error type of its own: a damaged file surfaces as ValueError,
        # IndexError, KeyError, UnicodeDecodeError... Any of them from the parser means the bytes
        # are bad, not that latentlocal is.
        raise _fail(
            path, f"is truncated or corrupt ({type(e).__name__}: {e})", "re-export or re-download it"
        ) from e


def _check_data_section(path: Path, reader: gguf.GGUFReader) -> None:
    # gguf-py accepts files that ggml's loader rejects: ggml requires each tensor to start exactly
    # where the previous padded one ends, and reads the whole padded data section, so a file cut
    # inside the final tensor's padding still fails in llama.cpp.
    align = int(reader.alignment)
    expected = 0
    for t in reader.tensors:
        rel = int(t.data_offset) - int(reader.data_offset)
        if rel != expected:
            raise _fail(
                path,
                f"is corrupt (tensor {t.name!r} at data offset {rel}, expected {expected})",
                "re-export it",
            )
        expected += -(-int(t.n_bytes) // align) * align
    size = path.stat().st_size
    if size < int(reader.data_offset) + expected:
        raise _fail(
            path,
            f"is truncated ({size} bytes, tensor data needs {int(reader.data_offset) + expected})",
            "re-export or re-download it",
        )


def _read_file(path: Path) -> tuple[str, int | None, dict[int, np.ndarray]]:
    """Validate the container and every tensor the way llama.cpp's loader does.

    Kept separate from import_gguf so the reader (and its memmap of the file) is unreachable as
    soon as this returns.
    """
    reader = _open_reader(path)
    if reader.byte_order != "I":
        raise _fail(path, "is a byte-swapped (other-endian) GGUF", "re-export it on this machine")

    arch = _string_field(reader, "general.architecture")
    if arch is None or arch is False:
        raise _fail(
            path, "has no general.architecture string",
            f"a control vector must declare general.architecture = '{ARCH}'; re-export it",
        )
    if arch != ARCH:
        raise _fail(
            path, f"general.architecture is '{arch}', not '{ARCH}'",
            "this is not a control vector (a model file?); pass a control vector .gguf",
        )

    hint = _string_field(reader, KEY_MODEL_HINT)
    if hint is False:
        raise _fail(path, f"{KEY_MODEL_HINT} is not a string", "re-export it")

    layer_count: int | None = None
    lc = reader.get_field(KEY_LAYER_COUNT)
    if lc is not None:
        if len(lc.types) != 1 or lc.types[0] not in _INT_TYPES:
            raise _fail(path, f"{KEY_LAYER_COUNT} is not an integer", "re-export it")
        layer_count = int(lc.contents())

    _check_data_section(path, reader)

    directions: dict[int, np.ndarray] = {}
    first: tuple[str, int] | None = None
    for t in reader.tensors:
        m = _DIRECTION_RE.fullmatch(t.name)
        if m is None:
            raise _fail(
                path, f"tensor {t.name!r} is not named direction.N",
                "a control vector may only hold direction.1, direction.2, ... tensors; re-export it",
            )
        layer = int(m.group(1))
        if layer == 0:
            raise _fail(
                path, "has a direction.0 tensor, but block 0 cannot be steered and llama.cpp "
                "rejects the whole file", "re-export it without layer 0",
            )
        if layer > _MAX_LAYER:
            raise _fail(path, f"tensor {t.name!r} has a layer index llama.cpp cannot parse", "re-export it")
        if t.tensor_type != gguf.GGMLQuantizationType.F32:
            raise _fail(
                path, f"tensor {t.name} is {t.tensor_type.name}, not F32",
                "llama.cpp only loads F32 control vectors; re-export it as float32",
            )
        if _ggml_n_dims(t.shape) != 1:
            shape = "x".join(str(d) for d in reversed(t.shape.tolist()))
            raise _fail(
                path, f"tensor {t.name} is not 1-D (shape {shape})",
                "each direction must be a 1-D vector of n_embd floats; re-export it",
            )
        width = int(t.n_elements)
        if width == 0:
            raise _fail(path, f"tensor {t.name} is empty", "re-export it")
        if first is None:
            first = (t.name, width)
        elif width != first[1]:
            raise _fail(
                path, f"inconsistent widths: {t.name} has {width} values but {first[0]} has {first[1]}",
                "every direction must be n_embd long; re-export it",
            )
        # A copy, so the returned arrays do not pin the reader's memmap of the file.
        vec = np.array(t.data, dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(vec)):
            raise _fail(path, f"tensor {t.name} contains NaN or inf", "re-extract the vector")
        directions[layer] = vec

    if not directions:
        raise _fail(path, "has no direction tensors", "there is nothing to steer with; re-export it")
    return hint or "", layer_count, directions


def import_gguf(
    path: str | os.PathLike[str],
    expect_n_embd: int | None = None,
    expect_model_hint: str | None = None,
    expect_n_layer: int | None = None,
) -> ControlVector:
    """Read and validate a control-vector GGUF; every problem is a one-line LatentLocalError.

    Accepts what llama.cpp's loader accepts (and refuses what it refuses), then checks the
    optional expectations against the model it is about to be applied to.
    """
    path = Path(path)
    model_hint, layer_count, directions = _read_file(path)
    n_embd = int(next(iter(directions.values())).shape[0])

    if expect_n_embd is not None and n_embd != expect_n_embd:
        raise _fail(
            path, f"width (n_embd) mismatch: directions have {n_embd} values, the model has {expect_n_embd}",
            "it was made for a different model; use a vector extracted from this model",
        )
    if expect_model_hint is not None and model_hint != expect_model_hint:
        raise _fail(
            path, f"model hint mismatch: made for '{model_hint or '(none)'}', the model is '{expect_model_hint}'",
            "use a vector extracted from this model",
        )
    if expect_n_layer is not None:
        too_deep = sorted(il for il in directions if il >= expect_n_layer)
        if too_deep:
            raise _fail(
                path, f"steers layer(s) {too_deep} but the model has only {expect_n_layer} blocks "
                f"(0..{expect_n_layer - 1})",
                "use a vector extracted from this model",
            )

    # layer_count conventions differ in the wild (repeng writes the number of directions, some
    # tools n_layer-1), so it is only kept as the block count when it is consistent with one.
    top = max(directions)
    n_layer = layer_count if layer_count is not None and layer_count > top else None
    return ControlVector(model_hint=model_hint, directions=directions, n_layer=n_layer)


# --------------------------------------------------------------------------------------------
# manifest and save


def manifest_path(path_of_gguf: str | os.PathLike[str]) -> Path:
    """``vectors/foo.gguf`` -> ``vectors/foo.json``."""
    p = Path(path_of_gguf)
    if p.suffix.lower() == ".json":
        raise LatentLocalError(
            f"{p} ends in .json, so its manifest would overwrite it; give the vector a .gguf name"
        )
    return p.with_suffix(".json")


def _json_default(obj: Any) -> Any:
    # Manifests are built from numpy results (norms, scores) and paths; store them as plain JSON.
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"manifest value of type {type(obj).__name__} is not JSON-serialisable")


def _manifest_bytes(data: Mapping[str, Any]) -> bytes:
    if not isinstance(data, Mapping):
        raise TypeError(f"manifest must be a dict, got {type(data).__name__}")
    text = json.dumps(dict(data), indent=2, ensure_ascii=False, allow_nan=False, default=_json_default)
    return (text + "\n").encode("utf-8")


def write_manifest(path_of_gguf: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    """Write ``data`` as pretty JSON beside the vector, atomically; returns the manifest path."""
    target = manifest_path(path_of_gguf)
    # Serialise before touching the disk so a bad value cannot cost the old manifest.
    payload = _manifest_bytes(data)
    write_bytes_atomic(target, payload)
    return target


def read_manifest(path_of_gguf: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest beside the vector, or None when there is none."""
    target = manifest_path(path_of_gguf)
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise LatentLocalError(f"manifest {target} cannot be read ({e}); fix or delete it") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise LatentLocalError(f"manifest {target} is not valid JSON ({e}); fix or delete it") from e
    if not isinstance(data, dict):
        raise LatentLocalError(f"manifest {target} is not a JSON object; fix or delete it")
    return data


def manifest_section(manifest: dict[str, Any] | None, key: str) -> dict[str, Any]:
    """A table of the manifest ("model", "counts", "elicitation"), or {} where it is missing or,
    in a hand-edited file, of another JSON type."""
    value = manifest.get(key) if isinstance(manifest, dict) else None
    return value if isinstance(value, dict) else {}


def check_overwritable(path: str | os.PathLike[str]) -> None:
    """Refuse a vector's target that exists and is anything but a control vector: ``--out``
    mixed up with ``--model`` replaced a model with a few kilobytes of vector."""
    from latentlocal.gguf_header import GGUFHeader

    p = Path(path)
    if not p.exists():
        return
    if p.is_dir():
        raise LatentLocalError(f"{p} is a folder; pass --out FILE.gguf for the vector")
    with p.open("rb") as f:
        magic = f.read(4)
    arch = None
    if magic == b"GGUF":
        with contextlib.suppress(LatentLocalError), GGUFHeader(p) as h:
            arch = h.string("general.architecture")
    if arch != ARCH:
        what = f"a GGUF of architecture {arch!r} (a model?)" if arch else "not a control vector"
        raise LatentLocalError(f"--out {p} exists and is {what}; a vector is only written over an "
                               "older vector: pick another --out")


def save(cv: ControlVector, path: str | os.PathLike[str], manifest: dict[str, Any] | None = None) -> None:
    """Export the vector and write (or, with ``manifest=None``, remove) its manifest."""
    check_overwritable(path)
    target = manifest_path(path)
    # Validate both halves before writing either, so a bad manifest cannot leave a new vector
    # beside an old manifest.
    payload = _manifest_bytes(manifest) if manifest is not None else None
    export_gguf(cv, path)
    if payload is not None:
        write_bytes_atomic(target, payload)
    else:
        # A manifest left from an earlier save would describe a different vector (other model
        # hash, other settings); none is better than a wrong one.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in chunks so multi-GB model files do not load into memory."""
    p = Path(path)
    h = hashlib.sha256()
    try:
        with open(p, "rb") as f:
            _hash_stream(f, h)
    except FileNotFoundError as e:
        raise LatentLocalError(f"cannot hash {p}: file not found; check the path") from e
    except OSError as e:
        raise LatentLocalError(f"cannot hash {p}: {e.strerror}; check the path and permissions") from e
    return h.hexdigest()


def _hash_stream(f: IO[bytes], h: Any) -> None:
    buf = bytearray(_HASH_CHUNK)
    view = memoryview(buf)
    while True:
        n = f.readinto(buf)
        if not n:
            break
        h.update(view[:n])
