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

import json
import math
import os
import threading
import time
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latentlocal.controlvector import ControlVector, import_gguf, read_manifest, save, sha256_file
from latentlocal.engine import Engine, Model
from latentlocal.errors import LatentLocalError
from latentlocal.eval.answers import extract_answer
from latentlocal.events import Event, PhaseChange, Progress, Summary, Thought, Token
from latentlocal.markers import MarkerWatch
from latentlocal.methods.cot import _Stream, prompt_tokens
from latentlocal.models import ANSWER_MARKER, COT_SYSTEM, reasoning_format
from latentlocal.sampling import SamplingConfig, sample_token

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

# ---------------------------------------------------------------------------------------------
# thoughts: delimiters, labels, segmentation
# ---------------------------------------------------------------------------------------------

LABELS = ("execution", "reflection", "transition")
REFLECTION_START = "wait"
REFLECTION_WORDS = ("verify", "make sure", "hold on", "think again", "'s correct", "'s incorrect",
                    "let me check", "seems right")
TRANSITION_START = "alternatively"
TRANSITION_WORDS = ("another way", "approach", "method", "solution", "strategy", "technique")

# the cue forced at a delimiter by --elicit cue, and the label the thought then gets
CUES = {"reflection": "Wait,", "transition": "Alternatively,"}


def label_thought(text: str) -> str:
    """The paper's rules, case-insensitive, reflection checked first, execution otherwise."""
    t = text.strip().lower().replace("\u2019", "'")
    if t.startswith(REFLECTION_START) or any(w in t for w in REFLECTION_WORDS):
        return "reflection"
    if t.startswith(TRANSITION_START) or any(w in t for w in TRANSITION_WORDS):
        return "transition"
    return "execution"


def _bytes(piece: bytes | str) -> bytes:
    return piece.encode("utf-8") if isinstance(piece, str) else piece


def is_delimiter(piece: bytes | str, before: bytes | str = b"") -> bool:
    """Whether a token ends a thought: its text contains a blank line, or completes one.

    ``before`` is the text that precedes the token inside the reasoning span (only its last
    byte matters).
    """
    p, b = _bytes(piece), _bytes(before)
    return b"\n\n" in p or (p.startswith(b"\n") and b.endswith(b"\n"))


@dataclass(frozen=True)
class ThoughtSpan:
    """One thought of a reasoning span; token indices count from the span's first token.

    ``delimiter`` is the index of the delimiter token right before the thought (None for the
    first thought); ``end`` is exclusive and includes the delimiter that closes the thought.
    """

    index: int
    text: str
    label: str
    start: int
    end: int
    delimiter: int | None
    cue: str | None = None


class ThoughtSplitter:
    """Incremental segmentation: feed the span's tokens one at a time, get thoughts as they end.

    The same code segments live generation (steering) and finished traces (extraction), so both
    see the same thoughts.
    """

    def __init__(self) -> None:
        self.thoughts: list[ThoughtSpan] = []
        self._n = 0
        self._last = b""
        self._buf = b""
        self._start = 0
        self._delim: int | None = None
        self._cue: str | None = None
        self._cue_at: int | None = None

    @property
    def n_tokens(self) -> int:
        return self._n

    @property
    def last_delimiter(self) -> int | None:
        return self._delim

    @property
    def current_text(self) -> str:
        return self._buf.decode("utf-8", errors="replace")

    def push(self, piece: bytes | str, cue: str | None = None) -> tuple[bool, ThoughtSpan | None]:
        """Add one token; ``cue`` labels the thought this token starts (forced cue).

        Returns (is the token a delimiter, the thought it closed or None).
        """
        p = _bytes(piece)
        i = self._n
        self._n += 1
        delim = is_delimiter(p, self._last)
        if p:
            self._last = p[-1:]
        if cue is not None:
            self._cue, self._cue_at = cue, i
        if not delim:
            self._buf += p
            return False, None
        # text after the token's last newline belongs to the next thought (e.g. "\n\nThe")
        cut = p.rfind(b"\n") + 1
        self._buf += p[:cut]
        closed = self._close(end=i + 1)
        self._buf = p[cut:]
        self._delim = i
        self._start = i + 1
        return True, closed

    def finish(self, tail: str | None = None) -> ThoughtSpan | None:
        """Close the last thought at the end of the span; ``tail`` replaces its text if given."""
        if tail is not None:
            self._buf = tail.encode("utf-8")
        closed = self._close(end=self._n)
        self._buf = b""
        self._start = self._n
        return closed

    def _close(self, end: int) -> ThoughtSpan | None:
        text = self._buf.decode("utf-8", errors="replace").strip()
        if not text:
            return None  # consecutive delimiters: the next thought keeps the latest one
        cue = self._cue if self._cue_at is not None and self._cue_at >= self._start else None
        span = ThoughtSpan(
            index=len(self.thoughts),
            text=text,
            label=cue or label_thought(text),
            start=self._start,
            end=end,
            delimiter=self._delim,
            cue=cue,
        )
        self.thoughts.append(span)
        self._cue, self._cue_at = None, None
        return span


