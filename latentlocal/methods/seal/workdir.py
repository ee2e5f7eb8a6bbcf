"""The extraction work folder: settings, finished traces and captured states, kept as they are
produced so that an interrupted extraction resumes where it stopped."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from latentlocal.atomic import atomic_open, write_text_atomic
from latentlocal.errors import LatentLocalError
from latentlocal.jsonl import append_object, read_objects

WORK_VERSION = 1


def work_dir(out: str | os.PathLike[str]) -> Path:
    """Where traces and captured states are kept: ``vectors/x.gguf`` -> ``vectors/x.work/``."""
    p = Path(out)
    return p.with_name(p.stem + ".work")


class WorkFolder:
    """The work folder: settings.json, traces.jsonl (one line per finished problem), states/."""

    def __init__(self, root: Path, settings: dict[str, Any], layer: int) -> None:
        self.root = root
        self.states = root / "states"
        self.traces_path = root / "traces.jsonl"
        settings_path = root / "settings.json"
        if settings_path.exists():
            try:
                old = json.loads(settings_path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                raise LatentLocalError(f"{settings_path} is unreadable ({e}); delete {root} to start over") from e
            old_layers = old.get("captured_layers", [])
            want = {k: v for k, v in settings.items() if k != "captured_layers"}
            have = {k: v for k, v in old.items() if k != "captured_layers"}
            diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
            if diff:
                raise LatentLocalError(
                    f"work folder {root} holds traces made with other settings ({', '.join(diff)}); "
                    "rerun with the same settings to resume, or delete the folder / pick another --out"
                )
            if layer not in old_layers:
                raise LatentLocalError(
                    f"work folder {root} captured blocks {old_layers}, not {layer}; pick one of those "
                    "with --layer, or delete the folder (extract with --all-layers to choose later)"
                )
            self.layers = list(old_layers)
        else:
            self.states.mkdir(parents=True, exist_ok=True)
            write_text_atomic(settings_path, json.dumps(settings, indent=2) + "\n")
            self.layers = list(settings["captured_layers"])
        self.states.mkdir(parents=True, exist_ok=True)

    def load(self) -> dict[str, dict[str, Any]]:
        """Finished traces by problem id (a torn last line from a crash is ignored)."""
        done: dict[str, dict[str, Any]] = {}
        if not self.traces_path.exists():
            return done
        fix = "delete that line to redo its problem"
        for _, rec in read_objects(self.traces_path, fix=fix, torn_tail_ok=True):
            if (self.root / rec.get("states", "")).is_file():
                done[rec["id"]] = rec
        return done

    def add(self, rec: dict[str, Any], states: np.ndarray) -> None:
        name = f"states/{rec['k']:06d}.npy"
        target = self.root / name
        with atomic_open(target, "wb") as f:
            np.save(f, states)
        rec["states"] = name
        append_object(self.traces_path, rec)

    def states_of(self, rec: dict[str, Any]) -> np.ndarray:
        return np.load(self.root / rec["states"])
