"""Soft Reasoning: Bayesian-optimised embeddings at the first generated position.

After the prompt, one extra position takes an input embedding ``x`` instead of a token; the rest
is decoded greedily. Candidates ``x`` are searched with the GP / log-EI optimiser in
``latentlocal.bayesopt``, ``k`` per round, decoded together as parallel sequences over one shared
prompt KV. Reward = verifier agreement (the same model judges the round's answers) + coherence
(mean probability of the candidate's generated tokens). The final answer is a majority vote over
every candidate and verifier answer, ties to the highest reward.

Search spaces (the first two start from the greedy first token's embedding ``e_z``, so ``u = 0``
reproduces greedy chain of thought, which is candidate 0 of round 0):

- ``subspace`` (default): ``x = e_z + u A`` with ``u`` in ``[-1, 1]^d`` and a fixed random Gaussian
  ``A`` (d x n_embd), drawn from the seed (so the same for every question), scaled so a typical
  ``u`` moves ``x`` by ``sigma * |e_z|``. The optimiser searches ``u``.
- ``around-token``: ``x = e_z + sigma * rms(e_z) * eps`` with full-width Gaussian ``eps``, drawn at
  random each round (no low-dimensional variable for a GP to model); a baseline.
- ``official``: the official code's space, ``x = u A`` with ``A`` unscaled N(0, 1), the first
  round's ``u ~ N(0, I)`` and the GP's proposals from ``[0, 1]^d`` after it; no greedy candidate
  and no ``e_z`` (so ``sigma`` is unused). Our GP and verifier, as in the other spaces.

Deviations from the official code (alickzhu/Soft-Reasoning), all kept on purpose:

- The official ``x`` is ``u A`` alone (``Search.py`` ``get_random_embedding_gaussian`` and
  ``collect_x_train_and_rewards``): ``A`` unscaled N(0, 1), ``u ~ N(0, I)`` in the first round and
  GP proposals from ``[0, 1]^d`` after it, inserted at a placeholder token after the prompt; its
  ``e_z + noise`` start (``get_random_embedding``) is never called. ``space=official`` is that
  space; the default anchors at ``e_z`` instead, which keeps greedy CoT among the candidates and
  the perturbation's size a setting (``sigma``).
- The official GP is a fixed RBF kernel (length scale 1) ranking 5000 random points
  (``utils/guassian_inference.py``); here a fitted Matern-5/2 GP, log-EI with gradient polish and
  kriging-believer batches (``latentlocal.bayesopt``).
- The official verifier sees every answered candidate's whole chain and, few-shot, the earlier
  rounds' analyses; here zero-shot, the candidates' last 400 characters (a thinking model's end of
  reasoning and answer), no memory across rounds. As there, only answered candidates are shown and
  a verdict without its answer line is no vote.
- The official final answer is the last round's verdict (``Search.py`` ``__call__``); here the
  majority over every candidate and verdict (a single verdict of a 0.5B model is often wrong).

Reuse: a candidate whose first ``reuse_prefix`` generated tokens equal an earlier candidate's is
stopped there and takes that candidate's answer and text (greedy decoding from nearly the same
state); ``reuse_prefix=0`` decodes every candidate to the end.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from latentlocal.answers import extract_answer, majority_vote, normalize_number
from latentlocal.bayesopt import MAX_DIM, BayesOpt
from latentlocal.engine import ChatMessage, Engine, TextStream
from latentlocal.errors import LatentLocalError
from latentlocal.events import CandidateResult, Event, Notice, PhaseChange, Round, SequenceDone, Summary, Token
from latentlocal.markers import AnswerLineWatch
from latentlocal.methods import settings
from latentlocal.methods.cot import _Stream, prompt_tokens
from latentlocal.methods.spec import MethodSpec
from latentlocal.parity import check_embedding_input
from latentlocal.phases import DEFAULT_ANSWER_RESERVE, Budget, final_answer, fitted, split_thinking
from latentlocal.prompts import (
    ANSWER_MARKER,
    COT_SYSTEM,
    ReasoningFormat,
    close_thinking,
    question_text,
    reasoning_format,
)
from latentlocal.sampling import softmax

log = logging.getLogger(__name__)

VERIFIER_SYSTEM = "You check solutions to math problems carefully and decide which final answer is right."


SPACES = ("subspace", "around-token", "official")


@dataclass(frozen=True)
class SoftReasoningConfig(settings.Budgeted):
    candidates: int = settings.setting(5, help="candidates per round", bounds=settings.at_least(1))
    rounds: int = settings.setting(5, help="optimiser rounds at most", bounds=settings.at_least(1))
    space: str = settings.setting("subspace", choices=SPACES,
                                  help="search space: subspace (GP over u around the greedy token), official "
                                       "(the official code's x = uA), or around-token (random noise)")
    dim: int = settings.setting(50, help="subspace dimension d", bounds=settings.interval(1, MAX_DIM),
                                why="(the Sobol design's limit)")
    # At 0.5 Qwen2.5-0.5B's greedy continuation ignored 90% of perturbations (the same text within
    # 32 tokens) and SmolLM2's 43%, leaving the search nothing to choose from; at 2.0, 26% and 4%
    # (SVAMP dev [430:440), a tuning slice no table reports).
    sigma: float = settings.setting(2.0, help="perturbation size relative to |e_z|", bounds=settings.positive())
    verifier_weight: float = settings.setting(1.0, help="reward weight of verifier agreement")
    coherence_weight: float = settings.setting(1.0, help="reward weight of coherence")
    max_tokens: int = settings.max_tokens(300)
    answer_reserve: int = settings.answer_reserve(DEFAULT_ANSWER_RESERVE)  # each candidate's answer room
    verifier_max_tokens: int = 160
    min_improvement: float = 0.01
    reuse_prefix: int = 24
    seed: int = settings.seed(0)
    system: str | None = COT_SYSTEM


@dataclass
class _Cand:
    index: int
    u: np.ndarray | None
    x: np.ndarray
    tokens: list[int]
    probs: list[float]
    text: str = ""
    finish: str = ""
    reused_from: int | None = None

    @property
    def coherence(self) -> float:
        return float(np.mean(self.probs)) if self.probs else 0.0


def _check(cfg: SoftReasoningConfig, engine: Engine) -> None:
    # the settings themselves were checked when the config was made (settings.validate)
    if cfg.candidates + 2 > engine.n_seq_max:
        raise LatentLocalError(
            f"{cfg.candidates} candidates need {cfg.candidates + 2} parallel sequences, this engine "
            f"holds {engine.n_seq_max}; pass fewer --candidates or a larger --parallel"
        )


class _Space:
    """Maps search points to first-position embeddings."""

    def __init__(self, cfg: SoftReasoningConfig, e_z: np.ndarray, rng: np.random.Generator) -> None:
        self.cfg = cfg
        self.e_z = e_z
        rms = float(np.sqrt(np.mean(e_z.astype(np.float64) ** 2)))
        self.rms = rms
        n_embd = e_z.shape[0]
        self.origin = e_z
        if cfg.space == "subspace":
            # Var(u_i) = 1/3 for u uniform in [-1, 1]: scale A so |u A| ~ sigma * |e_z|.
            self.A = rng.normal(0.0, np.sqrt(3.0 / cfg.dim) * cfg.sigma * rms, size=(cfg.dim, n_embd))
            self.bounds = np.array([[-1.0, 1.0]] * cfg.dim)
        elif cfg.space == "official":
            # Search.py: A ~ N(0, 1) unscaled and x = u A, no e_z (sigma unused); the GP searches
            # the unit cube (utils/guassian_inference.py draws its candidates with torch.rand)
            self.A = rng.normal(0.0, 1.0, size=(cfg.dim, n_embd))
            self.bounds = np.array([[0.0, 1.0]] * cfg.dim)
            self.origin = np.zeros_like(e_z)
        self._rng = rng
        self.n_embd = n_embd

    def embed(self, u: np.ndarray) -> np.ndarray:
        return (self.origin + u @ self.A).astype(np.float32)

    def first_round(self, n: int) -> np.ndarray:
        """The official space's first points: u ~ N(0, I) (Search.py
        ``get_random_embedding_gaussian``), outside the cube the GP searches after them."""
        return self._rng.standard_normal((n, self.cfg.dim))

    def random_around(self, n: int) -> np.ndarray:
        eps = self._rng.normal(size=(n, self.n_embd))
        return (self.e_z + self.cfg.sigma * self.rms * eps).astype(np.float32)


def _decode_candidates(
    engine: Engine,
    cands: list[_Cand],
    prompt_len: int,
    cfg: SoftReasoningConfig,
    earlier: list[_Cand],
    cancel: threading.Event | None,
    marker: str | None = ANSWER_MARKER,
    first_token: int | None = None,
    budget: Budget | None = None,
) -> Iterator[Event]:
    """Decode all ``cands`` together: seq 0 holds the prompt, candidate i runs on seq i + 1.

    A candidate stops at its completed answer line (``marker``; None: never), end of generation,
    ``max_tokens``, or a reuse match. On a thinking model each candidate has a thinking budget
    and a forced ``</think>`` (``phases``), so it reaches an answer; the first position, an
    embedding standing in for ``first_token``, counts as thinking."""
    model = engine.model
    fmt = reasoning_format(model)
    seqs = [i + 1 for i in range(len(cands))]
    for s in seqs:
        engine.seq_copy(0, s)
    engine.decode_step(seqs, rows=np.stack([c.x for c in cands]))
    budget = budget or cfg.budget
    streams = {s: _Stream(engine, (), marker, budget, fmt) for s in seqs}
    if first_token is not None:
        for st in streams.values():
            st.think.push(first_token)
    by_prefix = {tuple(c.tokens[: cfg.reuse_prefix]): c for c in earlier if len(c.tokens) >= cfg.reuse_prefix}
    row = {s: i for i, s in enumerate(seqs)}
    active = list(seqs)
    while active:
        if cancel is not None and cancel.is_set():
            for s in active:
                cands[s - 1].finish = "cancelled"
            break
        feed: list[int] = []
        toks: list[int] = []
        for s in active:
            c = cands[s - 1]
            st = streams[s]
            logits = engine.logits(row[s])
            sampled = int(np.argmax(logits))
            p = softmax(logits)
            tok = st.choose(sampled)  # </think> when the thinking budget is spent
            c.tokens.append(tok)
            c.probs.append(float(p[sampled]))  # coherence: the model's confidence in its own pick
            piece = st.push(tok)
            if st.finish == "eos":
                c.finish = "eos"
            else:
                c.text += piece
                yield Token(text=piece, token_id=tok, seq=s, phase=st.token_phase, prob=float(p[sampled]))
                if st.closed:
                    yield PhaseChange(phase="answer", reason=st.closed, seq=s)
                if st.finish is not None:
                    c.finish = st.finish
                elif cfg.reuse_prefix and len(c.tokens) == cfg.reuse_prefix:
                    twin = by_prefix.get(tuple(c.tokens))
                    if twin is not None:
                        c.reused_from = twin.index
                        c.finish = "reused"
            if c.finish == "reused":
                # it takes its twin's text and answer (the Round says so too), not its prefix's
                twin_text = earlier[c.reused_from].text
                yield SequenceDone(s, twin_text, final_answer(twin_text, fmt), len(c.tokens), c.finish)
            elif c.finish:
                yield SequenceDone(s, c.text, final_answer(c.text, fmt), len(c.tokens), c.finish)
            else:
                feed.append(s)
                toks.append(tok)
        active = feed
        if active:
            engine.decode_step(active, tokens=toks)
            row = {s: i for i, s in enumerate(active)}
    for s in seqs:
        engine.seq_remove(s)


# What the verifier sees of a thinking model's candidate: the end of its reasoning and its answer.
_VERIFIER_REASONING_CHARS = 600
_VERIFIER_ANSWER_CHARS = 400


def _shown(text: str, fmt: ReasoningFormat, scale: float = 1.0) -> str:
    """A candidate as the verifier reads it (``scale`` < 1 shortens the excerpts to fit)."""
    thinking, answer = split_thinking(text, fmt)
    answer_chars = int(_VERIFIER_ANSWER_CHARS * scale)
    if not fmt.native:
        return text.strip()[-answer_chars:]
    reasoning = thinking.strip()[-int(_VERIFIER_REASONING_CHARS * scale):]
    if answer is None:
        return f"Reasoning (end): {reasoning}\nAnswer: (none)"
    return f"Reasoning (end): {reasoning}\nAnswer: {answer.strip()[:answer_chars]}"


# excerpt lengths tried, longest first, until the verifier's prompt fits the free context
_VERIFIER_SCALES = (1.0, 0.5, 0.25, 0.125)


def verifier_prompt(model, user: str) -> str:
    """The verifier's chat prompt; on a model with think tokens the thinking span is opened and
    closed empty (:func:`close_thinking`), as Qwen3's no-think mode and R1-style prompts do, so
    it answers at once."""
    return close_thinking(model, model.apply_chat([ChatMessage("system", VERIFIER_SYSTEM),
                                                   ChatMessage("user", user)]))


def _verify(
    engine: Engine, question: str, cands: list[_Cand], cfg: SoftReasoningConfig, seq: int
) -> tuple[str | None, str, int]:
    """The same model, greedily, judges the round's answers: (its answer, its text, tokens).

    As in the official code (Search.py ``verifier``), it is shown only the candidates that reached
    an answer, and a verdict that never writes the answer line is no vote: not its last number,
    which is often a solution's label ("Solution 2 is right")."""
    fmt = reasoning_format(engine.model)
    shown = [c for c in cands if final_answer(c.text, fmt) is not None]
    if not shown:
        return None, "", 0
    model = engine.model
    # the verifier's sequence shares the unified KV cache with the prompt (sequence 0)
    room = engine.n_ctx - engine.pos(0) - 8 - cfg.verifier_max_tokens
    for scale in _VERIFIER_SCALES:
        parts = [f"Solution {i}:\n{_shown(c.text, fmt, scale)}" for i, c in enumerate(shown, 1)]
        user = (
            f"Problem: {question_text(question)}\n\nProposed solutions:\n\n" + "\n\n".join(parts)
            + f"\n\nWhich final answer is correct? Check briefly, then write one last line of the form "
            f"'{ANSWER_MARKER} <number>'."
        )
        toks = model.tokenize(verifier_prompt(model, user))
        if len(toks) <= room:
            break
    else:
        # cutting the prompt's head would drop the chat template; no vote this round instead
        log.warning("soft-reasoning: the verifier's prompt (%d tokens) does not fit the %d free cells "
                    "of the context; this round has no verdict (raise --n-ctx)", len(toks), max(room, 0))
        return None, "", 0
    engine.seq_remove(seq)
    engine.decode_tokens(toks, seq=seq)
    out = TextStream(model)
    watch = AnswerLineWatch(ANSWER_MARKER)
    said, n = "", 0
    while n < cfg.verifier_max_tokens:
        tok = int(np.argmax(engine.logits(-1)))
        n += 1
        if model.is_eog(tok):
            break
        piece = out.push(tok)
        said += piece
        if watch.push(piece):
            break
        engine.decode_tokens([tok], seq=seq)
    engine.seq_remove(seq)
    return verdict_answer(said), said, n