def segment_thoughts(
    pieces: Sequence[bytes | str], cues: Mapping[int, str] | None = None
) -> list[ThoughtSpan]:
    """Split a reasoning span, given as token texts, into labelled thoughts.

    ``cues`` maps the index of a token that starts a forced cue to the label of its thought.
    """
    sp = ThoughtSplitter()
    cues = cues or {}
    for i, p in enumerate(pieces):
        sp.push(p, cues.get(i))
    sp.finish()
    return sp.thoughts


def count_labels(thoughts: Iterable[ThoughtSpan | str]) -> dict[str, int]:
    out = dict.fromkeys(LABELS, 0)
    for t in thoughts:
        out[t if isinstance(t, str) else t.label] += 1
    return out


def reasoning_length(model: Model, tokens: Sequence[int], marker: str = ANSWER_MARKER) -> int:
    """How many leading generated tokens form the reasoning span.

    Thinking models: the tokens before ``</think>``. Others: the tokens that end before the
    answer marker starts (case-insensitive). All of them when the end is never reached.
    """
    fmt = reasoning_format(model)
    if fmt.native:
        for i, t in enumerate(tokens):
            if t == fmt.think_end_token:
                return i
        return len(tokens)
    pieces = [model.piece(t) for t in tokens]
    at = b"".join(pieces).lower().find(marker.lower().encode("utf-8"))
    if at < 0:
        return len(tokens)
    end = 0
    for i, p in enumerate(pieces):
        end += len(p)
        if end > at:
            return i
    return len(tokens)


# ---------------------------------------------------------------------------------------------
# layers
# ---------------------------------------------------------------------------------------------

PAPER_LAYER = 20  # Hugging Face hidden_states index used by the paper
PAPER_BLOCKS = 28  # blocks of DeepSeek-R1-Distill-Qwen-1.5B / 7B


def default_layer(n_layer: int) -> int:
    """The paper's relative depth as a 0-based block (= ``direction.N`` = ``l_out-N``).

    ``hidden_states[20]`` of a 28-block model is the output of block 19, so the block is
    ``round(20 / 28 * n_layer) - 1``, kept inside the steerable blocks 1..n_layer-1
    (28 -> 19, 30 -> 20 for SmolLM2-135M, 18 -> 12 for Gemma 3 270M).
    """
    if n_layer < 2:
        raise LatentLocalError(f"a model with {n_layer} block(s) cannot be steered (block 0 cannot be)")
    return min(n_layer - 1, max(1, round(PAPER_LAYER * n_layer / PAPER_BLOCKS) - 1))


# ---------------------------------------------------------------------------------------------
# steered decoding
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SealConfig:
    """``directions`` maps block -> S (as read from a file); ``alpha`` scales it.

    In ``always_on`` mode the vector is set for the whole generation, prompt included, scaled by
    ``alpha`` (use the manifest's ``recommended_scale``); otherwise it is set only while a
    delimiter inside the reasoning span is fed.
    """

    directions: Mapping[int, np.ndarray]
    alpha: float = 1.0
    always_on: bool = False
    max_tokens: int = 512
    sampling: SamplingConfig = SamplingConfig()
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_after_answer: bool = True
    system: str | None = COT_SYSTEM
    answer_marker: str = ANSWER_MARKER
    model_hint: str | None = None  # checked against the model's architecture when set


def check_vector(engine: Engine, directions: Mapping[int, np.ndarray], model_hint: str | None) -> None:
    """Refuse a vector that does not fit the loaded model, naming what differs."""
    m = engine.model
    if not directions:
        raise LatentLocalError("the SEAL vector has no directions")
    if model_hint and model_hint != m.arch:
        raise LatentLocalError(
            f"the SEAL vector was made for a '{model_hint}' model but {m.name} is '{m.arch}'; "
            "extract one for this model with `latentlocal seal extract`"
        )
    for il, v in directions.items():
        width = np.asarray(v).reshape(-1).shape[0]
        if width != m.n_embd:
            raise LatentLocalError(
                f"the SEAL vector is {width} wide but {m.name} has n_embd {m.n_embd}; it was made "
                "for another model: extract one for this model with `latentlocal seal extract`"
            )
        if not 1 <= il < m.n_layer:
            raise LatentLocalError(
                f"the SEAL vector steers block {il} but {m.name} can be steered at blocks "
                f"1..{m.n_layer - 1}; extract one for this model"
            )


