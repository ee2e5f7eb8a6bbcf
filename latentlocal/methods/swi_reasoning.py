"""SwiReasoning: switch between latent and explicit thinking by the trend of the next-token entropy.

Shi et al. 2025, "SwiReasoning: Switch-Thinking in Latent and Explicit for Pareto-Superior
Reasoning LLMs" (arXiv 2510.05069, ICLR 2026). Rules and defaults follow the authors' code,
github.com/sdc17/SwiReasoning at 7f3b278 (BSD-3-Clause): ``generation_utils.py`` (``gu``)
``generate_swir`` and ``run.py``. Line numbers below are of that commit.

One loop decodes every position (thinking and answer alike), as ``generate_swir`` does:

* At each position the logits give p = softmax(logits) at temperature 1 over the whole
  vocabulary (gu:293-294) and its entropy H in nats (gu:317). A token is sampled from
  softmax(logits / T) after top-k -> top-p -> min-p (gu:295-302; ``sampling.sample_token``,
  argmax when ``temperature`` is 0, the code's ``--no-do_sample``); it is the visible token in
  both modes (gu:372-373).
* Latent mode feeds the soft embedding sum_v p[v] E[v] (gu:339); explicit mode feeds the
  sampled token (gu:338). Decoding starts in latent mode (gu:258).
* The switching rule (gu:318-330; :class:`SwitchController`): the first position's H is the
  reference (gu:318-319). From the second position on, every position adds one to the steps
  spent in the current mode (gu:321); latent -> explicit when H < reference, at once
  (gu:323); explicit -> latent when H > reference and at least ``window`` (512, gu:234) steps
  were spent in explicit mode since the last switch and thinking has not been closed (gu:322,
  324). A switch resets the step count and makes this H the reference (gu:327-328); the
  reference does not move between switches. ``switches`` counts latent -> explicit switches
  only (gu:329-330).
* Once thinking is closed by a sampled token, explicit mode is locked for the rest of the
  run (gu:303, 332).
* Digits, single letters and math symbols (the list of gu:108-132, tokenized by this model's
  tokenizer as gu:131 does, passed by run.py:218-219, 457) are fed as tokens even in latent
  mode; the mode itself does not change (gu:333-335).
* Blends (gu:341-350), with t the 0-based position and N = ``max_tokens``: the first position's
  soft embedding is 0.9 * soft + 0.1 * E["\\\\n"] (gu:342-343); at a switch to latent the soft
  embedding is alpha_t * soft + (1 - alpha_t) * E[<think>] with alpha_t = alpha + (1 - alpha) *
  t / N (gu:341, 345-346; ``alpha`` 1.0 = no blend, run.py:582; run.sh uses 0.1-1.0 per model
  and dataset); at a switch to explicit the input is beta_t * soft + (1 - beta_t) * E[</think>]
  with beta_t = beta + (1 - beta) * t / N, beta 0.7 (gu:233, 347-350), in place of the sampled
  token's row. gu:253 looks up the vocabulary entry spelled backslash-n (``"\\\\n"`` in Python
  source), which in byte-level BPE vocabularies is the two-character text, not a line break
  (that is "Ċ"); the same entry is used here, and a line break when no such token exists.
* Switch count control (gu:353-370), off by default (``max_switch_count`` None, run.py:583;
  the paper's README and run_chat.py:172 use 2): at the latent -> explicit switch that brings
  ``switches`` to between C and 2C (C = ``max_switch_count``), the convergence words are
  injected as the next tokens (``</think>``, or ``"\\n\\n</think>\\n\\n"`` for non-Qwen models,
  run.py:458, told apart here by the GGUF's architecture: llama, i.e. DeepSeek-R1-Distill-Llama,
  gets the second form); beyond 2C the termination words ``"</think>\\n\\nThe final answer is"``
  (gu:240) are injected and the run ends ``termination_max_tokens`` (32, gu:241) positions
  after that switch (gu:367-370, 383-384), the switch's own position included. Injected
  tokens replace the sampled one at the following positions (gu:305-315) and never lock
  explicit mode (the lock tests the sampled token, gu:303). C = 0 is accepted as the code
  accepts it (run.py:583; run_chat.py:83 refuses it interactively): the first latent ->
  explicit switch injects the termination words. The "explicit baseline" is not C = 0 but
  ``explicit_only`` (below).

This repository's rules on top (the same for every method):

* Models with a native ``</think>`` (reasoning models): thinking may use ``max_tokens`` minus
  ``answer_reserve`` positions; then ``</think>`` is forced as a token, and an
  end-of-generation token sampled while thinking is replaced by ``</think>`` (``phases``, via
  cot's ``_Stream``). The code has neither rule (it stops at an end-of-generation token,
  gu:377-379, and has no reserve); a forced ``</think>`` is fed as its token and locks explicit
  mode like a sampled one. The answer is read after the last ``</think>``.
* Models without one (the bundled SmolLM2, the Qwen2.5 evaluation model): the thinking span
  ends where the visible trace completes the answer marker "Final answer:" (as Soft Thinking
  does here); that locks explicit mode like a sampled ``</think>``. There is no ``<think>`` /
  ``</think>`` row to blend, so at a switch to latent the plain soft embedding is fed and at a
  switch to explicit the plain soft embedding too (beta_t = 1: the ``</think>`` term is left
  out); the convergence and the termination words are both the marker "\\n\\nFinal answer:"
  (``soft_thinking.forced_end_tokens``), the termination still followed by the 32-token budget.
  An end-of-generation token ends the run, as in the code and in cot.
* The run stops at the completed answer line ("Final answer: N"), at ``max_tokens`` positions,
  or at an end-of-generation token after thinking, as cot does; the code decodes until an
  end-of-generation token or its 32-token termination budget.

Deviations:

* The soft embedding is the mixture of the most probable tokens, at most ``latent_rows``
  (1024) of them, covering ``latent_mass`` (0.9999) of their probability, renormalised
  (``ConceptFilter`` at temperature 1 with top-k = ``latent_rows`` and top-p =
  ``latent_mass``, then ``EmbeddingTable.mix``), not the full 150k-row product of gu:339:
  rows are dequantized on demand from the GGUF and a full product would cost 150k rows a
  step. The weight left out is at most 1 - ``latent_mass`` plus what lies beyond
  ``latent_rows`` (at most 0.2% in 240 greedy steps measured on the evaluation model, the
  median step needing 1-4 tokens for 0.9999), so the input moves by at most about twice that
  times the largest row norm. A mixture of one token is fed as that token (the same input;
  the faster path), as Soft Thinking does. The entropy is the full-vocabulary one (tokens
  more than 30 nats down aside, below float32 resolution; see ``soft_thinking``).
* ``closed_stops_switching`` (off by default, as in the code): the code keeps the switching rule
  and the switch count control live after a sampled ``</think>`` has locked explicit mode
  (gu:303 only bars switches back to latent): a run still in latent mode at the lock switches to
  explicit at its next low-entropy position, counts it, feeds the ``</think>`` blend in the
  answer, and with a switch cap injects ``</think>`` or the termination words there. With the
  option on, closing thinking ends all of that: explicit mode, nothing counted or injected.
* ``max_tokens`` defaults to 512 (the code: 38912) and ``seed`` to 0 (the code: 42); with a
  budget below ``window`` no switch back to latent can happen, as in the code.

Token events carry the mode: ``mode="soft"`` where a soft embedding was fed (latent mode),
``"discrete"`` where a token was (explicit mode, math tokens inside latent mode, forced
``</think>``) and at the switch-to-explicit position, whose input is the blend above. Injected
words follow the mode, as in the code: at a latent position the soft embedding goes in and the
injected token is only recorded. Each position's ``entropy`` is H; ``prob`` is the sampled
token's probability under the filtered distribution; a latent step's ``top`` lists the
mixture's largest weights. On models without ``</think>`` tokens are in the ``think`` phase up
to the one completing the marker, as in Soft Thinking. ``Summary.extra`` has the switch counts
(``switches``, ``switches_to_explicit``, ``switches_to_latent``, ``switch_steps`` as [position,
new mode] pairs), ``latent_tokens`` / ``explicit_tokens``, ``thinking_tokens`` /
``answer_tokens``, ``switch_cap_injections`` and ``end_reason`` (marker, switch_cap, and on
native models budget or eos; also as ``think_end`` there).

``explicit_only`` never enters latent mode: every position is the sampled token, which is the
code's ``generate_cot`` with the same settings (run.py:431-441; ``temperature`` 0 gives
``cot_greedy``, run.py:442-453). It is the paper's CoT baseline decoded by this loop, and it
reproduces ``run_cot`` with the same sampling settings and seed token for token.

All randomness comes from ``numpy.random.default_rng(seed)``: one draw per position, in both
modes and at injected positions too (the code samples at every position, gu:299-300).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from latentlocal.engine import Engine
from latentlocal.events import Event, PhaseChange, Summary, Token
from latentlocal.markers import MarkerWatch
from latentlocal.methods import settings
from latentlocal.methods.chain import Feed, run_alone
from latentlocal.methods.cot import _Stream, prompt_tokens
from latentlocal.methods.soft_thinking import ConceptFilter, forced_end_tokens
from latentlocal.methods.spec import MethodSpec
from latentlocal.parity import check_embedding_input
from latentlocal.phases import DEFAULT_ANSWER_RESERVE, final_answer, fitted
from latentlocal.prompts import ANSWER_MARKER, COT_SYSTEM, reasoning_format
from latentlocal.sampling import Sampled, sample_token

# gu:109-128, fed as tokens even in latent mode
MATH_SYMBOLS = (
    "+", "-", "*", "/", "^", "=", "<", ">", "\\leq", "\\geq", "\\neq", "\\approx", "\\sim", "\\equiv",
    "\\to", "\\implies", "\\iff",
    "(", ")", "[", "]", "{", "}", "\\left(", "\\right)", "\\left[", "\\right]", "\\left\\{", "\\right\\}",
    "\\begin{pmatrix}", "\\end{pmatrix}",
    "\\frac", "\\dfrac", "\\sqrt", "\\sqrt[]",
    "\\in", "\\notin", "\\subset", "\\supset", "\\subseteq", "\\supseteq", "\\cup", "\\cap", "\\emptyset",
    "\\varnothing",
    "\\pi", "\\theta", "\\alpha", "\\beta", "\\gamma", "\\delta", "\\epsilon", "\\zeta", "\\lambda", "\\mu",
    "\\nu",
    "\\sin", "\\cos", "\\tan", "\\arcsin", "\\arccos", "\\arctan", "\\log", "\\ln", "\\exp",
    "_", "\\binom", "\\choose", "\\cdot", "\\dots", "\\ldots", "\\cdots", "\\vdots", "\\ddots",
    "\\mathbb", "\\mathbf", "\\mathrm", "\\text", "\\mbox",
    "\\infty", "\\circ", "\\prime", "\\ast", "\\star", "\\triangle", "\\triangleleft", "\\triangleright",
    "\\perp", "\\parallel", "\\angle",
    "\\boxed", "\\overline", "\\underline", "\\lceil", "\\rceil", "\\lfloor", "\\rfloor", "\\left", "\\right",
    "\\mid", "|", "\\vert", "\\Vert",
    "\\because", "\\therefore", "\\forall", "\\exists", "\\wedge", "\\vee", "\\neg",
    "\\sum", "\\prod", "\\int", "\\lim", "\\min", "\\max", "\\arg", "\\deg", "\\gcd", "\\operatorname",
    "\\cot",
    "\\cotg", "\\sec", "\\csc",
    *(chr(c) for c in range(ord("0"), ord("9") + 1)),
    *(chr(c) for c in range(ord("a"), ord("z") + 1)),
    *(chr(c) for c in range(ord("A"), ord("Z") + 1)),
)

# gu:240 and run.py:458
TERMINATION_WORDS = "</think>\n\nThe final answer is"


@dataclass(frozen=True)
class SwiReasoningConfig(Sampled, settings.Budgeted):
    """Defaults are the code's (run.py:574-583, gu:232-241): T 0.6, top-p 0.95, top-k 20,
    min-p 0, alpha 1.0, beta 0.7, window 512, no switch cap, 32 termination tokens."""

    max_tokens: int = settings.max_tokens(512)
    temperature: float = settings.temperature(0.6)  # 0 = greedy (the code's --no-do_sample)
    top_k: int = settings.top_k(20)
    top_p: float = settings.top_p(0.95)
    min_p: float = settings.min_p(0.0)
    alpha: float = settings.setting(  # alpha_0: <think> blend at a switch to latent; 1 = none
        1.0, flag="swir-alpha", bounds=settings.interval(0, 1),
        help="weight of the soft embedding against <think> at a switch to latent, rising to 1 at "
             "--max-tokens (1.0 = no blend)")
    beta: float = settings.setting(  # beta_0: </think> blend at a switch to explicit
        0.7, flag="swir-beta", bounds=settings.interval(0, 1),
        help="weight of the soft embedding against </think> at a switch to explicit, rising to 1 at "
             "--max-tokens")
    window: int = settings.setting(  # explicit steps before a switch back to latent
        512, flag="switch-window", bounds=settings.at_least(0),
        help="explicit steps before a switch back to latent is allowed")
    max_switch_count: int | None = settings.setting(  # None = no switch count control
        None, bounds=settings.at_least(0), why="(leave it unset for no cap)", shown="none = no cap",
        help="switch count control: after this many latent->explicit switches </think> is injected, "
             "after twice as many the answer is forced")
    termination_max_tokens: int = settings.setting(
        32, bounds=settings.at_least(1), help="positions after the switch that forces the answer")
    latent_rows: int = settings.setting(  # tokens in the soft embedding at most
        1024, bounds=settings.at_least(1), help="most tokens mixed into a soft embedding")
    latent_mass: float = settings.setting(  # probability the soft embedding covers
        0.9999, bounds=settings.interval(0, 1, "(]"), help="probability the soft embedding's tokens cover")
    math_explicit: bool = True        # digits, letters, math symbols fed as tokens (gu:333-335)
    closed_stops_switching: bool = settings.setting(  # deviation: gu keeps switching after </think>
        False, help="once thinking is closed, count no switches, inject no words and feed no blend "
                    "(the authors' code keeps switching in the answer: with --max-switch-count it "
                    "can write </think> into it)")
    explicit_only: bool = settings.setting(  # never latent: the code's generate_cot
        False, help="never think in latent mode: the paper's sampled CoT baseline in the same loop")
    answer_reserve: int = settings.answer_reserve(DEFAULT_ANSWER_RESERVE)
    seed: int | None = settings.seed()
    stop_after_answer: bool = True
    system: str | None = COT_SYSTEM
    answer_marker: str = ANSWER_MARKER
    top_events: int = 5               # mixture candidates shown per latent Token event
    onehot_tokens: bool = True        # feed a one-token mixture as its token (the same input)


# ---------------------------------------------------------------------------------------------
# the switching rule
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """What :meth:`SwitchController.observe` decided for one position."""

    latent: bool                # the mode after this position's rule (before lock/math overrides)
    to_explicit: bool = False
    to_latent: bool = False
    inject: str | None = None   # "convergence" or "termination": words queued from this switch
    done: bool = False          # the termination budget ends the run with this position


@dataclass
class SwitchController:
    """The mode, reference entropy and switch count control of ``generate_swir`` (gu:258-370)
    for one sequence, with no model attached: feed it each position's entropy.

    Per position: :meth:`choose` (the lock by a sampled end-of-thinking token, gu:303, then an
    injected token if one is queued, gu:305-315), then :meth:`observe` with the entropy (the
    rule, gu:317-330, and the cap, gu:353-370). ``convergence`` / ``termination`` are the token
    ids to inject (or callables returning them, for words that depend on the text so far).
    """

    window: int = 512
    max_switch_count: int | None = None
    convergence: Sequence[int] | Callable[[], Sequence[int]] = ()
    termination: Sequence[int] | Callable[[], Sequence[int]] = ()
    termination_max_tokens: int = 32
    start_latent: bool = True
    allow_latent: bool = True
    stop_when_locked: bool = False  # SwiReasoningConfig.closed_stops_switching
    latent: bool = field(init=False)
    ref: float | None = field(default=None, init=False)
    stay: int = field(default=0, init=False)
    position: int = field(default=0, init=False)
    locked: bool = field(default=False, init=False)
    switches: int = field(default=0, init=False)         # latent -> explicit (the code's switch_count)
    switches_to_latent: int = field(default=0, init=False)
    queue: list[int] = field(default_factory=list, init=False)
    answer_budget: int = field(default=-1, init=False)
    injections: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.latent = self.start_latent and self.allow_latent

    def choose(self, sampled: int, ends_thinking: bool = False) -> tuple[int, bool]:
        """The token recorded at this position and whether it was injected."""
        if ends_thinking:
            self.locked = True
        if self.queue:
            return self.queue.pop(0), True
        return sampled, False

    def lock(self) -> None:
        """Thinking was closed: no switch back to latent mode from now on."""
        self.locked = True

    def observe(self, entropy: float) -> Step:
        if self.locked and self.stop_when_locked:
            # thinking is closed: explicit for good, and a termination budget already running ends
            self.latent = False
            if self.answer_budget >= 0:
                self.answer_budget -= 1
            self.position += 1
            return Step(False, done=self.answer_budget == 0)
        to_e = to_l = False
        if self.position == 0:
            self.ref = float(entropy)
        else:
            self.stay += 1
            to_e = self.latent and entropy < self.ref
            to_l = (not self.latent and self.allow_latent and entropy > self.ref
                    and self.stay >= self.window and not self.locked)
            if to_e or to_l:
                self.latent = to_l
                self.stay = 0
                self.ref = float(entropy)
            if to_e:
                self.switches += 1
            elif to_l:
                self.switches_to_latent += 1
        inject = None
        cap = self.max_switch_count
        if cap is not None and self.position > 0:
            if to_e and cap <= self.switches <= 2 * cap:
                self.queue = list(self._ids(self.convergence))
                inject = "convergence"
            if to_e and self.switches > 2 * cap:
                self.queue = list(self._ids(self.termination))
                self.answer_budget = self.termination_max_tokens
                inject = "termination"
            if self.answer_budget >= 0:
                self.answer_budget -= 1
        if inject is not None:
            self.injections += 1
        self.position += 1
        return Step(self.latent, to_e, to_l, inject, self.answer_budget == 0)

    @staticmethod
    def _ids(ids: Sequence[int] | Callable[[], Sequence[int]]) -> Sequence[int]:
        return ids() if callable(ids) else ids


def math_token_ids(model) -> frozenset[int]:
    """Ids of the math symbols as this model's tokenizer splits them (gu:129-132)."""
    out: set[int] = set()
    for sym in MATH_SYMBOLS:
        out.update(model.tokenize(sym, add_special=False, parse_special=False))
    return frozenset(out)


