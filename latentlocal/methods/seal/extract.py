"""SEAL extraction: traces, labelled thoughts, captured states, the vector S, resumable."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from latentlocal.controlvector import ControlVector, check_overwritable, save, sha256_file
from latentlocal.datasets import load_problems
from latentlocal.engine import Engine, Model
from latentlocal.errors import LatentLocalError
from latentlocal.events import Event, Progress, Summary
from latentlocal.markers import MarkerWatch
from latentlocal.methods.cot import _Stream, prompt_tokens
from latentlocal.methods.seal.elicit import CuePicker
from latentlocal.methods.seal.steer import default_layer
from latentlocal.methods.seal.thoughts import CUES, count_labels, is_delimiter, reasoning_length, segment_thoughts
from latentlocal.methods.seal.workdir import WORK_VERSION, WorkFolder, work_dir
from latentlocal.phases import Budget, final_answer, fit_context
from latentlocal.prompts import ANSWER_MARKER, COT_SYSTEM, reasoning_format
from latentlocal.sampling import SamplingConfig

log = logging.getLogger(__name__)


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
    max_tokens: int | None = None  # None: trace_tokens() picks one for the model
    sampling: SamplingConfig = SamplingConfig()
    seed: int = 0
    min_thoughts: int = 5
    alpha: float = 1.0
    question_field: str = "question"
    answer_field: str = "answer"
    system: str | None = COT_SYSTEM
    answer_marker: str = ANSWER_MARKER


@dataclass(frozen=True)
class _Question:
    k: int  # 0-based index among the file's rows (seeds the problem's own random stream)
    id: str
    question: str
    gold: str | None


def _load_questions(cfg: ExtractConfig) -> list[_Question]:
    """The slice of the dataset to trace: the evaluation's loader and id rule, with the answer
    optional (it is only recorded)."""
    if cfg.limit < 1:
        raise LatentLocalError(f"--limit must be at least 1, not {cfg.limit}")
    if cfg.offset < 0:
        raise LatentLocalError(f"--offset must be 0 or more, not {cfg.offset}")
    if not Path(cfg.data).is_file():
        raise LatentLocalError(f"dataset file {cfg.data} not found; pass --data FILE.jsonl")
    problems = load_problems(cfg.data, question_field=cfg.question_field, answer_field=cfg.answer_field,
                             limit=cfg.limit, offset=cfg.offset, gold_required=False)
    # Unshuffled, so problem i of the slice is row offset + i of the file.
    return [_Question(k=cfg.offset + i, id=p.id, question=p.question, gold=p.gold)
            for i, p in enumerate(problems)]


# Instruction models write a few hundred tokens; reasoning models reflect late in traces of
# thousands (the paper's code, VITA-Group/SEAL, generates up to 10,000 new tokens per trace).
PLAIN_TRACE_TOKENS = 512
NATIVE_TRACE_TOKENS = 10_000
_PROMPT_ROOM = 256


def trace_tokens(requested: int | None, engine: Engine) -> int:
    """New tokens per trace: ``requested``, else 512, or 10,000 on a model with ``</think>``
    (capped so a trace and its prompt fit the context)."""
    if requested is not None:
        if requested < 1:
            raise LatentLocalError(f"--max-tokens must be positive, not {requested}")
        return requested
    if not reasoning_format(engine.model).native:
        return PLAIN_TRACE_TOKENS
    return max(PLAIN_TRACE_TOKENS, min(NATIVE_TRACE_TOKENS, engine.n_ctx - _PROMPT_ROOM))


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
    picker: CuePicker | None, cancel: threading.Event | None,
) -> dict[str, Any]:
    """One trace in the plain context; cues forced at delimiters of the reasoning span.

    The budget is fitted to what the context holds after this prompt (the default on thinking
    models, n_ctx - 256, does not fit a longer prompt, and a trace that fills the context fails
    part way); on a thinking model the answer reserve then comes out of the fitted budget."""
    engine = seq.engine
    model = engine.model
    fmt = reasoning_format(model)
    assert cfg.max_tokens is not None
    budget, _cut = fit_context(Budget(cfg.max_tokens), engine.n_ctx, len(toks))
    start = seq.begin(toks, len(toks) - 1)
    engine.decode_tokens(toks[start:])
    st = _Stream(engine, (), cfg.answer_marker, budget, fmt)
    watch = None if fmt.native else MarkerWatch(cfg.answer_marker)
    last = b""
    in_reasoning = True
    cues: dict[int, str] = {}
    propensity: list[list[float]] = []
    delim = False

    def feed(tok: int) -> None:
        """Feed ``tok``; after a delimiter, maybe force a cue (which needs the logits after it)."""
        nonlocal last
        engine.decode_tokens([tok])
        if not (delim and picker is not None):
            return
        logp = picker.propensity(engine.logits(-1))
        propensity.append(logp)
        label = picker.pick(logp, rng)
        cue = picker.cues[label] if label else []
        if not cue or len(st.tokens) + len(cue) >= budget.max_tokens:
            return
        cues[len(st.tokens)] = label
        for t in cue:
            piece = st.push(t)
            if watch is not None:
                watch.push(piece)
        last = model.piece(cue[-1])[-1:]
        if st.finish is None:
            engine.decode_tokens(cue)

    for tok, piece, _ in st.steps(cfg.sampling, rng, cancel, feed):
        delim = False
        if in_reasoning:
            if st.closed is not None if fmt.native else watch.push(piece):
                in_reasoning = False
            elif not model.is_eog(tok):
                p = model.piece(tok)
                delim = is_delimiter(p, last)
                last = p[-1:] if p else last
    return {"tokens": st.tokens, "text": st.text, "finish": st.finish, "cues": cues,
            "propensity": propensity, "max_tokens": budget.max_tokens}


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


def _vector_from(work: WorkFolder, recs: list[dict[str, Any]], layer: int) -> tuple[np.ndarray, dict[str, Any]]:
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
    requested = cfg.max_tokens
    cfg = replace(cfg, max_tokens=trace_tokens(cfg.max_tokens, engine))
    if cfg.min_thoughts < 1:
        raise LatentLocalError(f"--min-thoughts must be at least 1, not {cfg.min_thoughts}")
    if cfg.sampling.temperature < 0:
        raise LatentLocalError(
            f"--temperature must be at least 0 (0 = greedy), not {cfg.sampling.temperature}")
    if cfg.seed < 0:
        raise LatentLocalError(f"--seed must be at least 0, not {cfg.seed}")
    out = Path(cfg.out)
    if out.suffix.lower() != ".gguf":
        raise LatentLocalError(f"--out {out} should end in .gguf (its manifest goes beside it as .json)")
    check_overwritable(out)  # now, not after the traces
    layer, layers = _capture_layers(cfg, model.n_layer)
    questions = _load_questions(cfg)
    try:
        work = WorkFolder(work_dir(out), _work_settings(cfg, model, layers), layer)
    except OSError as exc:  # before any trace: an --out where nothing can be written
        raise LatentLocalError(f"--out {out}: cannot write beside it ({exc.strerror or exc}); pick "
                               "another --out") from None
    done = work.load()
    # the cue ranks are built in problem order, from finished traces too, so a resumed run makes
    # the same traces as a straight one
    picker = CuePicker(model, cfg.cue_rate, cfg.cue_select) if cfg.elicit == "cue" else None
    total = len(questions)
    prefix = _shared_prefix(engine, cfg.system)
    main = _Seq(engine, prefix)
    cap: _Seq | None = None
    new = resumed = 0
    gen_s = capture_s = setup_s = 0.0
    gen_tokens = 0
    cut_noted = False
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
            if requested is not None and trace["max_tokens"] < requested and not cut_noted:
                # said once: a default budget is fitted to every prompt without a word
                log.warning(f"--max-tokens {requested} does not fit the context of {engine.n_ctx} tokens "
                            f"after a {len(toks)}-token prompt: traces are cut to what it holds "
                            f"({trace['max_tokens']} here); pass --n-ctx {len(toks) + requested} "
                            "for the full budget")
                cut_noted = True
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
                "max_tokens": trace["max_tokens"],
                "cues": {str(k): v for k, v in trace["cues"].items()},
                "propensity": trace["propensity"],
                "thoughts": [{"label": s.label, "start": s.start, "end": s.end,
                              "delimiter": s.delimiter, "cue": s.cue, "text": s.text} for s in spans],
                "answer": final_answer(trace["text"], reasoning_format(model)), "gold": q.gold,
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
    delims = sum(sum(1 for t in r["thoughts"] if t["delimiter"] is not None) for r in recs)
    if used["execution"] < cfg.min_thoughts or n_other < cfg.min_thoughts:
        if delims == 0:
            # More of the same would not help: the model never starts a new paragraph.
            fix = ("none of the traces has a paragraph break (a token with a blank line), so there "
                   "are no thoughts to label: this model writes its whole answer as one paragraph "
                   "(base models without a chat template do); use a model that writes its steps as "
                   "separate paragraphs, such as an instruction-tuned one")
        elif cfg.elicit == "none":
            fix = ("add problems with --limit, raise --max-tokens, or elicit them with --elicit cue "
                   "(traces so far are kept and reused)")
        else:
            fix = ("add problems with --limit, raise --max-tokens or --cue-rate (traces so far are "
                   "kept and reused)")
        raise LatentLocalError(
            f"too few thoughts to make a vector: {used['execution']} execution and {n_other} "
            f"reflection/transition ({used['reflection']} reflection, {used['transition']} transition) "
            f"with a preceding delimiter in {len(recs)} traces (all thoughts: {all_counts['execution']} "
            f"execution, {all_counts['reflection']} reflection, {all_counts['transition']} transition); "
            f"need at least {cfg.min_thoughts} of each group: {fix}"
        )
    vec, info = _vector_from(work, recs, layer)
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