def run_seal(
    engine: Engine,
    question: str,
    cfg: SealConfig,
    cancel: threading.Event | None = None,
    prompt: Sequence[int] | None = None,
) -> Iterator[Event]:
    """Decode one answer with SEAL steering, streamed token by token.

    Yields ``Token`` (phase think/answer), a ``Thought`` each time a thought of the reasoning span
    ends (``steered``: the thought was generated after a steered delimiter, or always-on),
    ``PhaseChange`` when the reasoning span ends, and a ``Summary`` (method ``"seal"``).

    Toggling: the vector is set right before a delimiter token is fed (one token per decode) and
    cleared before the next non-delimiter token, so exactly the delimiter positions are steered;
    a run of delimiters keeps it set. Each change costs one scheduler re-reserve in llama.cpp.
    """
    t0 = time.perf_counter()
    check_vector(engine, cfg.directions, cfg.model_hint)
    directions = {int(k): np.asarray(v, dtype=np.float32) for k, v in cfg.directions.items()}
    model = engine.model
    fmt = reasoning_format(model)
    rng = np.random.default_rng(engine.seed if cfg.seed is None else cfg.seed)
    toks = list(prompt) if prompt is not None else prompt_tokens(engine, question, cfg.system)
    engine.clear()
    engine.set_control_vector(None)
    changes0 = engine.cvec_changes
    watch = None if fmt.native else MarkerWatch(cfg.answer_marker)
    splitter = ThoughtSplitter()
    thoughts: list[ThoughtSpan] = []
    steered_flags: list[bool] = []
    steered_positions: list[int] = []
    opened_by_steered = cfg.always_on
    phase = "think"
    reasoning_tokens = 0
    try:
        if cfg.always_on:
            engine.set_control_vector(directions, cfg.alpha)
        engine.decode_tokens(toks)
        st = _Stream(engine, cfg.stop, cfg.answer_marker if cfg.stop_after_answer else None)
        while st.finish is None:
            if cancel is not None and cancel.is_set():
                st.finish = "cancelled"
                break
            tok, prob = sample_token(engine.logits(-1), cfg.sampling, rng)
            piece = st.push(tok, cfg.max_tokens)
            delim = False
            ended: list[ThoughtSpan] = []
            if phase == "think":
                end_here = (tok == fmt.think_end_token) if fmt.native else watch.push(piece)
                if end_here:
                    tail = None
                    if not fmt.native:
                        text = splitter.current_text + piece
                        tail = text[: text.lower().rfind(cfg.answer_marker.lower())]
                    last = splitter.finish(tail)
                    ended += [last] if last is not None else []
                else:
                    reasoning_tokens += 1
                    delim, closed = splitter.push(model.piece(tok))
                    ended += [closed] if closed is not None else []
                yield Token(text=piece, token_id=tok, phase="think", prob=prob)
                for span in ended:
                    thoughts.append(span)
                    steered_flags.append(opened_by_steered)
                    yield Thought(index=span.index, label=span.label, text=span.text,
                                  steered=opened_by_steered)
                if end_here:
                    phase = "answer"
                    yield PhaseChange(phase="answer", reason="marker")
            else:
                yield Token(text=piece, token_id=tok, phase="answer", prob=prob)
            if st.finish is not None:
                break
            if not cfg.always_on:
                if delim != engine.control_vector_active:
                    engine.set_control_vector(directions if delim else None, cfg.alpha)
                if delim:
                    steered_positions.append(len(st.tokens) - 1)
                    opened_by_steered = True
            engine.decode_tokens([tok])
    finally:
        engine.set_control_vector(None)
    if phase == "think":
        last = splitter.finish()
        if last is not None:
            thoughts.append(last)
            steered_flags.append(opened_by_steered)
            yield Thought(index=last.index, label=last.label, text=last.text, steered=opened_by_steered)
    counts = count_labels(thoughts)
    yield Summary(
        method="seal",
        answer=extract_answer(st.text),
        text=st.text,
        generated_tokens=len(st.tokens),
        elapsed_s=time.perf_counter() - t0,
        finish_reason=st.finish or "done",
        extra={
            "prompt_tokens": len(toks),
            "reasoning_tokens": reasoning_tokens,
            "thoughts": counts,
            "steered_thoughts": count_labels(t for t, s in zip(thoughts, steered_flags) if s),
            "cvec_changes": engine.cvec_changes - changes0,
            "mode": "always-on" if cfg.always_on else "delimiter",
            "alpha": cfg.alpha,
            "layers": sorted(directions),
            "steered_positions": steered_positions,
        },
    )


def load_vector(
    path: str | os.PathLike[str], model: Model | None = None
) -> tuple[ControlVector, dict[str, Any] | None]:
    """Read a SEAL vector and its manifest; with ``model``, validate against it (width, layers, arch)."""
    if model is None:
        cv = import_gguf(path)
    else:
        cv = import_gguf(path, expect_n_embd=model.n_embd, expect_model_hint=model.arch,
                         expect_n_layer=model.n_layer)
    return cv, read_manifest(path)


# ---------------------------------------------------------------------------------------------
# extraction
# ---------------------------------------------------------------------------------------------

WORK_VERSION = 1


@dataclass(frozen=True)
class ExtractConfig:
    """Settings of one extraction. ``layer=None`` picks :func:`default_layer`."""

    data: str | os.PathLike[str]
    out: str | os.PathLike[str]
    limit: int = 50
    offset: int = 0
    layer: int | None = None
    all_layers: bool = False
    elicit: str = "none"  # "none" | "cue"
    cue_rate: float = 0.3
    cue_select: str = "propensity"  # "propensity" | "random"
    max_tokens: int = 512
    sampling: SamplingConfig = SamplingConfig()
    seed: int = 0
    min_thoughts: int = 5
    alpha: float = 1.0
    question_field: str = "question"
    answer_field: str = "answer"
    system: str | None = COT_SYSTEM
    answer_marker: str = ANSWER_MARKER


