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
* **Steering** (:func:`run_seal`). ``alpha * S`` is added at the chosen block only while the token
  being fed is a delimiter inside the reasoning span; or, ``always_on``, for every token, the way
  ``llama-cli --control-vector`` applies an exported file.

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

import math
import os
from collections.abc import Callable
from pathlib import Path

from latentlocal.controlvector import ControlVector, read_manifest
from latentlocal.errors import LatentLocalError
from latentlocal.methods.seal.extract import ExtractConfig, extract, extract_vector, work_dir
from latentlocal.methods.seal.steer import SealConfig, check_vector, default_layer, load_vector, run_seal
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
from latentlocal.methods.spec import MethodSpec, check_positive, opt
from latentlocal.phases import DEFAULT_ANSWER_RESERVE
from latentlocal.sampling import SamplingConfig

__all__ = [
    "CUES",
    "LABELS",
    "ExtractConfig",
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


def _seal_from_args(args) -> Callable:
    path = getattr(args, "vector", None)
    max_tokens = opt(args, "max_tokens", 512)
    check_positive("max_tokens", max_tokens)
    always_on = bool(getattr(args, "always_on", False))
    sampling = SamplingConfig(
        temperature=opt(args, "temperature", 0.0),
        top_k=opt(args, "top_k", 40),
        top_p=opt(args, "top_p", 0.95),
        min_p=opt(args, "min_p", 0.05),
    )

    def config(vector: str | os.PathLike[str]) -> tuple[SealConfig, ControlVector]:
        cv, manifest = load_vector(vector)
        default_alpha = 1.0
        if always_on and manifest and isinstance(manifest.get("recommended_scale"), (int, float)):
            default_alpha = float(manifest["recommended_scale"])
        alpha = float(opt(args, "alpha", default_alpha))
        if not math.isfinite(alpha):
            raise LatentLocalError(f"--alpha must be a finite number, not {alpha}")
        cfg = SealConfig(directions=cv.directions, alpha=alpha, always_on=always_on, max_tokens=max_tokens,
                         sampling=sampling, seed=opt(args, "seed", 0), model_hint=cv.model_hint or None,
                         answer_reserve=opt(args, "answer_reserve", DEFAULT_ANSWER_RESERVE))
        cfg.budget  # noqa: B018 - validates the reserve before the model loads
        return cfg, cv

    chosen = config(path) if path else None  # file problems surface before the model loads

    def runner(engine, q, cancel=None):
        vector = path or vector_for_model(engine.model)
        if vector is None:
            raise LatentLocalError(
                f"--method seal needs --vector FILE, and no vector in {', '.join(map(str, vector_folders()))} "
                f"was made for {engine.model.path.name}: make one with "
                "`latentlocal seal extract --data FILE --out FILE`"
            )
        cfg, cv = chosen or config(vector)
        check_vector(engine, cv.directions, cfg.model_hint)
        if cv.n_layer is not None and cv.n_layer != engine.n_layer:
            raise LatentLocalError(
                f"{vector} was made for a {cv.n_layer}-block model but {engine.model.name} has "
                f"{engine.n_layer}; extract a vector for this model"
            )
        return run_seal(engine, q, cfg, cancel)

    return runner


def _add_seal_flags(g) -> None:
    g.add_argument("--vector", default=None, metavar="FILE",
                   help="SEAL control vector (.gguf from `latentlocal seal extract`; default: the shipped "
                        "or saved vector made for the loaded model, if there is one)")
    g.add_argument("--alpha", type=float, default=None,
                   help="steering strength (default 1; with --always-on the manifest's recommended scale)")
    g.add_argument("--always-on", action="store_true",
                   help="apply the vector to every token, as llama.cpp apps do with --control-vector")


METHODS: list[MethodSpec] = [
    MethodSpec("seal", "SEAL: steer thought delimiters with a vector (--vector FILE)",
               _seal_from_args, _add_seal_flags),
]
