"""Where the TUI looks for and puts control vectors."""

from __future__ import annotations

from pathlib import Path

from latentlocal.methods.seal import vector_folders


def vectors_dir() -> Path:
    """The user's vectors folder, beside the models folder (``.../latentlocal/vectors``)."""
    return vector_folders()[0]


def shipped_vectors_dir() -> Path:
    return vector_folders()[1]


def known_vectors() -> list[str]:
    """Control-vector files in the user's folder, the shipped folder and ./vectors."""
    seen: dict[str, None] = {}
    for folder in (vectors_dir(), shipped_vectors_dir(), Path.cwd() / "vectors"):
        if folder.is_dir():
            for p in sorted(folder.glob("*.gguf")):
                seen.setdefault(str(p), None)
    return list(seen)


def short(path: str | Path) -> str:
    """``~/...`` for paths under the home folder."""
    p = Path(path)
    try:
        return "~/" + str(p.relative_to(Path.home()))
    except ValueError:
        return str(p)