def work_dir(out: str | os.PathLike[str]) -> Path:
    """Where traces and captured states are kept: ``vectors/x.gguf`` -> ``vectors/x.work/``."""
    p = Path(out)
    return p.with_name(p.stem + ".work")


@dataclass(frozen=True)
class _Question:
    k: int  # 0-based index among the file's rows (seeds the problem's own random stream)
    id: str
    question: str
    gold: str | None


def _load_questions(cfg: ExtractConfig) -> list[_Question]:
    """Rows of a JSONL file that have the question field (an answer field is optional)."""
    path = Path(cfg.data)
    if cfg.limit < 1:
        raise LatentLocalError(f"--limit must be at least 1, not {cfg.limit}")
    if cfg.offset < 0:
        raise LatentLocalError(f"--offset must be 0 or more, not {cfg.offset}")
    if not path.is_file():
        raise LatentLocalError(f"dataset file {path} not found; pass --data FILE.jsonl")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise LatentLocalError(f"cannot read dataset {path} ({e}); pass a UTF-8 JSONL file") from e
    out: list[_Question] = []
    index = -1
    for lineno, line in enumerate(lines):
        if not line.strip():
            continue
        index += 1
        if index < cfg.offset:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise LatentLocalError(f"{path}:{lineno + 1}: bad JSON ({e.msg}); one object per line") from e
        q = row.get(cfg.question_field) if isinstance(row, dict) else None
        if not isinstance(q, str) or not q.strip():
            raise LatentLocalError(
                f"{path}:{lineno + 1}: no non-empty string field {cfg.question_field!r}; "
                "pick it with --question-field"
            )
        gold = row.get(cfg.answer_field)
        if gold is not None:
            from latentlocal.eval.answers import gold_from_gsm8k

            try:
                gold = gold_from_gsm8k(str(gold))
            except LatentLocalError:
                gold = None
        pid = str(row["id"]) if row.get("id") is not None else f"{path.stem}:{lineno}"
        out.append(_Question(k=index, id=pid, question=q, gold=gold))
        if len(out) >= cfg.limit:
            break
    if not out:
        raise LatentLocalError(f"dataset {path} has no questions after offset {cfg.offset}")
    return out


def _capture_layers(cfg: ExtractConfig, n_layer: int) -> tuple[int, list[int]]:
    layer = default_layer(n_layer) if cfg.layer is None else int(cfg.layer)
    if not 1 <= layer < n_layer:
        raise LatentLocalError(
            f"--layer {layer} is out of range: the model can be steered at blocks 1..{n_layer - 1} "
            f"(default {default_layer(n_layer)})"
        )
    layers = list(range(1, n_layer)) if cfg.all_layers else [layer]
    return layer, layers


def _work_settings(cfg: ExtractConfig, model: Model, layers: list[int]) -> dict[str, Any]:
    """What decides the traces and states: a work folder is reused only when these agree."""
    return {
        "version": WORK_VERSION,
        "model": {"file": model.path.name, "name": model.name, "arch": model.arch,
                  "n_layer": model.n_layer, "n_embd": model.n_embd, "size": model.size_bytes},
        "data": str(Path(cfg.data).resolve()),
        "offset": cfg.offset,
        "question_field": cfg.question_field,
        "system": cfg.system,
        "answer_marker": cfg.answer_marker,
        "max_tokens": cfg.max_tokens,
        "sampling": asdict(cfg.sampling),
        "seed": cfg.seed,
        "elicitation": _elicitation(cfg),
        "captured_layers": layers,
    }


def _elicitation(cfg: ExtractConfig) -> dict[str, Any]:
    e: dict[str, Any] = {"mode": cfg.elicit, "temperature": cfg.sampling.temperature}
    if cfg.elicit == "cue":
        e.update(rate=cfg.cue_rate, select=cfg.cue_select, cues=dict(CUES))
    return e


class _Work:
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
            tmp = settings_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, settings_path)
            self.layers = list(settings["captured_layers"])
        self.states.mkdir(parents=True, exist_ok=True)

    def load(self) -> dict[str, dict[str, Any]]:
        """Finished traces by problem id (a torn last line from a crash is ignored)."""
        done: dict[str, dict[str, Any]] = {}
        if not self.traces_path.exists():
            return done
        for line in self.traces_path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and (self.root / rec.get("states", "")).is_file():
                done[rec["id"]] = rec
        return done

    def add(self, rec: dict[str, Any], states: np.ndarray) -> None:
        name = f"states/{rec['k']:06d}.npy"
        target = self.root / name
        tmp = target.with_name(target.name + ".tmp")
        with open(tmp, "wb") as f:
            np.save(f, states)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        rec["states"] = name
        line = json.dumps(rec, ensure_ascii=False) + "\n"
        with open(self.traces_path, "ab+") as f:
            f.seek(0, os.SEEK_END)
            if f.tell():  # a line torn by a crash must not swallow this one
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    line = "\n" + line
            f.write(line.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())

    def states_of(self, rec: dict[str, Any]) -> np.ndarray:
        return np.load(self.root / rec["states"])