def _convergence_text(model) -> str:
    """run.py:458: "</think>" for Qwen models, "\\n\\n</think>\\n\\n" otherwise. The GGUF's
    architecture stands in for the Hugging Face name: the code's models are Qwen3, QwQ and
    DeepSeek-R1-Distill-Qwen (qwen2/qwen3 architectures) and DeepSeek-R1-Distill-Llama (llama)."""
    return "\n\n</think>\n\n" if model.arch == "llama" else "</think>"


# ---------------------------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------------------------


class SwiChain:
    """SwiReasoning as steps (:mod:`latentlocal.methods.chain`): each step reads a position's
    logits, decides the mode and returns the next input (a token, or a soft embedding row).
    ``run_swi_reasoning`` runs one alone; ``latentlocal.batching.StepBatcher`` many side by side
    (``bench --batch``, the server)."""

    wants_logits = True

    def __init__(self, engine: Engine, cfg: SwiReasoningConfig, prompt: Sequence[int]) -> None:
        self.t0 = time.perf_counter()
        self.cfg = cfg
        model = self.model = engine.model
        if not cfg.explicit_only:
            check_embedding_input(engine)
        fmt = self.fmt = reasoning_format(model)
        native = self.native = fmt.native
        self.rng = np.random.default_rng(engine.seed if cfg.seed is None else cfg.seed)
        self.prompt = list(prompt)
        budget, self.notes = fitted(cfg.budget, engine.n_ctx, len(self.prompt))
        self.n_max = budget.max_tokens
        self.cells = len(self.prompt) + budget.max_tokens
        self.settings: dict[str, object] = {}
        st = self.st = _Stream(engine, (), cfg.answer_marker if cfg.stop_after_answer else None, budget, fmt)
        self.think_watch = None if native else MarkerWatch(fmt.answer_marker)
        if native:
            convergence: Sequence[int] | Callable[[], list[int]] = model.tokenize(
                _convergence_text(model), add_special=False, parse_special=True)
            termination: Sequence[int] | Callable[[], list[int]] = model.tokenize(
                TERMINATION_WORDS, add_special=False, parse_special=True)
        else:
            convergence = termination = lambda: forced_end_tokens(model, fmt, st.text)
        self.ctrl = SwitchController(cfg.window, cfg.max_switch_count, convergence, termination,
                                     cfg.termination_max_tokens, allow_latent=not cfg.explicit_only,
                                     stop_when_locked=cfg.closed_stops_switching)
        self.concept = ConceptFilter(1.0, cfg.latent_rows, cfg.latent_mass, 0.0, cfg.latent_rows)
        table = self.table = None if cfg.explicit_only else model.embeddings
        self.math_ids = math_token_ids(model) if cfg.math_explicit and not cfg.explicit_only else frozenset()
        self.end_row = self.start_row = self.lb_row = None
        if table is not None:
            if native:
                self.end_row = table.row(int(fmt.think_end_token))  # type: ignore[arg-type]
                start_tok = model.find_token("<think>")
                self.start_row = table.row(start_tok) if start_tok is not None else None
            lb = model.find_token("\\n")
            lb = lb if lb is not None else model.find_token("\n")
            self.lb_row = table.row(lb) if lb is not None else None
        self.top_n = max(0, cfg.top_events)
        self.thinking = True          # the thinking span is open
        self.think_tokens = 0         # positions of the thinking span (its closing token included)
        self.think_end: str | None = None
        self.latent_tokens = 0
        self.switch_steps: list[list] = []
        self.finish: str | None = None
        self.first_step_s: float | None = None

    def step(self, logits: np.ndarray | None) -> tuple[list[Event], Feed | None]:
        cfg, st, ctrl, fmt, native = self.cfg, self.st, self.ctrl, self.fmt, self.native
        t = len(st.tokens)  # this position's 0-based index
        lg = logits
        ids, w, h = self.concept(lg)
        sampled, prob = sample_token(lg, cfg.sampling, self.rng)
        tok, injected = ctrl.choose(sampled, native and sampled == fmt.think_end_token and self.thinking)
        fed = st.choose(tok)           # native: </think> at the thinking budget or for an eos
        forced = fed != tok
        was_thinking = self.thinking
        piece = st.push(fed)
        closed = None
        if was_thinking:
            self.think_tokens += 1
            if native:
                closed = st.closed
                if closed == "marker" and injected:
                    closed = "switch_cap"
            elif self.think_watch is not None and self.think_watch.push(piece):
                closed = "switch_cap" if injected else "marker"
            if closed is not None:
                self.thinking = False
                self.think_end = closed
                if not injected:
                    ctrl.lock()  # gu:303: closing thinking locks explicit mode (injected words do not)
        d = ctrl.observe(h)
        if d.to_explicit or d.to_latent:
            self.switch_steps.append([t, "explicit" if d.to_explicit else "latent"])
        soft = d.latent and not ctrl.locked and fed not in self.math_ids and not forced
        phase = st.token_phase if native else ("think" if was_thinking else "answer")
        top = ()
        if soft and self.top_n:
            k = min(self.top_n, ids.shape[0])
            top = tuple((self.model.token_text(int(ids[i])), float(w[i])) for i in range(k))
        self.latent_tokens += soft
        events: list[Event] = [Token(text=piece, token_id=fed, phase=phase, mode="soft" if soft else "discrete",
                                     entropy=h, prob=prob if fed == sampled else None, top=top)]
        if self.first_step_s is None:
            self.first_step_s = time.perf_counter() - self.t0
        if closed is not None:
            events.append(PhaseChange(phase="answer", reason=closed))
        if st.finish is not None:
            self.finish = st.finish
            return events, None
        if d.done:
            self.finish = "switch_cap"
            return events, None
        # ---- the next input (gu:338-351) ----
        table = self.table
        if soft:
            blend = (t == 0 and self.lb_row is not None) or (
                d.to_latent and self.start_row is not None and cfg.alpha < 1)
            if cfg.onehot_tokens and ids.shape[0] == 1 and not blend:
                return events, Feed((int(ids[0]),))
            row = table.mix(ids, w)
            if t == 0:
                if self.lb_row is not None:
                    row = 0.9 * row + 0.1 * self.lb_row
            elif d.to_latent and self.start_row is not None:
                a = cfg.alpha + (1.0 - cfg.alpha) * t / self.n_max
                row = a * row + (1.0 - a) * self.start_row
            return events, Feed(row=row)
        if d.to_explicit and not forced:
            row = table.mix(ids, w)
            if self.end_row is not None:
                b = cfg.beta + (1.0 - cfg.beta) * t / self.n_max
                row = b * row + (1.0 - b) * self.end_row
            return events, Feed(row=row)
        return events, Feed((fed,))

    def cancel(self) -> None:
        if self.finish is None:
            self.finish = "cancelled"

    def summary(self) -> Summary:
        st, cfg, ctrl, native = self.st, self.cfg, self.ctrl, self.native
        n = len(st.tokens)
        extra: dict[str, object] = {
            "thinking_tokens": st.think.think_tokens if native else self.think_tokens,
            "answer_tokens": n - (st.think.think_tokens if native else self.think_tokens),
            "latent_tokens": self.latent_tokens,
            "explicit_tokens": n - self.latent_tokens,
            "switches": len(self.switch_steps),
            "switches_to_explicit": ctrl.switches,
            "switches_to_latent": ctrl.switches_to_latent,
            "switch_cap_injections": ctrl.injections,
            "end_reason": self.think_end,
            **({"think_end": self.think_end} if native else {}),
            "switch_steps": self.switch_steps,
            "time_to_first_step_s": self.first_step_s,
            "prompt_tokens": len(self.prompt),
            "max_switch_count": cfg.max_switch_count,
            "alpha": cfg.alpha,
            "window": cfg.window,
            "explicit_only": cfg.explicit_only,
        }
        return Summary(
            method="swi-reasoning",
            answer=final_answer(st.text, self.fmt),
            text=st.text,
            generated_tokens=n,
            elapsed_s=time.perf_counter() - self.t0,
            finish_reason=self.finish or "length",
            extra=extra,
            settings=dict(self.settings),
        )


