"""Where the TUI looks for and puts control vectors."""

from __future__ import annotations

from pathlib import Path

import latentlocal
from latentlocal.models import models_dir


def vectors_dir() -> Path:
    """The user's vectors folder, beside the models folder (``.../latentlocal/vectors``)."""
    return models_dir().parent / "vectors"


def shipped_vectors_dir() -> Path:
    return Path(latentlocal.__file__).resolve().parent.parent / "vectors"


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
