"""Soft Thinking: reason with concept tokens (probability-weighted embedding mixtures), then answer.

Each thinking step turns the logits into p = softmax(logits / T) over the whole vocabulary, takes
its entropy H (nats, the Cold Stop signal), filters top-k -> top-p -> min-p (relative to the
largest p), keeps the ``max_topk`` largest, renormalises, and feeds sum_i w_i * E[id_i] as the
next input embedding (``EmbeddingTable.mix``, which carries the model's input scale). The visible
trace is the top-1 chain: every step yields a ``Token`` whose text and id are the concept's top-1
(in Mixture-of-Inputs mode, the sampled token).

Thinking runs from the first generated position until one of:

* ``marker``: the top-1 is the model's native ``</think>`` token (that token is then fed as a
  discrete token, as the paper does), or, for models without one (the bundled SmolLM2), the
  top-1 chain has spelled the prompt's answer marker "Final answer:" across however many tokens
  (``MarkerWatch``). The concepts that spelled the marker were fed as soft mixtures; the answer
  continues right after the marker text.
* ``cold_stop``: entropy stayed below ``cold_stop_entropy`` for ``cold_stop_patience``
  consecutive steps (the step that completes the run is fed, then the end is forced).
* ``budget``: ``think_budget`` thinking steps were taken; on a model with a native ``</think>``
  also when only ``answer_reserve`` positions of ``max_tokens`` are left (``phases.Budget``), so
  a reasoning model always reaches an answer.
* ``eos``: **an end-of-generation token is the top-1 while thinking. It is not fed; it is treated
  as the end of thinking: the end-of-thinking marker is inserted discretely and the answer phase
  runs, so an answer is still produced** (the Summary records ``end_reason="eos"`` and the answer
  phase's own ``finish_reason``). On a native model ``</think>`` takes the token's position.

Forcing the end (cold_stop, budget, eos) inserts, as discrete tokens, the native ``</think>``
token (part of the thinking span, as when the model writes it), or the marker text
("\\n\\nFinal answer:", part of the answer). The answer is then decoded with discrete tokens
(greedy by default, ``answer_temperature`` > 0 samples) and stops like cot: at the completed
answer line, an end-of-generation token, or ``max_tokens`` generated positions in all (thinking
steps + answer tokens; a forced marker is always inserted whole).

``Summary.text`` is the top-1 chain of the thinking followed by the discrete answer text; the
answer is read by ``phases.final_answer``: after ``</think>`` first on native models, so a draft
answer in the thinking cannot win; "Final answer: N" otherwise, whichever way thinking ended.

Options (all off by default):

* ``noise="gumbel"``: Gumbel-softmax on the kept weights, w' = softmax((log w + g) / tau),
  g ~ Gumbel(0, 1), tau = ``gumbel_tau`` (0.5), after ``max_topk`` as in the official code
  (eric-ai-lab/Soft-Thinking b97407c, sglang_soft_thinking_pkg/python/sglang/srt/layers/
  sampler.py lines 172-186).
* ``noise="dirichlet"``: w' ~ Dirichlet(alpha * w) with alpha = ``dirichlet_alpha`` (1.0): the
  form of the follow-up study (Wu et al. 2025, "LLMs are single-threaded reasoners"), whose mean
  is w and whose spread shrinks as alpha grows (Var w'_i = w_i (1 - w_i) / (alpha + 1)); alpha is
  the total concentration, so alpha -> infinity recovers plain soft thinking. Where the official
  code applies it (same sampler.py, lines 160-170, marked "not used in paper"): on the whole
  filtered distribution (after top-k, top-p and min-p, before ``max_topk``), then the ``max_topk``
  largest noisy weights are kept and renormalised, so a token outside the noiseless top
  ``max_topk`` can enter the concept (``dirichlet_on="filtered"``, the default).
  ``dirichlet_on="kept"`` is this tool's earlier placement: the noise on the ``max_topk`` kept
  weights only.
* ``mix="moi"``: Mixture of Inputs (Zhuang et al. 2025), as its reference code computes it
  (EvanZhuang/mixinputs 7aef34b, mixinputs/gpu_model_runner.py lines 1192-1228; the default,
  ``moi_prior="raw"``):

  - prior p = softmax over the ``moi_top_k`` (20) largest *raw* logits, at temperature 1 and
    before top-k / top-p / min-p: the reference reads vLLM's top-20 logprobs (line 1195; 20 is
    its default, mixinputs/gpu_input_batch.py line 330), which vLLM's V1 sampler (the reference
    needs vLLM 0.8.5) takes from the original logits (vllm/v1/sample/sampler.py,
    ``Sampler.forward``: "Use the original logits (before any penalties or temperature scaling)
    for the top-k logprobs"), and renormalises them with a softmax (line 1202);
  - H_n = H(p) / ln 20 (lines 1204-1209);
  - a token s is sampled from this run's own sampling distribution, softmax(logits / T) through
    top-k, top-p and min-p (the reference takes vLLM's sampled token, drawn with the request's
    settings);
  - post = (p + beta * onehot(s)) / (1 + beta), beta = ``moi_beta`` (1) (lines 1211-1218), and
    the input is H_n * sum_i post_i e_i + (1 - H_n) * e_s (lines 1224-1228).

  Where the inputs differ: p is not the concept distribution (no temperature, no top-p / min-p),
  so H_n is typically well above the sharpened distribution's; s can lie outside the top 20
  (when the filter chain keeps more than 20 tokens), and then, as in the reference's
  ``observed_mask``, the posterior gets no observation and the weights sum to
  H_n / (1 + beta) + 1 - H_n < 1. The reference's beta <= -99 "direct mixture" is not offered.
  ``moi_prior="filtered"`` is this tool's earlier form (the one the README's MoI result rows
  used): candidates are the concept's filter chain (softmax(logits / T), top-k, top-p, min-p)
  kept to ``moi_top_k``, s is sampled from them, p is their renormalised weights and H_n = H(p) /
  ln 20 clipped to [0, 1] (sharpened by T and truncated by top-p, so usually a lower H_n than
  the reference's). In both forms the event entropy and Cold Stop use the full-vocabulary H at
  T, and the trace is s.
* ``think_budget``: end thinking after that many steps, like Cold Stop (reason ``budget``).

All randomness comes from ``numpy.random.default_rng(seed)``.

Performance: a concept with a single candidate (w = [1], common at T 0.6 with top-p 0.95) is
E[t] exactly, so it is fed as token t (``onehot_tokens``; the token path is the faster one in
llama.cpp, and the embedding-parity tests show both inputs give the same logits). One
full-vocabulary pass finds the tokens within 30 (temperature-scaled) nats of the
best; exp, entropy and top-k run on those only. Tokens further down have p < e^-30 * p_max: they
cannot enter the top-k (the fast path is taken only when at least top_k tokens lie inside), they
cancel out of the renormalised weights, and they move H by less than V * 31 * e^-30 (~1e-7 nats for
a 49k vocabulary): below float32 resolution. The reference MoI form adds one full-vocabulary
partial sort per step (its raw top 20), and its mixtures almost never have a single token, so
every one of its steps decodes an embedding row.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from latentlocal.engine import Engine, TextStream
from latentlocal.errors import LatentLocalError
from latentlocal.events import ColdStop, Event, PhaseChange, Summary, Token
from latentlocal.markers import AnswerLineWatch, MarkerWatch
from latentlocal.methods import settings
from latentlocal.methods.chain import Feed, run_alone
from latentlocal.methods.cot import prompt_tokens
from latentlocal.methods.spec import MethodSpec
from latentlocal.parity import check_embedding_input
from latentlocal.phases import DEFAULT_ANSWER_RESERVE, Budget, final_answer, fitted
from latentlocal.prompts import ANSWER_MARKER, COT_SYSTEM, ReasoningFormat, reasoning_format
from latentlocal.sampling import SamplingConfig, entropy, filter_chain, sample_token, softmax

NOISES = ("none", "gumbel", "dirichlet")
MIXES = ("concept", "moi")
MOI_PRIORS = ("raw", "filtered")      # the MoI reference's raw top-20 | this tool's earlier form
DIRICHLET_ON = ("filtered", "kept")   # the official placement (before max_topk) | the earlier one

# Tokens more than this many temperature-scaled nats below the best are left out of exp/entropy.
_CUT_NATS = 30.0


@dataclass(frozen=True)
class SoftThinkingConfig(settings.Budgeted):
    """Defaults are the paper's (QwQ-32B): T 0.6, top-p 0.95, top-k 30, min-p 0.001, max_topk 10."""

    max_tokens: int = settings.max_tokens(512)
    temperature: float = settings.temperature(
        0.6, bounds=settings.positive(), why="for soft thinking (the concept weights are softmax(logits / T))")
    top_k: int = settings.top_k(30)
    top_p: float = settings.top_p(0.95)
    min_p: float = settings.min_p(0.001)
    max_topk: int = settings.setting(10, help="tokens mixed into each concept", bounds=settings.at_least(1))
    cold_stop_entropy: float = settings.setting(
        0.01, help="Cold Stop entropy threshold in nats (0 = off)", bounds=settings.at_least(0), why="(0 = off)")
    cold_stop_patience: int = settings.setting(
        256, help="consecutive low-entropy steps before Cold Stop (0 = off)", bounds=settings.at_least(0),
        why="(0 = off)")
    noise: str = settings.setting("none", help="randomness on the concept weights", choices=NOISES)
    gumbel_tau: float = settings.setting(0.5, help="Gumbel-softmax temperature", bounds=settings.positive())
    dirichlet_alpha: float = settings.setting(
        1.0, help="Dirichlet concentration: w' ~ Dir(alpha * w) (larger = less noise)", bounds=settings.positive())
    dirichlet_on: str = settings.setting(
        "filtered", choices=DIRICHLET_ON,
        help="Dirichlet noise over the whole filtered distribution before --max-topk, as the official code "
             "(filtered), or over the --max-topk kept weights (kept)")
    mix: str = settings.setting("concept", help="concept (soft thinking) or moi (Mixture of Inputs)", choices=MIXES)
    moi_beta: float = settings.setting(1.0, help="Mixture of Inputs beta", bounds=settings.at_least(0))
    moi_top_k: int = 20
    moi_prior: str = settings.setting(
        "raw", choices=MOI_PRIORS,
        help="Mixture of Inputs prior: the reference's softmax of the top-20 raw logits (raw) or the "
             "temperature-sharpened, filtered concept candidates (filtered, the earlier form)")
    think_budget: int = settings.setting(
        0, help="end thinking after this many steps (0 = no budget; thinking models also stop at "
                "--max-tokens minus --answer-reserve)", bounds=settings.at_least(0), why="(0 = no budget)")
    answer_reserve: int = settings.answer_reserve(DEFAULT_ANSWER_RESERVE)  # native </think> models
    answer_temperature: float = settings.setting(
        0.0, help="temperature of the discrete answer (0 = greedy)", bounds=settings.at_least(0),
        why="(0 = greedy)")
    seed: int | None = settings.seed()
    stop_after_answer: bool = True
    system: str | None = COT_SYSTEM
    answer_marker: str = ANSWER_MARKER
    top_events: int = 5               # candidates shown per Token event
    onehot_tokens: bool = True        # feed a one-candidate concept as its token id (same input)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mix == "moi" and self.noise != "none":
            raise LatentLocalError(
                f"--noise {self.noise} and --mix moi do not combine: Mixture of Inputs samples its own "
                "token; pick one"
            )
        if self.moi_top_k < 2:
            raise LatentLocalError(f"moi_top_k must be at least 2, not {self.moi_top_k}")

    @property
    def budget(self) -> Budget:
        return Budget(self.max_tokens, self.answer_reserve, self.think_budget)

    @property
    def answer_sampling(self) -> SamplingConfig:
        """Discrete answer decoding: greedy unless ``answer_temperature`` > 0 (then the thinking
        top-k / top-p, min-p off, like the paper's after-thinking settings)."""
        return SamplingConfig(temperature=self.answer_temperature, top_k=self.top_k, top_p=self.top_p)