def verdict_answer(said: str) -> str | None:
    """The verifier's vote: the number on its answer line, or None without one (not the last
    number of the text, which is often a solution's label)."""
    return extract_answer(said, last_number=False)


def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and normalize_number(a) == normalize_number(b)


def final_vote(
    answers: list[str | None], rewards: list[float], verifier_answers: list[str | None]
) -> tuple[str | None, int | None]:
    """Majority over candidate and verifier answers; ties go to the answer with the highest
    candidate reward. Returns the answer and the best-rewarded candidate that gave it (None when
    only verifiers gave it)."""
    if not answers:
        return None, None
    best_of: dict[str | None, float] = {}
    for a, r in zip(answers, rewards):
        key = normalize_number(a) if a is not None else None
        best_of[key] = max(best_of.get(key, -np.inf), r)
    # a verifier answer scores what the best candidate with that answer scored (0 if none did)
    v_scores = [best_of.get(normalize_number(a) if a is not None else None, 0.0) for a in verifier_answers]
    final = majority_vote(list(answers) + list(verifier_answers), list(rewards) + v_scores)
    ranked = sorted(range(len(rewards)), key=lambda i: -rewards[i])
    # None when only verifiers gave the answer: no candidate's text goes with it
    pick = next((i for i in ranked if _same(answers[i], final)), None)
    if pick is None and final is None:
        pick = ranked[0]  # nobody answered: the best-rewarded text, as before
    return final, pick


