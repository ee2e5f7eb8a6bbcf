"""JSONL files, one JSON object a line: datasets, ``results.jsonl``, SEAL work-folder traces and
sweep logs. One reader (blank lines skipped, a bad line named by file:line and what is wrong) and
one durable append (fsynced, and never glued onto a line a crash cut short).

Logs written by ``append_object`` may end in a line torn by a kill mid-write; readers of those
pass ``torn_tail_ok=True`` so that line is dropped (its record simply is not done) while a bad
line anywhere else is still an error, because silently skipping finished work would bias what
is computed from it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from latentlocal.errors import LatentLocalError

__all__ = ["read_objects", "append_object"]


def read_objects(
    path: str | os.PathLike[str],
    fix: str = "each line must be one JSON object",
    torn_tail_ok: bool = False,
) -> list[tuple[int, dict[str, Any]]]:
    """``(1-based line number, object)`` for each non-blank line of ``path``.

    A line that is not UTF-8, not JSON or not an object raises ``LatentLocalError`` naming
    ``path:line`` and the problem, then ``fix`` (what the user should do). With ``torn_tail_ok``
    the last non-blank line is dropped instead when it does not parse.
    """
    path = Path(path)
    if not path.exists():
        raise LatentLocalError(f"{path} not found; check the path")
    if not path.is_file():
        raise LatentLocalError(f"{path} is not a file; pass a .jsonl file")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise LatentLocalError(f"cannot read {path}: {err.strerror}; check its permissions") from err
    # a byte-order mark (Windows editors write one) is no part of the first object
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    numbered = [(i + 1, line) for i, line in enumerate(raw.split(b"\n")) if line.strip()]
    out: list[tuple[int, dict[str, Any]]] = []
    for pos, (lineno, line) in enumerate(numbered):
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as err:
            if torn_tail_ok and pos == len(numbered) - 1:
                break  # cut inside a multi-byte character by a kill mid-write
            raise LatentLocalError(
                f"{where}: not UTF-8 text ({err.reason} at byte {err.start}); convert the file to UTF-8"
            ) from err
        except json.JSONDecodeError as err:
            if torn_tail_ok and pos == len(numbered) - 1:
                break  # the tail of a killed run
            raise LatentLocalError(f"{where}: bad JSON ({err.msg}, column {err.colno}); {fix}") from err
        if not isinstance(obj, dict):
            raise LatentLocalError(f"{where}: expected a JSON object, got {type(obj).__name__}; {fix}")
        out.append((lineno, obj))
    return out


def _drop_partial_tail(path: Path) -> None:
    """Make the file end at a line boundary before appending to it.

    A kill mid-write leaves a partial last line; appending after it would glue the next record
    onto it and turn a harmless truncated tail into a corrupt middle line.
    """
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        pos, cut = size, 0
        while pos > 0:
            start = max(0, pos - 65536)
            f.seek(start)
            idx = f.read(pos - start).rfind(b"\n")
            if idx >= 0:
                cut = start + idx + 1
                break
            pos = start
        f.seek(cut)
        tail = f.read()
        try:
            complete = isinstance(json.loads(tail.decode("utf-8")), dict)
        except (UnicodeDecodeError, json.JSONDecodeError):
            complete = False
        if complete:
            # A whole record that only lacks its newline (hand-edited file): keep it.
            f.seek(size)
            f.write(b"\n")
        else:
            f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays (token counts, scores) are common in records; store them as plain
    # numbers and lists.
    if hasattr(obj, "item") and getattr(obj, "ndim", 0) == 0:
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def append_object(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append ``record`` as one JSON line, flushed and fsynced so a killed run keeps finished
    work; a partial last line left by an earlier kill is removed first."""
    path = Path(path)
    # Serialised before the file is touched, so a value that cannot be written costs nothing.
    line = (json.dumps(record, ensure_ascii=False, default=_json_default) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        _drop_partial_tail(path)
    with open(path, "ab") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())
