"""Atomic file writes: the new content goes to a temp file beside the target, is fsynced, and
replaces the target with ``os.replace`` (then the directory is fsynced), so a reader, a crash or
an interrupted run sees either the old file or the whole new one, never half of it, and a failed
write leaves no temp file behind.

Every file latentlocal writes in one piece (vectors and manifests, reports, the TUI's settings,
SEAL work-folder files, the embedding-parity cache, installed models) goes through here.
Append-only JSONL logs are not rewritten this way; see ``latentlocal.jsonl``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import IO, Iterator

from latentlocal.errors import LatentLocalError

__all__ = ["atomic_path", "atomic_open", "write_bytes_atomic", "write_text_atomic"]


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not every platform lets you open a directory (Windows).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _new_temp_path(target: Path) -> Path:
    # Created by hand rather than with tempfile.mkstemp: mkstemp makes the file 0600, and that
    # mode would survive os.replace; 0o666 here lets the umask decide like a plain open() would.
    # Dot-prefixed and in the target's directory so os.replace is a same-filesystem rename.
    for _ in range(100):
        candidate = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise LatentLocalError(f"could not create a temporary file beside {target}; check the directory")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``path`` (its folder is created); on clean exit the temp file
    replaces ``path``, on any exception it is removed and ``path`` is left as it was.

    For writers that open the file themselves (a GGUF writer); the body must fsync what it
    wrote before returning. ``atomic_open`` does that for a plain file object.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """``open(path, mode)`` for writing, atomically: the file object writes a temp file that is
    flushed, fsynced and moved onto ``path`` when the block ends without an exception."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes a whole file; mode {mode!r} must start with 'w'")
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically; returns the path."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Replace ``path`` with ``text`` atomically; returns the path."""
    return write_bytes_atomic(path, text.encode(encoding))