def run_soft_reasoning(
    engine: Engine,
    question: str,
    cfg: SoftReasoningConfig = SoftReasoningConfig(),
    cancel: threading.Event | None = None,
) -> Iterator[Event]:
    _check(cfg, engine)
    check_embedding_input(engine)
    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    model = engine.model
    fmt = reasoning_format(model)
    prompt = prompt_tokens(engine, question, cfg.system)
    engine.clear()
    engine.decode_tokens(prompt, seq=0)
    z = int(np.argmax(engine.logits(-1)))
    # the candidates share the context; the first position (the embedding) takes one of each's
    budget, notes = fitted(cfg.budget, engine.n_ctx,
                           len(prompt) + cfg.candidates, sequences=cfg.candidates)
    yield from notes
    e_z = model.embeddings.row(z)
    space = _Space(cfg, e_z, rng)
    opt = BayesOpt(space.bounds, seed=int(rng.integers(2**31)), n_initial=cfg.candidates,
                   observe_outside=cfg.space == "official") if cfg.space != "around-token" else None
    verifier_seq = cfg.candidates + 1
    # the free position stands in for this token, except in the official space, where it is a
    # placeholder's embedding with no token behind it (Search.py)
    stands_for = None if cfg.space == "official" else z
    first_text = model.token_text(z) if stands_for is not None else ""
    all_cands: list[_Cand] = []
    rewards: list[float] = []
    verifier_answers: list[str | None] = []
    verifier_texts: list[str] = []
    generated = 0
    best = -np.inf
    stop_reason = "max_rounds"
    rounds_run = 0
    for r in range(cfg.rounds):
        if cancel is not None and cancel.is_set():
            stop_reason = "cancelled"
            break
        mean = std = None
        if opt is not None and cfg.space == "official" and r == 0:
            U = space.first_round(cfg.candidates)  # no greedy candidate in the official code
            xs = [space.embed(u) for u in U]
        elif opt is not None:
            U = opt.ask(cfg.candidates)
            if r == 0:
                U[0] = 0.0  # greedy chain of thought is always candidate 0
            prop = opt.last_proposal
            if prop is not None and prop.from_model:
                mean, std = prop.mean, prop.std
            xs = [space.embed(u) for u in U]
        else:
            U = [None] * cfg.candidates
            xs = list(space.random_around(cfg.candidates))
            if r == 0:
                xs[0] = e_z.astype(np.float32)
        base = len(all_cands)
        cands = [_Cand(base + i, U[i], xs[i], [], []) for i in range(cfg.candidates)]
        yield from _decode_candidates(engine, cands, len(prompt), cfg, all_cands, cancel, first_token=stands_for,
                                     budget=budget)
        for c in cands:
            if c.reused_from is not None:
                twin = all_cands[c.reused_from]
                c.text, c.probs = twin.text, twin.probs
            else:
                c.text = first_text + c.text
        generated += sum(len(c.tokens) for c in cands)
        if any(c.finish == "cancelled" for c in cands):
            stop_reason = "cancelled"
            break
        if fmt.native:
            answered = sum(final_answer(c.text, fmt, strict=True) is not None for c in cands)
            if 2 * answered < len(cands):
                msg = (f"round {r}: only {answered} of {len(cands)} candidates reached an answer after "
                       f"{fmt.think_end_text}; raise --max-tokens or --answer-reserve")
                log.warning(msg)
                yield Notice("few_answers", msg)
        v_answer, v_text, v_tokens = _verify(engine, question, cands, cfg, verifier_seq)
        generated += v_tokens
        verifier_answers.append(v_answer)
        verifier_texts.append(v_text)
        results = []
        round_rewards = []
        for c in cands:
            ans = final_answer(c.text, fmt)
            ver = 1.0 if _same(ans, v_answer) else 0.0
            coh = c.coherence
            reward = cfg.verifier_weight * ver + cfg.coherence_weight * coh
            round_rewards.append(reward)
            results.append(CandidateResult(c.index, ans, c.text, len(c.tokens), ver, coh, reward,
                                           reused=c.reused_from is not None))
        all_cands += cands
        rewards += round_rewards
        if opt is not None:
            opt.tell(np.stack([c.u for c in cands]), np.array(round_rewards))
        rounds_run = r + 1
        new_best = max(best, max(round_rewards))
        improvement = new_best - best
        best = new_best
        yield Round(
            index=r,
            candidates=tuple(results),
            verifier_answer=v_answer,
            best_reward=float(best),
            predicted_mean=tuple(float(m) for m in mean) if mean is not None else (),
            predicted_std=tuple(float(s) for s in std) if std is not None else (),
        )
        if r > 0 and improvement < cfg.min_improvement:
            stop_reason = "converged"
            break
    answers = [final_answer(c.text, fmt) for c in all_cands]
    final, pick = final_vote(answers, rewards, verifier_answers)
    if pick is not None:
        best_text = all_cands[pick].text
    else:  # the answer came from verifiers alone: the last verdict that gave it is the text
        best_text = next((t for a, t in zip(reversed(verifier_answers), reversed(verifier_texts))
                          if _same(a, final)), "")
        if fmt.native:
            # a verdict is an answer (its prompt closed the thinking span): as one, it follows
            # </think>, or the server would put it all in reasoning_content
            best_text = fmt.think_end_text + "\n\n" + best_text
    yield Summary(
        method="soft-reasoning",
        answer=final,
        text=best_text,
        generated_tokens=generated,
        elapsed_s=time.perf_counter() - t0,
        finish_reason=stop_reason,
        extra={
            "rounds": rounds_run,
            "candidates_decoded": sum(1 for c in all_cands if c.reused_from is None),
            "candidates_reused": sum(1 for c in all_cands if c.reused_from is not None),
            "best_reward": float(best) if np.isfinite(best) else None,
            "stop_reason": stop_reason,
            "space": cfg.space,
        },
    )


# ---------------------------------------------------------------------------------------------
# registry entries
# ---------------------------------------------------------------------------------------------


METHODS: list[MethodSpec] = [
    MethodSpec("soft-reasoning", "Soft Reasoning", "first-position embeddings searched by GP/EI, verifier + coherence",
               SoftReasoningConfig,
               lambda cfg: lambda engine, q, cancel=None: run_soft_reasoning(engine, q, cfg, cancel),
               aliases=("sr",),
               unbatched="it decodes its candidates as sequences of one context already"),
]