class _CuePicker:
    """Decides at which delimiters a cue is forced (``--elicit cue``).

    ``random``: each cue with probability rate/2 at every delimiter. ``propensity`` (default):
    where the model itself leans most towards the cue. The state at a delimiter is read before
    the cue is seen, so cues forced at random delimiters would give two groups of states from the
    same distribution and a vector of noise. Here each cue's log-probability as the next token
    is ranked against the delimiters seen so far (r in [0, 1]) and the cue is forced with
    probability rate * r, so on average ``rate`` of the delimiters get a cue, chosen where the
    model's own reflection / transition propensity is highest.
    """

    def __init__(self, model: Model, rate: float, select: str) -> None:
        if not 0.0 < rate <= 1.0:
            raise LatentLocalError(f"--cue-rate must lie in (0, 1], not {rate}")
        if select not in ("propensity", "random"):
            raise LatentLocalError(f"--cue-select must be propensity or random, not {select!r}")
        self.rate, self.select = rate, select
        self.cues = {label: model.tokenize(text, add_special=False, parse_special=False)
                     for label, text in CUES.items()}
        self.history: dict[str, list[float]] = {label: [] for label in CUES}

    def observe(self, logp: Sequence[float]) -> None:
        for label, v in zip(CUES, logp):
            insort(self.history[label], float(v))

    def propensity(self, logits: np.ndarray) -> list[float]:
        z = np.asarray(logits, dtype=np.float64)
        lse = float(z.max() + np.log(np.exp(z - z.max()).sum()))
        return [float(z[self.cues[label][0]] - lse) for label in CUES]

    def pick(self, logp: Sequence[float], rng: np.random.Generator) -> str | None:
        probs = []
        for label, v in zip(CUES, logp):
            if self.select == "random":
                probs.append(self.rate / len(CUES))
                continue
            h = self.history[label]
            below, upto = bisect_left(h, v), bisect_right(h, v)
            r = (below + 0.5 * (upto - below) + 0.5) / (len(h) + 1)
            probs.append(self.rate * r)
        self.observe(logp)
        u = rng.random()
        acc = 0.0
        for label, p in zip(CUES, probs):
            acc += p
            if u < acc:
                return label
        return None


class _Seq:
    """Sequence 0 of an engine during extraction, keeping the prompt prefix every problem shares.

    The shared prefix (system prompt and template header) is always decoded as its own batch and
    the rest of a sequence as the next ones, whether the prefix is reused or not, so a resumed
    run computes bit-for-bit what a straight run computes.
    """

    def __init__(self, engine: Engine, prefix: list[int]) -> None:
        self.engine, self.prefix, self.held = engine, prefix, False
        engine.set_control_vector(None)
        engine.clear()

    def begin(self, toks: list[int], upto: int) -> int:
        """Hold ``toks[:k]`` for the largest reusable k <= ``upto``; returns k."""
        e, n = self.engine, len(self.prefix)
        e.set_control_vector(None)
        if n and n <= upto and toks[:n] == self.prefix:
            if self.held:
                e.seq_remove(0, n)
            else:
                e.clear()
                e.decode_tokens(self.prefix, logits="none")
                self.held = True
            return n
        e.clear()
        self.held = False
        return 0


def _shared_prefix(engine: Engine, system: str | None) -> list[int]:
    """The prompt tokens every question shares (one token kept back in case the first
    characters of a question merge with it)."""
    a = prompt_tokens(engine, "How many apples?", system)
    b = prompt_tokens(engine, "Solve 7 x 9.", system)
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[: max(0, n - 1)]


def _generate_trace(
    seq: _Seq, toks: list[int], cfg: ExtractConfig, rng: np.random.Generator,
    picker: _CuePicker | None, cancel: threading.Event | None,
) -> dict[str, Any]:
    """One trace in the plain context; cues forced at delimiters of the reasoning span."""
    engine = seq.engine
    model = engine.model
    fmt = reasoning_format(model)
    start = seq.begin(toks, len(toks) - 1)
    engine.decode_tokens(toks[start:])
    st = _Stream(engine, (), cfg.answer_marker)
    watch = None if fmt.native else MarkerWatch(cfg.answer_marker)
    last = b""
    in_reasoning = True
    cues: dict[int, str] = {}
    propensity: list[list[float]] = []
    while st.finish is None:
        if cancel is not None and cancel.is_set():
            st.finish = "cancelled"
            break
        tok, _ = sample_token(engine.logits(-1), cfg.sampling, rng)
        piece = st.push(tok, cfg.max_tokens)
        delim = False
        if in_reasoning:
            if (tok == fmt.think_end_token) if fmt.native else watch.push(piece):
                in_reasoning = False
            else:
                p = model.piece(tok)
                delim = is_delimiter(p, last)
                last = p[-1:] if p else last
        if st.finish is not None:
            break
        engine.decode_tokens([tok])
        if not (delim and picker is not None):
            continue
        logp = picker.propensity(engine.logits(-1))
        propensity.append(logp)
        label = picker.pick(logp, rng)
        cue = picker.cues[label] if label else []
        if not cue or len(st.tokens) + len(cue) >= cfg.max_tokens:
            continue
        cues[len(st.tokens)] = label
        for t in cue:
            piece = st.push(t, cfg.max_tokens)
            if watch is not None:
                watch.push(piece)
        last = model.piece(cue[-1])[-1:]
        if st.finish is None:
            engine.decode_tokens(cue)
    return {"tokens": st.tokens, "text": st.text, "finish": st.finish, "cues": cues,
            "propensity": propensity}


