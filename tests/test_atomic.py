"""latentlocal.atomic: a write that fails part-way leaves the old file as it was and no temp file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from latentlocal import atomic


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_failure_mid_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "settings.toml"
    target.write_text("old contents\n")
    with pytest.raises(RuntimeError, match="disk pulled"):
        with atomic.atomic_open(target, "w") as f:
            f.write("new contents, half of th")
            f.flush()  # the half-written bytes are on disk, in the temp file
            raise RuntimeError("disk pulled")
    assert target.read_text() == "old contents\n"
    assert _listing(tmp_path) == ["settings.toml"]


def test_a_failing_rename_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "report.md"
    target.write_bytes(b"old")

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", refuse)
    with pytest.raises(OSError, match="No space"):
        atomic.write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert _listing(tmp_path) == ["report.md"]


def test_a_whole_write_replaces_the_file_with_the_umask_mode(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "vector.json"  # the folder is created
    old = os.umask(0o022)
    try:
        assert atomic.write_text_atomic(target, "é\n") == target
    finally:
        os.umask(old)
    assert target.read_bytes() == "é\n".encode("utf-8")
    # 0644 like a plain open(); tempfile.mkstemp's 0600 would have survived the rename
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert _listing(target.parent) == ["vector.json"]
    atomic.write_text_atomic(target, "second")
    assert target.read_text() == "second"
    assert _listing(target.parent) == ["vector.json"]


def test_atomic_open_refuses_append_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must start with 'w'"):
        with atomic.atomic_open(tmp_path / "log.jsonl", "a"):
            pass
    assert _listing(tmp_path) == []