def swi_chain(engine: Engine, question: str, cfg: SwiReasoningConfig) -> SwiChain:
    return SwiChain(engine, cfg, prompt_tokens(engine, question, cfg.system))


def run_swi_reasoning(
    engine: Engine,
    question: str,
    cfg: SwiReasoningConfig = SwiReasoningConfig(),
    cancel: threading.Event | None = None,
    prompt: Sequence[int] | None = None,
) -> Iterator[Event]:
    """SwiReasoning decoding of one answer, streamed position by position (see the module
    docstring): a :class:`SwiChain` alone."""
    toks = list(prompt) if prompt is not None else prompt_tokens(engine, question, cfg.system)
    yield from run_alone(engine, SwiChain(engine, cfg, toks), cancel)


# ---------------------------------------------------------------------------------------------
# registry entries
# ---------------------------------------------------------------------------------------------


METHODS: list[MethodSpec] = [
    MethodSpec(
        "swi-reasoning",
        "SwiReasoning",
        "SwiReasoning: latent (soft embeddings) or explicit thinking, switched by the entropy trend",
        SwiReasoningConfig,
        lambda cfg: lambda engine, q, cancel=None: run_swi_reasoning(engine, q, cfg, cancel),
        aliases=("swir",),
        chain=lambda cfg: lambda engine, q: swi_chain(engine, q, cfg),
    ),
]