def _capture_rows(
    seq: _Seq, toks: list[int], positions: list[int], layers: list[int]
) -> np.ndarray:
    """Residuals after each block in ``layers`` at ``positions`` of ``toks``: (rows, layers, n_embd).

    One batched prefill (in chunks of n_batch) up to the last wanted position, after the shared
    prompt prefix; logits only at the wanted rows, so the last block (whose captured rows are
    the logit rows) works too.
    """
    cap = seq.engine
    out = np.zeros((len(positions), len(layers), cap.n_embd), dtype=np.float32)
    if not positions:
        return out
    n = positions[-1] + 1
    want = np.zeros(n, dtype=bool)
    want[positions] = True
    row_of = {p: i for i, p in enumerate(positions)}
    last_block = cap.n_layer - 1
    step = cap.n_batch
    for off in range(seq.begin(toks, positions[0]), n, step):
        m = min(step, n - off)
        cap.decode_tokens(toks[off:off + m], logits=want[off:off + m])
        here = [p for p in positions if off <= p < off + m]
        if not here:
            continue
        for j, il in enumerate(layers):
            got = cap.captured(il)
            if il == last_block:
                for r, p in enumerate(here):
                    out[row_of[p], j] = got[r]
            else:
                for p in here:
                    out[row_of[p], j] = got[p - off]
    return out


def _vector_from(work: _Work, recs: list[dict[str, Any]], layer: int) -> tuple[np.ndarray, dict[str, Any]]:
    """S at ``layer`` (float32), plus the norm of S at every captured block and the mean state norm."""
    j = work.layers.index(layer)
    ex_sum = other_sum = None
    n_ex = n_other = 0
    norms: list[float] = []
    for rec in recs:
        states = work.states_of(rec).astype(np.float64)
        labels = [t["label"] for t in rec["thoughts"] if t["delimiter"] is not None]
        if states.shape[0] != len(labels):
            raise LatentLocalError(f"{work.root / rec['states']} does not match its trace; delete {work.root}")
        if not labels:
            continue
        if ex_sum is None:
            ex_sum, other_sum = np.zeros(states.shape[1:]), np.zeros(states.shape[1:])
        is_ex = np.array([lab == "execution" for lab in labels])
        ex_sum += states[is_ex].sum(axis=0)
        other_sum += states[~is_ex].sum(axis=0)
        n_ex += int(is_ex.sum())
        n_other += int((~is_ex).sum())
        norms += np.linalg.norm(states[:, j], axis=1).tolist()
    if not n_ex or not n_other:
        raise LatentLocalError("no execution or no reflection/transition states to make a vector from")
    s_all = ex_sum / n_ex - other_sum / n_other
    info = {
        "norm_by_layer": {str(il): float(np.linalg.norm(s_all[i])) for i, il in enumerate(work.layers)},
        "mean_state_norm": float(np.mean(norms)),
    }
    return s_all[j].astype(np.float32), info


