"""Control-vector GGUF files: the exact layout llama.cpp loads, and clear refusals of bad files."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Callable

import gguf
import numpy as np
import pytest

from latentlocal import controlvector as cvmod
from latentlocal.controlvector import (
    ControlVector,
    export_gguf,
    import_gguf,
    read_manifest,
    save,
    sha256_file,
    write_manifest,
)
from latentlocal.errors import LatentLocalError

N_EMBD = 8


def make_cv(layers=(1, 3, 5), n_embd: int = N_EMBD, hint: str = "llama", n_layer: int | None = 6) -> ControlVector:
    rng = np.random.default_rng(0)
    return ControlVector(
        model_hint=hint,
        directions={il: rng.standard_normal(n_embd).astype(np.float32) for il in layers},
        n_layer=n_layer,
    )


def write_raw(
    path: Path,
    tensors: dict[str, np.ndarray],
    arch: str = "controlvector",
    hint: str | None = "llama",
    layer_count: int | None = 6,
    extra: Callable[[gguf.GGUFWriter], None] | None = None,
    **writer_kw,
) -> Path:
    """Build a (possibly malformed) file with gguf's own writer, bypassing export_gguf's checks."""
    w = gguf.GGUFWriter(path, arch, **writer_kw)
    if hint is not None:
        w.add_string("controlvector.model_hint", hint)
    if layer_count is not None:
        w.add_uint32("controlvector.layer_count", layer_count)
    if extra is not None:
        extra(w)
    for name, arr in tensors.items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def vec(n: int = N_EMBD, fill: float = 1.0, dtype=np.float32) -> np.ndarray:
    return np.full(n, fill, dtype=dtype)


def expect_error(path: Path, *needles: str, **kw) -> str:
    with pytest.raises(LatentLocalError) as ei:
        import_gguf(path, **kw)
    msg = str(ei.value)
    assert "\n" not in msg
    assert str(path) in msg
    for needle in needles:
        assert needle.lower() in msg.lower(), msg
    return msg


# ------------------------------------------------------------------------------------------
# round trip and on-disk layout


def test_round_trip_is_exact(tmp_path):
    cv = make_cv()
    p = tmp_path / "v.gguf"
    export_gguf(cv, p)
    back = import_gguf(p, expect_n_embd=N_EMBD, expect_model_hint="llama", expect_n_layer=6)
    assert back.model_hint == "llama"
    assert back.layers == [1, 3, 5]
    assert back.n_embd == N_EMBD
    assert back.layer_count == 6
    for il in cv.layers:
        assert back.directions[il].dtype == np.float32
        assert np.array_equal(back.directions[il], cv.directions[il])


def test_round_trip_without_n_layer_uses_max_plus_one(tmp_path):
    cv = make_cv(layers=(2, 7), n_layer=None)
    assert cv.layer_count == 8
    p = tmp_path / "v.gguf"
    export_gguf(cv, p)
    back = import_gguf(p)
    assert back.layer_count == 8
    assert back.layers == [2, 7]


def test_raw_file_has_exactly_what_llama_cpp_expects(tmp_path):
    cv = make_cv(hint="qwen2", n_layer=28)
    p = tmp_path / "v.gguf"
    export_gguf(cv, p)
    r = gguf.GGUFReader(p)
    user_keys = {k for k in r.fields if not k.startswith("GGUF.")}
    assert user_keys == {"general.architecture", "controlvector.model_hint", "controlvector.layer_count"}
    arch = r.fields["general.architecture"]
    assert arch.types == [gguf.GGUFValueType.STRING] and arch.contents() == "controlvector"
    hint = r.fields["controlvector.model_hint"]
    assert hint.types == [gguf.GGUFValueType.STRING] and hint.contents() == "qwen2"
    lc = r.fields["controlvector.layer_count"]
    assert lc.types == [gguf.GGUFValueType.UINT32] and lc.contents() == 28
    names = [t.name for t in r.tensors]
    assert names == ["direction.1", "direction.3", "direction.5"]
    assert "direction.0" not in names
    for t in r.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        assert t.shape.tolist() == [N_EMBD]  # one dimension
        il = int(t.name.split(".")[1])
        assert np.array_equal(np.asarray(t.data), cv.directions[il])
    assert r.byte_order == "I"


def test_to_buffer_places_block_il_at_il_minus_one():
    n_layer, n_embd = 6, 4
    cv = ControlVector("llama", {il: np.full(n_embd, float(il), np.float32) for il in (1, 2, 5)})
    buf = cv.to_buffer(n_layer, n_embd)
    assert buf.dtype == np.float32 and buf.shape == (n_layer * n_embd,)
    for il in range(1, n_layer + 1):
        chunk = buf[(il - 1) * n_embd : il * n_embd]
        want = float(il) if il in (1, 2, 5) else 0.0
        assert np.all(chunk == want), (il, chunk)


def test_to_buffer_rejects_mismatches():
    cv = make_cv(layers=(1, 5), n_layer=None)
    with pytest.raises(LatentLocalError, match="n_embd"):
        cv.to_buffer(6, N_EMBD + 1)
    with pytest.raises(LatentLocalError, match=r"block\(s\) \[5\]"):
        cv.to_buffer(5, N_EMBD)
    with pytest.raises(LatentLocalError, match="6-block model"):
        make_cv(n_layer=6).to_buffer(7, N_EMBD)
    with pytest.raises(LatentLocalError, match="block 0"):
        ControlVector("llama", {0: vec()}).to_buffer(4, N_EMBD)


def test_scaled_multiplies_and_keeps_metadata():
    cv = make_cv()
    s = cv.scaled(-2.5)
    assert s.model_hint == cv.model_hint and s.n_layer == cv.n_layer and s.layers == cv.layers
    for il in cv.layers:
        assert s.directions[il].dtype == np.float32
        assert np.array_equal(s.directions[il], cv.directions[il] * np.float32(-2.5))
    assert cv.directions[1] is not s.directions[1]


def test_constructor_normalises_to_float32():
    cv = ControlVector("llama", {np.int64(2): np.arange(4, dtype=np.float64)})
    assert cv.layers == [2] and type(cv.layers[0]) is int
    assert cv.directions[2].dtype == np.float32
    with pytest.raises(LatentLocalError, match="1-D"):
        ControlVector("llama", {1: np.zeros((2, 2))})
    with pytest.raises(LatentLocalError, match="negative"):
        ControlVector("llama", {-1: vec()})


# ------------------------------------------------------------------------------------------
# export refusals


def test_export_refuses_layer_zero(tmp_path):
    p = tmp_path / "v.gguf"
    with pytest.raises(LatentLocalError, match="block 0 cannot be steered"):
        export_gguf(ControlVector("llama", {0: vec(), 1: vec()}), p)
    assert not p.exists()
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_empty_hint_and_no_directions_and_mixed_widths(tmp_path):
    p = tmp_path / "v.gguf"
    with pytest.raises(LatentLocalError, match="model_hint"):
        export_gguf(ControlVector("", {1: vec()}), p)
    with pytest.raises(LatentLocalError, match="no directions"):
        export_gguf(ControlVector("llama", {}), p)
    with pytest.raises(LatentLocalError, match="different widths"):
        export_gguf(ControlVector("llama", {1: vec(4), 2: vec(5)}), p)
    with pytest.raises(LatentLocalError, match="NaN"):
        export_gguf(ControlVector("llama", {1: vec(fill=np.nan)}), p)
    with pytest.raises(LatentLocalError, match="n_layer is 3"):
        export_gguf(ControlVector("llama", {3: vec()}, n_layer=3), p)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------
# import refusals: one test per problem


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.gguf", "not found")


def test_not_a_gguf(tmp_path):
    p = tmp_path / "v.gguf"
    p.write_text("definitely not a gguf file\n")
    expect_error(p, "not a GGUF")


def test_empty_file(tmp_path):
    p = tmp_path / "v.gguf"
    p.write_bytes(b"")
    expect_error(p, "not a GGUF")


@pytest.mark.parametrize("keep", [6, 30, 100, 200, -40, -1])
def test_truncated_file(tmp_path, keep):
    good = tmp_path / "good.gguf"
    export_gguf(make_cv(), good)
    data = good.read_bytes()
    p = tmp_path / "cut.gguf"
    p.write_bytes(data[:keep])
    expect_error(p, "truncated")


def test_truncated_inside_final_padding(tmp_path):
    # gguf-py reads this file happily (the data is all there), but ggml reads the padded data
    # section in full, so llama.cpp would fail on it.
    good = write_raw(tmp_path / "good.gguf", {"direction.1": vec(3)})
    data = good.read_bytes()
    assert len(data) % 32 == 0
    p = tmp_path / "cut.gguf"
    p.write_bytes(data[:-4])
    gguf.GGUFReader(p)  # no complaint from gguf-py
    expect_error(p, "truncated")


def test_corrupt_array_length_fails_fast(tmp_path):
    # Plain gguf.GGUFReader loops ~forever on this (reads past EOF return empty arrays); the
    # bounded reader must turn it into an error. If this test hangs, the guard has regressed.
    assert hasattr(gguf.GGUFReader, "_get")
    good = write_raw(
        tmp_path / "good.gguf", {"direction.1": vec()},
        extra=lambda w: w.add_key_value(
            "controlvector.extra", [1, 2, 3], gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.UINT8
        ),
    )
    data = bytearray(good.read_bytes())
    at = data.find(b"controlvector.extra") + len(b"controlvector.extra")
    assert struct.unpack_from("<IIQ", data, at) == (int(gguf.GGUFValueType.ARRAY), int(gguf.GGUFValueType.UINT8), 3)
    struct.pack_into("<Q", data, at + 8, 2**40)
    p = tmp_path / "bad.gguf"
    p.write_bytes(bytes(data))
    expect_error(p, "truncated or corrupt", "past the end")


def test_wrong_architecture(tmp_path):
    p = write_raw(tmp_path / "v.gguf", {"direction.1": vec()}, arch="llama")
    expect_error(p, "general.architecture is 'llama'", "not a control vector")


def test_a_model_file_is_refused_from_its_header(smol_path, monkeypatch):
    """A model passed as a vector is refused from the GGUF header, without the full reader that
    parses its whole vocabulary (seconds: the TUI's Inspect froze on it)."""
    import latentlocal.controlvector as cvmod

    monkeypatch.setattr(cvmod, "_BoundedReader", lambda path: pytest.fail("the full reader ran"))
    expect_error(smol_path, "general.architecture is 'llama'", "not a control vector")


def test_direction_zero(tmp_path):
    p = write_raw(tmp_path / "v.gguf", {"direction.0": vec(), "direction.1": vec()})
    expect_error(p, "direction.0", "block 0 cannot be steered")


@pytest.mark.parametrize("name", ["blk.1.weight", "direction.x", "direction.01", "direction.-1", "direction"])
def test_tensor_not_named_direction_n(tmp_path, name):
    p = write_raw(tmp_path / "v.gguf", {"direction.1": vec(), name: vec()})
    expect_error(p, f"tensor '{name}' is not named direction.N")


def test_non_f32_tensor(tmp_path):
    p = write_raw(tmp_path / "v.gguf", {"direction.1": vec(dtype=np.float16)})
    expect_error(p, "direction.1 is F16, not F32")


def test_not_1d_tensor(tmp_path):
    p = write_raw(tmp_path / "v.gguf", {"direction.1": np.ones((2, 4), dtype=np.float32)})
    expect_error(p, "direction.1 is not 1-D", "2x4")


def test_trailing_unit_dim_counts_as_1d_like_ggml(tmp_path):
    # ggml_n_dims ignores trailing size-1 dims, so llama.cpp loads a [n_embd, 1] tensor.
    p = write_raw(tmp_path / "v.gguf", {"direction.1": np.ones((1, N_EMBD), dtype=np.float32)})
    assert import_gguf(p).n_embd == N_EMBD


def test_inconsistent_widths(tmp_path):
    p = write_raw(tmp_path / "v.gguf", {"direction.1": vec(8), "direction.2": vec(6)})
    expect_error(p, "inconsistent widths", "direction.2 has 6", "direction.1 has 8")


def test_width_differs_from_expected_n_embd(tmp_path):
    p = write_raw(tmp_path / "v.gguf", {"direction.1": vec(8)})
    expect_error(p, "n_embd", "8 values", "has 16", expect_n_embd=16)


def test_model_hint_mismatch(tmp_path):
    p = write_raw(tmp_path / "v.gguf", {"direction.1": vec()}, hint="gemma3")
    expect_error(p, "model hint mismatch", "'gemma3'", "'llama'", expect_model_hint="llama")


def test_missing_model_hint_is_a_mismatch_when_one_is_expected(tmp_path):
    p = write_raw(tmp_path / "v.gguf", {"direction.1": vec()}, hint=None)
    assert import_gguf(p).model_hint == ""
    expect_error(p, "model hint mismatch", "(none)", expect_model_hint="llama")


def test_layer_beyond_expected_n_layer(tmp_path):
    p = write_raw(tmp_path / "v.gguf", {"direction.1": vec(), "direction.32": vec()}, layer_count=33)
    expect_error(p, "layer(s) [32]", "32 blocks", expect_n_layer=32)


def test_no_directions(tmp_path):
    p = write_raw(tmp_path / "v.gguf", {})
    expect_error(p, "no direction tensors")


def test_non_finite_values(tmp_path):
    p = write_raw(tmp_path / "v.gguf", {"direction.1": vec(fill=np.inf)})
    expect_error(p, "NaN or inf")


def test_big_endian_file(tmp_path):
    p = write_raw(tmp_path / "v.gguf", {"direction.1": vec()}, endianess=gguf.GGUFEndian.BIG)
    expect_error(p, "byte-swapped")


def test_wrongly_typed_metadata(tmp_path):
    p = write_raw(
        tmp_path / "v.gguf", {"direction.1": vec()}, hint=None,
        extra=lambda w: w.add_uint32("controlvector.model_hint", 3),
    )
    expect_error(p, "model_hint is not a string")


def test_foreign_layer_count_conventions_are_tolerated(tmp_path):
    # repeng writes layer_count = number of directions, int32 in some tools.
    p = write_raw(
        tmp_path / "v.gguf", {"direction.4": vec(), "direction.5": vec()}, layer_count=None,
        extra=lambda w: w.add_int32("controlvector.layer_count", 2),
    )
    cv = import_gguf(p)
    assert cv.n_layer is None and cv.layer_count == 6


# ------------------------------------------------------------------------------------------
# atomic writes


def _only_files(d: Path) -> list[str]:
    return sorted(x.name for x in d.iterdir())


@pytest.mark.parametrize("method", ["write_tensors_to_file", "write_kv_data_to_file", "add_tensor"])
def test_failed_export_leaves_old_file_untouched(tmp_path, monkeypatch, method):
    p = tmp_path / "v.gguf"
    export_gguf(make_cv(layers=(1,)), p)
    before = p.read_bytes()

    def boom(self, *a, **kw):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(gguf.GGUFWriter, method, boom)
    with pytest.raises(OSError, match="simulated"):
        export_gguf(make_cv(layers=(2, 3)), p)
    assert p.read_bytes() == before
    assert _only_files(tmp_path) == ["v.gguf"]


def test_failure_midway_through_tensor_data(tmp_path, monkeypatch):
    # Let the writer put real bytes in the temp file, then fail: the half file must not survive.
    p = tmp_path / "v.gguf"
    export_gguf(make_cv(layers=(1,)), p)
    before = p.read_bytes()
    real = gguf.GGUFWriter.write_padding
    calls = {"n": 0}

    def flaky(self, fp, n, align=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, fp, n, align)

    monkeypatch.setattr(gguf.GGUFWriter, "write_padding", flaky)
    with pytest.raises(KeyboardInterrupt):
        export_gguf(make_cv(layers=(1, 2, 3)), p)
    assert p.read_bytes() == before
    assert _only_files(tmp_path) == ["v.gguf"]


def test_failed_replace_cleans_temp(tmp_path, monkeypatch):
    p = tmp_path / "v.gguf"

    def no_replace(src, dst):
        raise PermissionError("simulated")

    monkeypatch.setattr(cvmod.os, "replace", no_replace)
    with pytest.raises(PermissionError):
        export_gguf(make_cv(), p)
    assert _only_files(tmp_path) == []


def test_export_overwrites_and_creates_parent(tmp_path):
    p = tmp_path / "vectors" / "sub" / "v.gguf"
    export_gguf(make_cv(layers=(1,)), p)
    export_gguf(make_cv(layers=(2, 4)), p)
    assert import_gguf(p).layers == [2, 4]
    assert _only_files(p.parent) == ["v.gguf"]


def test_exported_file_mode_follows_umask(tmp_path):
    old = os.umask(0o022)
    try:
        p = tmp_path / "v.gguf"
        export_gguf(make_cv(), p)
    finally:
        os.umask(old)
    assert (p.stat().st_mode & 0o777) == 0o644


# ------------------------------------------------------------------------------------------
# manifest, save, hashing


def test_manifest_round_trip(tmp_path):
    p = tmp_path / "vectors" / "foo.gguf"
    data = {
        "method": "mean_diff",
        "model_sha256": "ab" * 32,
        "layers": [1, 2, 3],
        "norm": np.float32(1.5),
        "nested": {"prompts": 12, "note": "é"},
    }
    mp = write_manifest(p, data)
    assert mp == tmp_path / "vectors" / "foo.json"
    text = mp.read_text(encoding="utf-8")
    assert text.endswith("\n") and "\n  " in text  # pretty-printed
    back = read_manifest(p)
    assert back == {**data, "norm": 1.5}
    assert read_manifest(tmp_path / "vectors" / "other.gguf") is None


def test_manifest_failed_serialisation_keeps_old(tmp_path):
    p = tmp_path / "foo.gguf"
    write_manifest(p, {"a": 1})
    with pytest.raises(TypeError):
        write_manifest(p, {"a": object()})
    assert read_manifest(p) == {"a": 1}
    assert _only_files(tmp_path) == ["foo.json"]


def test_read_manifest_rejects_garbage(tmp_path):
    (tmp_path / "foo.json").write_text("{not json")
    with pytest.raises(LatentLocalError, match="not valid JSON"):
        read_manifest(tmp_path / "foo.gguf")
    (tmp_path / "foo.json").write_text("[1, 2]")
    with pytest.raises(LatentLocalError, match="not a JSON object"):
        read_manifest(tmp_path / "foo.gguf")


def test_manifest_refuses_json_named_vector(tmp_path):
    with pytest.raises(LatentLocalError, match=".json"):
        write_manifest(tmp_path / "foo.json", {})


def test_save_writes_both_and_none_removes_stale_manifest(tmp_path):
    p = tmp_path / "foo.gguf"
    cv = make_cv()
    save(cv, p, {"method": "pca"})
    assert import_gguf(p).layers == cv.layers
    assert read_manifest(p) == {"method": "pca"}
    save(cv.scaled(2.0), p, None)
    assert read_manifest(p) is None
    assert _only_files(tmp_path) == ["foo.gguf"]


def test_save_writes_over_an_older_vector_only(tmp_path, smol_path):
    # --out mixed up with --model replaced the model with a vector of a few kilobytes
    model = tmp_path / "model.gguf"
    model.write_bytes(smol_path.read_bytes())
    with pytest.raises(LatentLocalError, match="architecture 'llama' \\(a model\\?\\).*another --out"):
        save(make_cv(), model, {"method": "pca"})
    assert model.read_bytes() == smol_path.read_bytes()
    notes = tmp_path / "notes.gguf"
    notes.write_text("my notes")
    with pytest.raises(LatentLocalError, match="not a control vector"):
        save(make_cv(), notes)
    assert notes.read_text() == "my notes"
    older = tmp_path / "v.gguf"
    save(make_cv(), older)
    save(make_cv().scaled(3.0), older)  # re-extracting over one's own vector is fine
    assert import_gguf(older).layers == make_cv().layers


def test_save_with_bad_manifest_writes_nothing(tmp_path):
    p = tmp_path / "foo.gguf"
    with pytest.raises(TypeError):
        save(make_cv(), p, {"x": object()})
    assert _only_files(tmp_path) == []


def test_sha256_file_streams(tmp_path, monkeypatch):
    monkeypatch.setattr(cvmod, "_HASH_CHUNK", 7)
    p = tmp_path / "model.gguf"
    blob = os.urandom(1000)
    p.write_bytes(blob)
    assert sha256_file(p) == hashlib.sha256(blob).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()
    with pytest.raises(LatentLocalError, match="not found"):
        sha256_file(tmp_path / "missing.gguf")


def test_manifest_json_is_plain(tmp_path):
    p = tmp_path / "foo.gguf"
    write_manifest(p, {"k": [1, 2]})
    assert json.loads((tmp_path / "foo.json").read_text()) == {"k": [1, 2]}
