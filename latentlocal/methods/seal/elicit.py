"""Cue elicitation for SEAL extraction (``--elicit cue``): where to force a reflection or
transition cue, since small instruction models rarely write one on their own."""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Sequence

import numpy as np

from latentlocal.engine import Model
from latentlocal.errors import LatentLocalError
from latentlocal.methods.seal.thoughts import CUES


class CuePicker:
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