def extract(
    engine: Engine, cfg: ExtractConfig, cancel: threading.Event | None = None
) -> Iterator[Event]:
    """Make a SEAL vector: yields ``Progress`` per problem, then a ``Summary`` (method seal-extract).

    Writes ``cfg.out`` (control-vector GGUF) and its manifest; keeps traces and states in
    :func:`work_dir` so a rerun skips finished problems. Raises ``LatentLocalError`` with the
    counts when too few thoughts of either group were found.
    """
    t0 = time.perf_counter()
    model = engine.model
    if cfg.elicit not in ("none", "cue"):
        raise LatentLocalError(f"--elicit must be none or cue, not {cfg.elicit!r}")
    if cfg.max_tokens < 1:
        raise LatentLocalError(f"--max-tokens must be positive, not {cfg.max_tokens}")
    if cfg.min_thoughts < 1:
        raise LatentLocalError(f"--min-thoughts must be at least 1, not {cfg.min_thoughts}")
    out = Path(cfg.out)
    if out.suffix.lower() != ".gguf":
        raise LatentLocalError(f"--out {out} should end in .gguf (its manifest goes beside it as .json)")
    layer, layers = _capture_layers(cfg, model.n_layer)
    questions = _load_questions(cfg)
    work = _Work(work_dir(out), _work_settings(cfg, model, layers), layer)
    done = work.load()
    # the cue ranks are built in problem order, from finished traces too, so a resumed run makes
    # the same traces as a straight one
    picker = _CuePicker(model, cfg.cue_rate, cfg.cue_select) if cfg.elicit == "cue" else None
    total = len(questions)
    prefix = _shared_prefix(engine, cfg.system)
    main = _Seq(engine, prefix)
    cap: _Seq | None = None
    new = resumed = 0
    gen_s = capture_s = setup_s = 0.0
    gen_tokens = 0
    try:
        for q in questions:
            if cancel is not None and cancel.is_set():
                break
            if q.id in done:
                if picker is not None:
                    for logp in done[q.id].get("propensity", []):
                        picker.observe(logp)
                resumed += 1
                yield Progress(resumed + new, total, f"{q.id} (done earlier)")
                continue
            rng = np.random.default_rng([cfg.seed, q.k])
            toks = prompt_tokens(engine, q.question, cfg.system)
            ta = time.perf_counter()
            trace = _generate_trace(main, toks, cfg, rng, picker, cancel)
            tb = time.perf_counter()
            if trace["finish"] == "cancelled":
                break
            gen = trace["tokens"]
            n_reason = reasoning_length(model, gen, cfg.answer_marker)
            spans = segment_thoughts([model.piece(t) for t in gen[:n_reason]], trace["cues"])
            positions = [len(toks) + s.delimiter for s in spans if s.delimiter is not None]
            if cap is None and positions:  # opened once, on first use; timed apart
                cap = _Seq(engine.sibling(capture_layers=layers, n_seq_max=1), prefix)
                setup_s = time.perf_counter() - tb
                tb += setup_s
            states = _capture_rows(cap, toks + gen, positions, layers) if positions else \
                np.zeros((0, len(layers), model.n_embd), dtype=np.float32)
            tc = time.perf_counter()
            rec = {
                "k": q.k, "id": q.id, "prompt_tokens": len(toks), "tokens": gen,
                "reasoning_tokens": n_reason, "text": trace["text"], "finish": trace["finish"],
                "cues": {str(k): v for k, v in trace["cues"].items()},
                "propensity": trace["propensity"],
                "thoughts": [{"label": s.label, "start": s.start, "end": s.end,
                              "delimiter": s.delimiter, "cue": s.cue, "text": s.text} for s in spans],
                "answer": extract_answer(trace["text"]), "gold": q.gold,
                "gen_s": tb - ta, "capture_s": tc - tb,
            }
            work.add(rec, states)
            done[q.id] = rec
            new += 1
            gen_s += tb - ta
            capture_s += tc - tb
            gen_tokens += len(gen)
            c = count_labels(t["label"] for r in done.values() for t in r["thoughts"])
            yield Progress(resumed + new, total,
                           f"{q.id}: {len(spans)} thoughts; so far execution {c['execution']}, "
                           f"reflection {c['reflection']}, transition {c['transition']}")
    finally:
        if cap is not None:
            cap.engine.close()
    ids = {q.id for q in questions}
    recs = sorted((r for r in done.values() if r["id"] in ids), key=lambda r: r["k"])
    all_counts = count_labels(t["label"] for r in recs for t in r["thoughts"])
    used = count_labels(t["label"] for r in recs for t in r["thoughts"] if t["delimiter"] is not None)
    n_other = used["reflection"] + used["transition"]
    if len(recs) < total:
        raise LatentLocalError(f"extraction stopped after {len(recs)} of {total} problems; rerun to resume")
    if used["execution"] < cfg.min_thoughts or n_other < cfg.min_thoughts:
        raise LatentLocalError(
            f"too few thoughts to make a vector: {used['execution']} execution and {n_other} "
            f"reflection/transition ({used['reflection']} reflection, {used['transition']} transition) "
            f"with a preceding delimiter in {len(recs)} traces (all thoughts: {all_counts['execution']} "
            f"execution, {all_counts['reflection']} reflection, {all_counts['transition']} transition); "
            f"need at least {cfg.min_thoughts} of each group: add problems with --limit, raise "
            "--max-tokens, or elicit them with --elicit cue (traces so far are kept and reused)"
        )
    vec, info = _vector_from(work, recs, layer)
    delims = sum(sum(1 for t in r["thoughts"] if t["delimiter"] is not None) for r in recs)
    reasoning = sum(r["reasoning_tokens"] for r in recs)
    density = delims / reasoning if reasoning else 0.0
    manifest = {
        "method": "seal",
        "layer": layer,
        "block_mapping": "direction.N is added to the output of block N (0-based) = llama.cpp "
                         "l_out-N = Hugging Face hidden_states[N+1]",
        "default_layer": default_layer(model.n_layer),
        "alpha": cfg.alpha,
        "recommended_scale": round(cfg.alpha * density, 6),
        "recommended_scale_method": "always-on heuristic, not a sweep: alpha x delimiters per "
                                    "reasoning token in the traces (the same added mass per token)",
        "norm": float(np.linalg.norm(vec)),
        "mean_state_norm": info.get("mean_state_norm"),
        "norm_by_layer": info.get("norm_by_layer"),
        "captured_layers": work.layers,
        "dataset": str(Path(cfg.data)),
        "limit": cfg.limit,
        "offset": cfg.offset,
        "problems": len(recs),
        "counts": {"thoughts": all_counts, "used": used},
        "reasoning_tokens": reasoning,
        "generated_tokens": sum(len(r["tokens"]) for r in recs),
        "elicitation": _elicitation(cfg),
        "max_tokens": cfg.max_tokens,
        "sampling": asdict(cfg.sampling),
        "seed": cfg.seed,
        "system": cfg.system,
        "model": {"file": model.path.name, "sha256": sha256_file(model.path), "name": model.name,
                  "arch": model.arch, "n_layer": model.n_layer, "n_embd": model.n_embd,
                  "size": model.size_bytes},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    cv = ControlVector(model_hint=model.arch, directions={layer: vec}, n_layer=model.n_layer)
    save(cv, out, manifest)
    elapsed = time.perf_counter() - t0
    yield Summary(
        method="seal-extract",
        answer=None,
        text=str(out),
        generated_tokens=gen_tokens,
        elapsed_s=elapsed,
        finish_reason="done",
        extra={"path": str(out), "work": str(work.root), "layer": layer, "new": new,
               "resumed": resumed, "counts": all_counts, "used": used, "norm": manifest["norm"],
               "gen_s": gen_s, "capture_s": capture_s, "capture_setup_s": setup_s},
    )


def extract_vector(engine: Engine, cfg: ExtractConfig, on_event: Callable[[Event], None] | None = None) -> Summary:
    """:func:`extract` run to the end; returns its ``Summary``."""
    summary = None
    for ev in extract(engine, cfg):
        if on_event is not None:
            on_event(ev)
        if isinstance(ev, Summary):
            summary = ev
    if summary is None:  # pragma: no cover - extract raises or ends with a Summary
        raise LatentLocalError("extraction ended without a result")
    return summary


# ---------------------------------------------------------------------------------------------
# registry entries
# ---------------------------------------------------------------------------------------------


def _seal_from_args(args) -> Callable:
    from latentlocal.methods.registry import check_positive, opt

    path = getattr(args, "vector", None)
    if not path:
        raise LatentLocalError(
            "--method seal needs --vector FILE: a control vector made with "
            "`latentlocal seal extract --data FILE --out FILE`"
        )
    cv, manifest = load_vector(path)  # file problems surface before the model loads
    max_tokens = opt(args, "max_tokens", 512)
    check_positive("max_tokens", max_tokens)
    always_on = bool(getattr(args, "always_on", False))
    default_alpha = 1.0
    if always_on and manifest and isinstance(manifest.get("recommended_scale"), (int, float)):
        default_alpha = float(manifest["recommended_scale"])
    alpha = float(opt(args, "alpha", default_alpha))
    if not math.isfinite(alpha):
        raise LatentLocalError(f"--alpha must be a finite number, not {alpha}")
    sampling = SamplingConfig(
        temperature=opt(args, "temperature", 0.0),
        top_k=opt(args, "top_k", 40),
        top_p=opt(args, "top_p", 0.95),
        min_p=opt(args, "min_p", 0.05),
    )
    cfg = SealConfig(directions=cv.directions, alpha=alpha, always_on=always_on, max_tokens=max_tokens,
                     sampling=sampling, seed=opt(args, "seed", 0), model_hint=cv.model_hint or None)

    def runner(engine, q, cancel=None):
        check_vector(engine, cv.directions, cfg.model_hint)
        if cv.n_layer is not None and cv.n_layer != engine.n_layer:
            raise LatentLocalError(
                f"{path} was made for a {cv.n_layer}-block model but {engine.model.name} has "
                f"{engine.n_layer}; extract a vector for this model"
            )
        return run_seal(engine, q, cfg, cancel)

    return runner


def _add_seal_flags(g) -> None:
    g.add_argument("--vector", default=None, metavar="FILE",
                   help="SEAL control vector (.gguf from `latentlocal seal extract`); required for seal")
    g.add_argument("--alpha", type=float, default=None,
                   help="steering strength (default 1; with --always-on the manifest's recommended scale)")
    g.add_argument("--always-on", action="store_true",
                   help="apply the vector to every token, as llama.cpp apps do with --control-vector")


def _registry_entries() -> list:
    from latentlocal.methods.registry import MethodSpec

    return [
        MethodSpec("seal", "SEAL: steer thought delimiters with a vector (--vector FILE)",
                   _seal_from_args, _add_seal_flags),
    ]


def __getattr__(name: str):  # METHODS is built lazily: registry imports this module
    if name == "METHODS":
        return _registry_entries()
    raise AttributeError(name)
