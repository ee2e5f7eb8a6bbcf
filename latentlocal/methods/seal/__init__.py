"""SEAL: steer thought delimiters in latent space to cut reflection and transition thoughts.

Three parts, each usable on its own:

* **Thoughts.** The reasoning span (inside ``<think>...</think>`` for thinking models, the text
  before the answer marker otherwise) is split at delimiter tokens and every thought is labelled
  reflection / transition / execution with the paper's keyword rules (:func:`label_thought`).
* **Extraction** (:func:`extract`). Traces are generated in the caller's (plain) context; each
  finished trace is then re-decoded once, as one batched prefill, in a capture sibling that reads
  the residual stream at the delimiter token preceding every thought. The vector is
  ``S = mean(execution) - mean(reflection and transition pooled)``, unnormalised. Traces and
  states are saved as they are produced, so an interrupted run resumes where it stopped.
* **Steering** (:func:`run_seal`, :class:`SealChain`). ``alpha * S`` is added at the chosen block
  only while the token being fed is a delimiter inside the reasoning span; or, ``always_on``, for
  every token, the way ``llama-cli --control-vector`` applies an exported file. ``bench --batch``
  decodes delimiter-mode SEAL beside other problems: a step's steered feeds get a decode of their
  own with the vector set.

Delimiters. The paper's rule is "a token whose text contains ``\\n\\n``" (Qwen has ``\\n\\n`` and
merged forms such as ``.\\n\\n`` as single tokens). Some vocabularies (SmolLM2's, for one) write a
blank line as two ``\\n`` tokens, where that rule would find nothing; so a token also counts when it
*completes* a blank line: it starts with ``\\n`` and the text before it ends with ``\\n``. On a
vocabulary with merged tokens this reduces to the paper's rule.

Layers. ``direction.N`` in a control-vector file is added to the output of block N (0-based),
which is llama.cpp's ``l_out-N`` and Hugging Face's ``hidden_states[N + 1]``. The paper's "layer 20"
on 28-block Qwen models is ``hidden_states[20]`` = block 19; other depths are mapped
proportionally by :func:`default_layer`. ``tests/test_seal.py`` pins the mapping by capture.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from latentlocal.controlvector import ControlVector, read_manifest
from latentlocal.errors import LatentLocalError
from latentlocal.methods.seal.extract import ExtractConfig, extract, extract_vector, work_dir
from latentlocal.methods.chain import ChainBuilder
from latentlocal.methods.cot import prompt_tokens
from latentlocal.methods.seal.steer import (
    SealChain,
    SealConfig,
    check_vector,
    default_layer,
    load_vector,
    run_seal,
)
from latentlocal.methods.seal.thoughts import (
    CUES,
    LABELS,
    ThoughtSpan,
    ThoughtSplitter,
    count_labels,
    is_delimiter,
    label_thought,
    reasoning_length,
    segment_thoughts,
)
from latentlocal.methods.spec import MethodSpec

__all__ = [
    "CUES",
    "LABELS",
    "ExtractConfig",
    "SealChain",
    "SealConfig",
    "ThoughtSpan",
    "ThoughtSplitter",
    "count_labels",
    "default_layer",
    "extract",
    "extract_vector",
    "is_delimiter",
    "label_thought",
    "load_vector",
    "reasoning_length",
    "run_seal",
    "segment_thoughts",
    "work_dir",
]


def vector_folders() -> list[Path]:
    """Where SEAL vectors are looked up by model: the user's vectors folder (beside the models
    folder) and the vectors shipped with latentlocal."""
    from latentlocal.models import models_dir

    shipped = Path(__file__).resolve().parents[3] / "vectors"
    return [models_dir().parent / "vectors", shipped]


def vector_for_model(model) -> Path | None:  # model: latentlocal.engine.Model
    """A vector whose manifest names this model file (same size, architecture and width)."""
    for folder in vector_folders():
        for path in sorted(folder.glob("*.gguf")) if folder.is_dir() else ():
            try:
                info = (read_manifest(path) or {}).get("model") or {}
            except LatentLocalError:
                continue
            if (info.get("size") == model.size_bytes and info.get("arch") == model.arch
                    and info.get("n_embd") == model.n_embd):
                return path
    return None


def _with_vector(cfg: SealConfig, vector: str | os.PathLike[str]) -> tuple[SealConfig, ControlVector]:
    """``cfg`` with the directions read from ``vector`` (and, always-on with no ``alpha``, the
    manifest's recommended scale)."""
    cv, manifest = load_vector(vector)
    alpha = cfg.alpha
    if alpha is None and cfg.always_on and manifest and isinstance(manifest.get("recommended_scale"), (int, float)):
        alpha = float(manifest["recommended_scale"])
    return dataclasses.replace(cfg, directions=cv.directions, alpha=alpha, vector=str(vector),
                               model_hint=cv.model_hint or None), cv


def _resolver(cfg: SealConfig) -> Callable[[Any], SealConfig]:
    """``engine -> cfg`` with the directions of the given vector, or of the one made for the
    engine's model, checked against it."""
    # one resolved config per vector file, so the chains of a batch share its steering
    read: dict[str, tuple[SealConfig, ControlVector]] = {}
    if cfg.vector:
        read[str(cfg.vector)] = _with_vector(cfg, cfg.vector)  # file problems surface before the model loads

    def resolve(engine) -> SealConfig:
        vector = cfg.vector or vector_for_model(engine.model)
        if vector is None:
            raise LatentLocalError(
                f"--method seal needs --vector FILE, and no vector in {', '.join(map(str, vector_folders()))} "
                f"was made for {engine.model.path.name}: make one with "
                "`latentlocal seal extract --data FILE --out FILE`"
            )
        if str(vector) not in read:
            read[str(vector)] = _with_vector(cfg, vector)
        run_cfg, cv = read[str(vector)]
        check_vector(engine, cv.directions, run_cfg.model_hint)
        if cv.n_layer is not None and cv.n_layer != engine.n_layer:
            raise LatentLocalError(
                f"{vector} was made for a {cv.n_layer}-block model but {engine.model.name} has "
                f"{engine.n_layer}; extract a vector for this model"
            )
        return run_cfg

    return resolve


def _seal_runner(cfg: SealConfig) -> Callable:
    resolve = _resolver(cfg)
    return lambda engine, q, cancel=None: run_seal(engine, q, resolve(engine), cancel)


def _seal_chains(cfg: SealConfig) -> ChainBuilder:
    if cfg.always_on:
        raise LatentLocalError(
            "seal --always-on cannot decode several problems at once: it steers the prompt too, "
            "and a batch prefills its prompts together with the other problems'")
    resolve = _resolver(cfg)

    def build(engine, q: str) -> SealChain:
        run_cfg = resolve(engine)
        return SealChain(engine, run_cfg, prompt_tokens(engine, q, run_cfg.system))

    return build


METHODS: list[MethodSpec] = [
    MethodSpec("seal", "SEAL", "SEAL: steer thought delimiters with a vector (--vector FILE)", SealConfig,
               _seal_runner, chain=_seal_chains),
]
