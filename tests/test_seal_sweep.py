"""The always-on scale sweep: selection rule, manifest update, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from latentlocal import controlvector as cvio
from latentlocal.errors import LatentLocalError
from latentlocal.eval import seal_sweep


def test_choose_scale_prefers_fewest_tokens_without_accuracy_loss():
    rows = [
        {"scale": 0.0, "accuracy": 0.5, "mean_reasoning_tokens": 100},
        {"scale": 0.5, "accuracy": 0.5, "mean_reasoning_tokens": 80},
        {"scale": 1.0, "accuracy": 0.4, "mean_reasoning_tokens": 50},  # shorter but loses answers
        {"scale": 2.0, "accuracy": 0.6, "mean_reasoning_tokens": 90},
    ]
    assert seal_sweep.choose_scale(rows) == 0.5
    worse = [rows[0], {"scale": 1.0, "accuracy": 0.1, "mean_reasoning_tokens": 10}]
    assert seal_sweep.choose_scale(worse) == 0.0
    longer = [rows[0], {"scale": 0.05, "accuracy": 0.5, "mean_reasoning_tokens": 120}]
    assert seal_sweep.choose_scale(longer) == 0.0  # as accurate but longer: nothing gained
    with pytest.raises(ValueError):
        seal_sweep.choose_scale(rows[1:])


def _vector(path):
    rng = np.random.default_rng(0)
    cv = cvio.ControlVector("llama", {20: (rng.standard_normal(576) * 0.5).astype(np.float32)}, n_layer=30)
    cvio.save(cv, path, {"method": "seal", "layer": 20, "recommended_scale": 0.01})
    return path


def test_sweep_writes_manifest_and_resumes(smol, tmp_path, monkeypatch):
    vec = _vector(tmp_path / "v.gguf")
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"What is {a} + 2?", "answer": f"#### {a + 2}"})
                              for a in (1, 5)) + "\n")
    calls: list[tuple[int, int, bool]] = []
    res = seal_sweep.sweep(smol, vec, data, [0.5], limit=2, max_tokens=12,
                           on_problem=lambda *a: calls.append(a))
    assert calls == [(1, 4, True), (2, 4, True), (3, 4, True), (4, 4, True)]
    assert [r["scale"] for r in res["rows"]] == [0.0, 0.5]
    assert all(r["n"] == 2 for r in res["rows"])
    manifest = cvio.read_manifest(vec)
    assert manifest["recommended_scale"] == res["recommended_scale"] == seal_sweep.choose_scale(res["rows"])
    assert manifest["scale_sweep"]["rows"] == res["rows"] and manifest["layer"] == 20
    lines = seal_sweep.sweep_path(vec).read_text().splitlines()
    assert len(lines) == 4
    # a second run reuses every finished problem: decoding again would fail here
    monkeypatch.setattr(seal_sweep, "run_seal", lambda *a, **k: (_ for _ in ()).throw(AssertionError("rerun")))
    calls.clear()
    again = seal_sweep.sweep(smol, vec, data, [0.5], limit=2, max_tokens=12,
                             on_problem=lambda *a: calls.append(a))
    assert again["rows"] == res["rows"]
    # resumed answers are reported as not new, so the progress rate counts only fresh work
    assert calls == [(1, 4, False), (2, 4, False), (3, 4, False), (4, 4, False)]
    # a changed setting is a new key: those problems are decoded again
    with pytest.raises(AssertionError, match="rerun"):
        seal_sweep.sweep(smol, vec, data, [0.5], limit=2, max_tokens=13)


def test_sweep_needs_a_manifest_and_sane_scales(smol, tmp_path):
    bare = tmp_path / "bare.gguf"
    cvio.export_gguf(cvio.ControlVector("llama", {20: np.ones(576, np.float32)}, n_layer=30), bare)
    with pytest.raises(LatentLocalError, match="no manifest"):
        seal_sweep.sweep(smol, bare, tmp_path / "x.jsonl", [0.5])
    with pytest.raises(LatentLocalError, match="--scales"):
        seal_sweep.parse_scales("0.5,big")
    assert seal_sweep.parse_scales("1,0.5") == [0.0, 0.5, 1.0]
    # no steered scale wrote a "recommended" 0 over an earlier one; 1e30 made the logits NaN and
    # was recommended; nan failed only after the unsteered baseline had run
    for text, says in [("", "no steered scale"), ("0", "no steered scale"), ("1e30", "lie in \\[0, 100\\]"),
                       ("nan", "lie in"), ("-1", "lie in")]:
        with pytest.raises(LatentLocalError, match=says):
            seal_sweep.parse_scales(text)


def test_sweep_command_end_to_end(tmp_path, capsys):
    from latentlocal.cli import main

    vec = _vector(tmp_path / "v.gguf")
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "What is 1 + 2?", "answer": "#### 3"}) + "\n")
    assert main(["seal", "sweep", str(vec), "--data", str(data), "--limit", "1", "--scales", "0.5",
                 "--max-tokens", "8", "--threads", "1", "--n-ctx", "512"]) == 0
    out = capsys.readouterr().out
    assert "recommended scale" in out and "0.5" in out
    assert cvio.read_manifest(vec)["scale_sweep"]["rows"][1]["scale"] == 0.5
    assert main(["seal", "sweep", str(vec), "--data", str(data), "--scales", "x"]) == 2
    assert "--scales" in capsys.readouterr().err