# ---------------------------------------------------------------------------------------------
# the concept: filter chain + entropy
# ---------------------------------------------------------------------------------------------


class ConceptFilter:
    """Logits -> (token ids, renormalised weights, full-vocabulary entropy in nats).

    Same result as ``filter_chain(softmax(logits / T), top_k, top_p, min_p, max_keep)`` and
    ``entropy(softmax(logits / T))``, with the full-vocabulary work cut to one comparison pass
    (see the module docstring). Ids come sorted by descending weight.
    """

    def __init__(self, temperature: float, top_k: int, top_p: float, min_p: float, max_keep: int) -> None:
        self.temperature = float(temperature)
        self.top_k = int(top_k)
        self.top_p = float(top_p)
        self.min_p = float(min_p)
        self.max_keep = int(max_keep)
        self._cut = _CUT_NATS * self.temperature  # in raw logit units
        self.fast_steps = 0
        self.full_steps = 0

    def full(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """The plain reference path (used when the fast path cannot guarantee the top-k)."""
        p = softmax(logits, self.temperature)
        ids, w = filter_chain(p, self.top_k, self.top_p, self.min_p, self.max_keep)
        self.full_steps += 1
        return ids, w, entropy(p)

    def __call__(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        lg = np.asarray(logits)
        k = self.top_k
        if not 0 < k < lg.shape[0]:
            return self.full(lg)
        m = lg.max()
        idx = np.flatnonzero(lg >= m - self._cut)
        n = idx.size
        if n < k:
            return self.full(lg)
        z = (lg[idx].astype(np.float64) - float(m)) / self.temperature
        e = np.exp(z)
        s = float(e.sum())
        h = max(0.0, math.log(s) - float(np.dot(e, z)) / s)
        sel = np.argpartition(-z, k - 1)[:k] if n > k else np.arange(n)
        local, w = filter_chain(e[sel] / s, 0, self.top_p, self.min_p, self.max_keep)
        self.fast_steps += 1
        return idx[sel[local]], w, h


# ---------------------------------------------------------------------------------------------
# noise and Mixture of Inputs
# ---------------------------------------------------------------------------------------------


def _sorted(ids: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-w, kind="stable")
    return ids[order], w[order]


def gumbel_weights(w: np.ndarray, tau: float, rng: np.random.Generator) -> np.ndarray:
    """Gumbel-softmax on kept weights: softmax((log w + g) / tau), g ~ Gumbel(0, 1)."""
    z = (np.log(w) + rng.gumbel(size=w.shape[0])) / tau
    z -= z.max()
    e = np.exp(z)
    return e / e.sum()


def dirichlet_weights(w: np.ndarray, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """w' ~ Dirichlet(alpha * w): mean w, total concentration alpha."""
    if w.shape[0] == 1:
        return w.copy()
    out = rng.dirichlet(alpha * w)
    if not np.all(np.isfinite(out)) or out.sum() <= 0:  # every gamma draw underflowed
        return w.copy()
    return out / out.sum()


def dirichlet_concept(
    ids: np.ndarray, w: np.ndarray, alpha: float, max_topk: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Dirichlet noise where the official code applies it: w' ~ Dirichlet(alpha * w) over the
    whole filtered distribution (``ids``, ``w``: after top-k / top-p / min-p), then the
    ``max_topk`` largest w' renormalised, sorted by descending weight (tokens whose gamma draw
    underflowed to 0 are dropped)."""
    ids, wn = _sorted(ids, dirichlet_weights(w, alpha, rng))
    ids, wn = ids[:max_topk], wn[:max_topk]
    keep = wn > 0
    ids, wn = ids[keep], wn[keep]
    return ids, wn / wn.sum()


def _draw(w: np.ndarray, rng: np.random.Generator) -> int:
    """An index drawn with probabilities ``w`` (one uniform draw)."""
    c = np.cumsum(w)
    return min(int(np.searchsorted(c, rng.random() * c[-1], side="right")), w.shape[0] - 1)


def moi_raw_prior(logits: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The MoI reference's prior: the ``n`` largest raw logits (temperature 1, no top-p / min-p)
    and softmax over them, sorted by descending probability (mixinputs gpu_model_runner.py 1202:
    ``softmax`` of vLLM's top-20 raw logprobs, which renormalises them over those 20)."""
    lg = np.asarray(logits)
    v = lg.shape[0]
    n = min(int(n), v)
    ids = np.argpartition(-lg, n - 1)[:n] if n < v else np.arange(v)
    ids = ids[np.argsort(-lg[ids], kind="stable")]
    z = lg[ids].astype(np.float64)
    e = np.exp(z - z[0])
    return ids, e / e.sum()


def moi_mixture(
    ids: np.ndarray, prior: np.ndarray, token: int, beta: float, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mixture-of-Inputs input weights: (ids, weights) with
    weights = H_n * (prior + beta * onehot(token)) / (1 + beta) + (1 - H_n) * onehot(token),
    H_n = H(prior) / ln(n) clipped to [0, 1] (mixinputs gpu_model_runner.py 1204-1228).

    A ``token`` not in ``ids`` gets only the (1 - H_n) share, appended as a last id: the
    reference's ``observed_mask`` is then all zero, and the weights sum to less than 1."""
    h_n = min(1.0, max(0.0, entropy(prior) / math.log(n)))
    out = np.asarray(prior, dtype=np.float64) * (h_n / (1.0 + beta))
    hit = np.flatnonzero(ids == token)
    if hit.size:
        out[hit[0]] += h_n * beta / (1.0 + beta) + (1.0 - h_n)
        return np.asarray(ids), out
    return np.append(ids, token), np.append(out, 1.0 - h_n)


def moi_weights(
    w: np.ndarray, beta: float, top_k: int, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """The earlier form (``moi_prior="filtered"``) over candidates with weights ``w``: (input
    weights, sampled index): a token is drawn from ``w`` and ``moi_mixture`` is applied with
    ``w`` as the prior and n = ``top_k``."""
    j = _draw(w, rng)
    return moi_mixture(np.arange(w.shape[0]), w, j, beta, top_k)[1], j


# ---------------------------------------------------------------------------------------------
# end-of-thinking rules
# ---------------------------------------------------------------------------------------------


class ColdStopCounter:
    """Counts consecutive steps with entropy below ``threshold``; fires at ``patience``.

    A step at or above the threshold resets the count. ``threshold`` or ``patience`` 0 = off.
    """

    def __init__(self, threshold: float, patience: int) -> None:
        self.threshold = float(threshold)
        self.patience = int(patience)
        self.count = 0

    @property
    def enabled(self) -> bool:
        return self.threshold > 0 and self.patience > 0

    def push(self, h: float) -> bool:
        """Record one step's entropy; True when this step completes ``patience`` low steps."""
        if not self.enabled:
            return False
        self.count = self.count + 1 if h < self.threshold else 0
        return self.count >= self.patience


def thinking_end(token: int, fmt: ReasoningFormat, is_eog: Callable[[int], bool]) -> str | None:
    """Whether the top-1 ``token`` ends thinking by itself: "marker" for the native end-of-thinking
    token, "eos" for an end-of-generation token, else None (the text marker is watched apart)."""
    if fmt.think_end_token is not None and token == fmt.think_end_token:
        return "marker"
    if is_eog(token):
        return "eos"
    return None


def forced_end_tokens(model, fmt: ReasoningFormat, text: str) -> list[int]:
    """Discrete tokens that force the end of thinking: ``</think>``, or "\\n\\nFinal answer:"."""
    if fmt.think_end_token is not None:
        return [fmt.think_end_token]
    if not text or text.endswith("\n\n"):
        sep = ""
    elif text.endswith("\n"):
        sep = "\n"
    else:
        sep = "\n\n"
    return model.tokenize(sep + fmt.answer_marker, add_special=False, parse_special=False)


# ---------------------------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------------------------


def _fast_greedy(logits: np.ndarray) -> tuple[int, float]:
    """Argmax and its probability at T = 1 (tokens 30+ nats down ignored: < 1e-8 relative)."""
    lg = np.asarray(logits)
    tok = int(lg.argmax())
    m = float(lg[tok])
    near = lg[lg >= m - _CUT_NATS].astype(np.float64)
    return tok, float(1.0 / np.exp(near - m).sum())


class SoftThinkingChain:
    """Soft thinking then a discrete answer as steps (:mod:`latentlocal.methods.chain`): each
    thinking step turns logits into a concept and feeds it (an embedding row, or the token when
    the concept has one candidate); the answer steps feed tokens. ``run_soft_thinking`` runs one
    alone, ``latentlocal.batching.StepBatcher`` many side by side (see the module docstring for
    the rules)."""

    def __init__(
        self,
        engine: Engine,
        cfg: SoftThinkingConfig,
        prompt: Sequence[int],
        fmt: ReasoningFormat | None = None,
    ) -> None:
        self.t0 = time.perf_counter()
        self.cfg = cfg
        model = self.model = engine.model
        check_embedding_input(engine)
        fmt = self.fmt = fmt or reasoning_format(model)
        self.rng = np.random.default_rng(engine.seed if cfg.seed is None else cfg.seed)
        self.prompt = list(prompt)
        self.table = model.embeddings  # created once per model (reads the GGUF's tensor index)
        self.moi = cfg.mix == "moi"
        self.moi_raw = self.moi and cfg.moi_prior == "raw"
        self.dirichlet_filtered = cfg.noise == "dirichlet" and cfg.dirichlet_on == "filtered"
        # The filter chain's cap: none where the whole filtered distribution is needed (the MoI
        # reference samples from all of it; official Dirichlet noise is drawn over all of it).
        keep = 0 if (self.moi_raw or self.dirichlet_filtered) else (cfg.moi_top_k if self.moi else cfg.max_topk)
        self.concept = ConceptFilter(cfg.temperature, cfg.top_k, cfg.top_p, cfg.min_p, keep)
        self.cold = ColdStopCounter(cfg.cold_stop_entropy, cfg.cold_stop_patience)
        self.marker = cfg.answer_marker if cfg.stop_after_answer else None
        text_fmt = fmt.think_end_token is None
        self.think_watch = MarkerWatch(fmt.answer_marker) if text_fmt else None
        # With a text marker the answer line follows the thinking text; a native </think> model
        # starts watching for the answer line after </think>.
        self.answer_watch = AnswerLineWatch(self.marker) if (self.marker and text_fmt) else None
        self.native = fmt.native
        # Native models always get an answer: thinking ends with a forced </think> when only the
        # answer reserve is left. Text-marker models keep the plain --think-budget rule.
        budget, self.notes = fitted(cfg.budget, engine.n_ctx, len(self.prompt))
        self.max_tokens = budget.max_tokens
        self.think_limit = budget.think_limit() if self.native else cfg.think_budget
        self.budget_on = self.native or cfg.think_budget > 0
        # a forced end of thinking counts against max_tokens (_end_thinking), so no run needs more
        self.cells = len(self.prompt) + self.max_tokens
        self.settings: dict[str, object] = {}
        self.out = TextStream(model)
        self.parts: list[str] = []
        self.think_steps = 0
        self.answer_steps = 0
        self.end_reason: str | None = None
        self.finish: str | None = None
        self.cold_fired = False
        self.first_step_s: float | None = None
        self._pending: Feed | None = None  # a forced input after this step's concept

    @property
    def wants_logits(self) -> bool:
        return self._pending is None and self.finish is None

    def step(self, logits: np.ndarray | None) -> tuple[list[Event], Feed | None]:
        if self._pending is not None:
            feed, self._pending = self._pending, None
            return [], feed
        if self.finish is not None:
            return [], None
        if self.end_reason is None:
            return self._think(logits)
        return self._answer(logits)

    def _think(self, logits: np.ndarray) -> tuple[list[Event], Feed | None]:
        cfg, model, fmt, rng = self.cfg, self.model, self.fmt, self.rng
        ids, w, h = self.concept(logits)
        if self.moi_raw:
            trace = int(ids[_draw(w, rng)])
            pids, prior = moi_raw_prior(logits, cfg.moi_top_k)
            ids, w = _sorted(*moi_mixture(pids, prior, trace, cfg.moi_beta, cfg.moi_top_k))
            nz = (w > 0) | (ids == trace)  # a prior entry that underflowed adds nothing
            ids, w = ids[nz], w[nz]
        elif self.moi:
            w, j = moi_weights(w, cfg.moi_beta, cfg.moi_top_k, rng)
            trace = int(ids[j])
            ids, w = _sorted(ids, w)
        else:
            if cfg.noise == "gumbel" and w.shape[0] > 1:
                ids, w = _sorted(ids, gumbel_weights(w, cfg.gumbel_tau, rng))
            elif cfg.noise == "dirichlet" and w.shape[0] > 1:
                if self.dirichlet_filtered:  # noise on the filtered distribution, then max_topk
                    ids, w = dirichlet_concept(ids, w, cfg.dirichlet_alpha, cfg.max_topk, rng)
                else:  # the earlier placement: on the max_topk kept weights
                    ids, w = _sorted(ids, dirichlet_weights(w, cfg.dirichlet_alpha, rng))
            trace = int(ids[0])
        self.think_steps += 1
        reason = thinking_end(trace, fmt, model.is_eog)
        top_n = cfg.top_events
        k = min(max(1, top_n), ids.shape[0])
        top = tuple((model.token_text(int(ids[i])), float(w[i])) for i in range(k)) if top_n > 0 else ()
        wt = float(w[0]) if not self.moi else float(w[int(np.flatnonzero(ids == trace)[0])])
        # With a native </think>, an end-of-generation top-1 is not fed: </think> takes its place.
        swap = self.native and reason == "eos"
        if swap:
            trace, wt = int(fmt.think_end_token), None  # type: ignore[arg-type]
        piece = "" if reason == "eos" and not swap else self.out.push(trace)
        self.parts.append(piece)
        events: list[Event] = [Token(text=piece, token_id=trace, phase="think",
                                     mode="discrete" if reason == "marker" or swap else "soft",
                                     entropy=h, prob=wt, top=top)]
        if self.first_step_s is None:
            self.first_step_s = time.perf_counter() - self.t0
        feed: Feed | None = None
        if reason == "eos" and not swap:
            pass  # not fed: the end of thinking is forced below
        elif reason is not None:
            feed = Feed((trace,))  # the native end-of-thinking token, discretely
        else:
            if cfg.onehot_tokens and ids.shape[0] == 1:
                feed = Feed((trace,))  # w = [1]: the concept is E[trace], the token itself
            else:
                feed = Feed(row=self.table.mix(ids, w))
            if self.think_watch is not None:
                if self.answer_watch is not None:
                    self.answer_watch.push(piece)
                if self.think_watch.push(piece):
                    reason = "marker"
            if reason is None:
                if self.cold.push(h):
                    reason = "cold_stop"
                    self.cold_fired = True
                    events.append(ColdStop(step=self.think_steps, threshold=self.cold.threshold,
                                           patience=self.cold.patience))
                elif self.budget_on and self.think_steps >= self.think_limit:
                    reason = "budget"
        if reason is not None:
            self.end_reason = reason
            forced = self._end_thinking(events)
            if feed is None:
                feed, forced = forced, None
            self._pending = forced  # fed even when the chain has just finished, as alone
        elif self.think_steps >= self.max_tokens:
            self.finish = "length"  # this step's concept is still fed
        return events, feed

    def _end_thinking(self, events: list[Event]) -> Feed | None:
        """Thinking ended (``end_reason``): the forced end of thinking, if any, as a feed."""
        model, fmt, reason = self.model, self.fmt, self.end_reason
        forced: Feed | None = None
        # A forced end goes in whole or not at all: past max_tokens it broke the request's cap
        # (by up to the marker's length), and a cut marker is no marker
        room = self.max_tokens - self.think_steps - self.answer_steps
        if self.native and reason in ("cold_stop", "budget") and room >= 1:
            end = int(fmt.think_end_token)  # type: ignore[arg-type]
            forced = Feed((end,))
            piece = self.out.push(end)
            self.parts.append(piece)
            self.think_steps += 1
            events.append(Token(text=piece, token_id=end, phase="think", mode="discrete"))
        events.append(PhaseChange(phase="answer", reason=reason))  # type: ignore[arg-type]
        if self.marker and self.answer_watch is None:
            self.answer_watch = AnswerLineWatch(self.marker)
        toks = (forced_end_tokens(model, fmt, "".join(self.parts))
                if not self.native and reason in ("cold_stop", "budget", "eos") else [])
        if toks and len(toks) <= room:
            forced = Feed(tuple(toks))
            for tok in toks:
                piece = self.out.push(tok)
                self.parts.append(piece)
                self.answer_steps += 1
                if self.answer_watch is not None:
                    self.answer_watch.push(piece)
                events.append(Token(text=piece, token_id=tok, phase="answer", mode="discrete"))
        if self.answer_watch is not None and self.answer_watch.push(""):
            self.finish = "answer"  # the marker's own token already completed the answer line
        elif self.think_steps + self.answer_steps >= self.max_tokens or (toks and forced is None):
            self.finish = "length"  # (no room for the marker: there is none for an answer either)
        return forced

    def _answer(self, logits: np.ndarray) -> tuple[list[Event], Feed | None]:
        sampling = self.cfg.answer_sampling
        tok, prob = _fast_greedy(logits) if sampling.greedy else sample_token(logits, sampling, self.rng)
        self.answer_steps += 1
        if self.model.is_eog(tok):
            self.finish = "eos"
            return [Token(text="", token_id=tok, phase="answer", mode="discrete", prob=prob)], None
        piece = self.out.push(tok)
        self.parts.append(piece)
        events: list[Event] = [Token(text=piece, token_id=tok, phase="answer", mode="discrete", prob=prob)]
        if self.answer_watch is not None and self.answer_watch.push(piece):
            self.finish = "answer"
        elif self.think_steps + self.answer_steps >= self.max_tokens:
            self.finish = "length"
        else:
            return events, Feed((tok,))
        return events, None

    def cancel(self) -> None:
        if self.finish is None:
            self.finish = "cancelled"

    def summary(self) -> Summary:
        cfg = self.cfg
        tail = self.out.flush()
        if tail:
            self.parts.append(tail)
        text = "".join(self.parts)
        return Summary(
            method="soft-thinking",
            answer=final_answer(text, self.fmt),
            text=text,
            generated_tokens=self.think_steps + self.answer_steps,
            elapsed_s=time.perf_counter() - self.t0,
            finish_reason=self.finish or "length",
            extra={
                "thinking_tokens": self.think_steps,
                "answer_tokens": self.answer_steps,
                "cold_stop": self.cold_fired,
                "end_reason": self.end_reason,
                **({"think_end": self.end_reason} if self.native else {}),
                "time_to_first_step_s": self.first_step_s,
                "prompt_tokens": len(self.prompt),
                "mix": cfg.mix,
                "noise": cfg.noise,
                **({"moi_prior": cfg.moi_prior} if self.moi else {}),
                **({"dirichlet_on": cfg.dirichlet_on} if cfg.noise == "dirichlet" else {}),
            },
            settings=dict(self.settings),
        )


def soft_thinking_chain(engine: Engine, question: str, cfg: SoftThinkingConfig) -> SoftThinkingChain:
    return SoftThinkingChain(engine, cfg, prompt_tokens(engine, question, cfg.system))


def run_soft_thinking(
    engine: Engine,
    question: str,
    cfg: SoftThinkingConfig = SoftThinkingConfig(),
    cancel: threading.Event | None = None,
    prompt: Sequence[int] | None = None,
    fmt: ReasoningFormat | None = None,
) -> Iterator[Event]:
    """Soft thinking then a discrete answer, streamed step by step (see the module docstring).

    ``fmt`` overrides where thinking ends (default: ``reasoning_format(engine.model)``).
    """
    toks = list(prompt) if prompt is not None else prompt_tokens(engine, question, cfg.system)
    yield from run_alone(engine, SoftThinkingChain(engine, cfg, toks, fmt), cancel)


# ---------------------------------------------------------------------------------------------
# registry entries
# ---------------------------------------------------------------------------------------------


METHODS: list[MethodSpec] = [
    MethodSpec(
        "soft-thinking",
        "Soft Thinking",
        "Soft Thinking: concept tokens (embedding mixtures) while thinking, Cold Stop, discrete answer",
        SoftThinkingConfig,
        lambda cfg: lambda engine, q, cancel=None: run_soft_thinking(engine, q, cfg, cancel),
        aliases=("st",),
        chain=lambda cfg: lambda engine, q: soft_thinking_chain(engine, q, cfg),
    ),
]
