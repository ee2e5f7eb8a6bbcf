"""``bench --batch``: several problems decoded at once give the lone runs' results where the lone
run's decisions are not near ties, resume, and refuse what cannot batch."""

from __future__ import annotations

import argparse
import json
import math
import threading
from pathlib import Path

import numpy as np
import pytest

from latentlocal.datasets import load_problems
from latentlocal.eval.report import read_results
from latentlocal.eval.runner import batch_context, parse_method_spec, run_bench
from latentlocal.methods.cot import CotChain
from latentlocal.methods.registry import chain_from_options, runner_from_options
from latentlocal.methods.soft_thinking import (SoftThinkingChain, SoftThinkingConfig, run_soft_thinking,
                                               soft_thinking_chain)

DATA = Path(__file__).parent / "data" / "gsm8k_train_head.jsonl"
# llama.cpp's batched numerics are not one sequence's: a prompt decoded after other sequences'
# cells in the same cache gets logits up to ~0.6 away from the same prompt decoded alone (measured
# on the bundled model), and a batched chain that has emitted the lone chain's tokens so far stays
# that close. A decision whose top-1 margin is wider than this cannot flip.
WIDE = 1.0
# Soft Thinking through its embedding-row path with one candidate per concept (each row is the
# top-1's embedding, fed as a row, not as the token): its decisions are top-1 choices, so the
# margin above covers them. (With real mixtures the batch moves the concept weights, and the
# drift grows along the chain: no fixed margin bounds it.)
ST_ROWS = SoftThinkingConfig(max_tokens=32, max_topk=1, onehot_tokens=False)


def _methods(specs=("cot",), **common):
    base = argparse.Namespace(max_tokens=32, **common)
    out, chains = [], {}
    for spec in specs:
        label, name, options = parse_method_spec(spec, base)
        out.append((label, runner_from_options(name, options)))
        chains[label] = chain_from_options(name, options)
    return out, chains


class _Steps:
    """Per chain (by method class and prompt): each logits step's top-1 margin and the token ids
    it emitted."""

    def __init__(self, monkeypatch) -> None:
        self.log: dict[tuple[str, tuple[int, ...]], list[tuple[float, list[int]]]] = {}
        for cls in (CotChain, SoftThinkingChain):
            monkeypatch.setattr(cls, "step", self._spy(cls.step))

    def _spy(self, real):
        def step(chain, logits):
            events, feed = real(chain, logits)
            if logits is not None:
                top = np.partition(np.asarray(logits), -2)[-2:]
                key = (type(chain).__name__, tuple(chain.prompt))
                self.log.setdefault(key, []).append(
                    (float(abs(top[1] - top[0])), [e.token_id for e in events if hasattr(e, "token_id")]))
            return events, feed

        return step

    def take(self):
        log, self.log = self.log, {}
        return log


def _step_sizes(engine, monkeypatch) -> list[tuple[str, int]]:
    sizes: list[tuple[str, int]] = []
    real = engine.decode_step

    def step(seqs, tokens=None, rows=None):
        sizes.append(("tokens" if rows is None else "rows", len(seqs)))
        return real(seqs, tokens=tokens, rows=rows)

    monkeypatch.setattr(engine, "decode_step", step)
    return sizes


def test_batched_bench_agrees_with_lone_runs_where_margins_are_wide(smol, tmp_path, monkeypatch):
    """Batched (4 at once) and one-at-a-time bench runs of cot and Soft Thinking's row path, in
    one process: while a batched chain has emitted the lone chain's tokens, it may leave them
    only at a step where the lone run's top-1 margin is narrow, and a chain that never leaves
    them gives the lone run's result row. So every problem whose lone run decides every token
    by a wide margin gets the same answer. Catches a batch that feeds a chain another sequence's
    logits or inputs, loses or reorders embedding rows, or decodes problems one at a time."""
    problems = load_problems(DATA)
    cot, cot_chain = _methods()
    methods = cot + [("st-rows", lambda e, q, c=None: run_soft_thinking(e, q, ST_ROWS, c))]
    chains = {**cot_chain, "st-rows": lambda e, q: soft_thinking_chain(e, q, ST_ROWS)}
    steps = _Steps(monkeypatch)
    lone = {(r["method"], r["id"]): r for r in
            read_results(run_bench(smol, problems, methods, tmp_path / "lone"))}
    lone_steps = steps.take()
    sizes = _step_sizes(smol, monkeypatch)
    batched = {(r["method"], r["id"]): r for r in
               read_results(run_bench(smol, problems, methods, tmp_path / "batched", batch=4, chains=chains))}
    batched_steps = steps.take()
    assert set(batched) == set(lone) and len(lone) == len(problems) * len(methods)
    assert {r["batch"] for r in lone.values()} == {1} and {r["batch"] for r in batched.values()} == {4}
    # four problems per decode, Soft Thinking's embedding rows among them
    assert max(n for _, n in sizes) == 4
    assert max(n for kind, n in sizes if kind == "rows") >= 2
    assert set(batched_steps) == set(lone_steps)
    compared = total = same = 0
    for label, _ in methods:
        cls = "CotChain" if label == "cot" else "SoftThinkingChain"
        for p in problems:
            key = (cls, tuple(chains[label](smol, p.question).prompt))
            mine, theirs = lone_steps[key], batched_steps[key]
            total += len(mine)
            for i, ((margin, toks), (_, got)) in enumerate(zip(mine, theirs)):
                if got != toks:
                    assert margin < WIDE, (label, p.id, i, margin)  # left the lone path at a wide margin
                    break
                compared += 1
            else:
                assert len(theirs) == len(mine), (label, p.id)
                same += 1
                a, b = lone[(label, p.id)], batched[(label, p.id)]
                assert (b["prediction"], b["generated_tokens"], b["finish_reason"]) == (
                    a["prediction"], a["generated_tokens"], a["finish_reason"]), (label, p.id)
    assert compared >= total // 2  # most steps were compared, not just the first few
    print(f"batched = lone on {same} of {len(lone)} problems; steps compared {compared} of {total}")


class _StopAfter:
    """A progress bar that sets ``cancel`` once ``n`` new problems have been recorded."""

    def __init__(self, cancel: threading.Event, n: int) -> None:
        self.cancel, self.n, self.calls = cancel, n, []

    def update(self, done, label="", new=True, total=None):
        self.calls.append((done, label, new))
        if new and sum(1 for c in self.calls if c[2]) >= self.n:
            self.cancel.set()


def test_batched_bench_resumes_where_it_stopped(smol, tmp_path):
    """Catches a batched run that records cancelled problems, reruns finished ones after a
    stop, or loses the progress count on resume."""
    problems = load_problems(DATA)[:6]
    methods, chains = _methods()
    out = tmp_path / "run"
    cancel = threading.Event()
    first = _StopAfter(cancel, 2)
    run_bench(smol, problems, methods, out, cancel=cancel, progress=first, batch=3, chains=chains)
    kept = read_results(out / "results.jsonl")
    assert 2 <= len(kept) < len(problems)  # stopped: the chains in flight were not recorded
    assert all(r["finish_reason"] != "cancelled" for r in kept)
    again = _StopAfter(threading.Event(), 99)
    run_bench(smol, problems, methods, out, progress=again, batch=3, chains=chains)
    assert again.calls[0] == (len(kept), "resuming", False)
    assert [c[0] for c in again.calls[1:]] == list(range(len(kept) + 1, len(problems) + 1))
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in lines) == sorted(p.id for p in problems)  # each once
    assert lines[:len(kept)] == kept  # the first run's rows untouched


def test_batch_context_counts_every_problem_in_flight(smol):
    problems = load_problems(DATA)[:3]
    _, chains = _methods(("cot", "soft-thinking"))
    one = max(c(smol, p.question).cells for p in problems for c in chains.values())
    assert one > 32 and batch_context(smol, problems, chains, 4) == 4 * one


def _data(tmp_path) -> str:
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"What is {i} plus {i}?", "answer": f"#### {2 * i}"})
                              for i in range(1, 5)) + "\n")
    return str(data)


@pytest.mark.parametrize("method, why", [
    ("sc", "sequences of one context"),
    ("seal:always_on=true", "steers the prompt too"),
    ("soft-reasoning", "sequences of one context"),
])
def test_bench_refuses_batch_for_methods_without_a_batched_form(tmp_path, capsys, method, why):
    from latentlocal.cli import main

    out = tmp_path / "out"
    assert main(["bench", "--batch", "2", "--methods", f"cot,{method}", "--data", _data(tmp_path),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert why in err and "without --batch" in err and "Traceback" not in err
    assert not out.exists()  # refused before the model loads or anything is written


def test_bench_batch_cli_opens_enough_sequences_and_context(tmp_path, capsys):
    """--parallel 1 --n-ctx 256 cannot hold 3 problems at once: bench raises both and says so,
    and the rows record the batch and the thread count."""
    from latentlocal.cli import main

    out = tmp_path / "out"
    assert main(["bench", "--batch", "3", "--methods", "cot", "--data", _data(tmp_path), "--out", str(out),
                 "--max-tokens", "16", "--threads", "1", "--parallel", "1", "--n-ctx", "256"]) == 0
    err = capsys.readouterr().err
    assert "--batch 3 needs a context of" in err
    rows = read_results(out / "results.jsonl")
    assert len(rows) == 4 and {(r["batch"], r["threads"]) for r in rows} == {(3, 1)}
    assert main(["bench", "--batch", "0", "--data", _data(tmp_path), "--out", str(out)]) == 2
    assert "--batch must be between 1" in capsys.readouterr().err
    assert math.isfinite(sum(r["wall_s"] for r in rows))


def test_batched_seal_steers_exactly_the_delimiters_of_the_sequence_that_fed_them(smol, monkeypatch):
    """Two SEAL chains of one vector, one of another and a plain cot chain decoded together:
    every token a sequence feeds goes in under its own chain's vector exactly when it is a
    delimiter of that chain's reasoning span, and under none otherwise; the cot chain and every
    prompt are never steered, and nothing stays steered after the batch. Catches a batch that
    sets one chain's vector for the whole step (llama.cpp adds it to every row of a decode),
    steers with another chain's vector, or decodes a steered feed with the plain ones. Blank
    lines are forced into every chain at fixed steps, so there are delimiters to steer whatever
    the build's continuation."""
    import latentlocal.methods.cot as cot_module
    from latentlocal.batching import StepBatcher
    from latentlocal.events import PhaseChange, Summary, Token
    from latentlocal.methods.cot import CotConfig, prompt_tokens
    from latentlocal.methods.seal import SealChain, SealConfig, default_layer, is_delimiter

    m = smol.model
    (newline,) = m.tokenize("\n", add_special=False)
    real, counts = cot_module.sample_token, {}

    def sample(logits, cfg, rng):  # a blank line (two newlines) at steps 4-5, 11-12, 18-19, ...
        n = counts[id(rng)] = counts.get(id(rng), 0) + 1
        return (newline, 1.0) if n % 7 in (4, 5) else real(logits, cfg, rng)

    monkeypatch.setattr(cot_module, "sample_token", sample)
    rng = np.random.default_rng(3)
    il = default_layer(smol.n_layer)
    vec_a = SealConfig(directions={il: rng.normal(size=smol.n_embd).astype(np.float32)}, max_tokens=30)
    vec_b = SealConfig(directions={il + 1: rng.normal(size=smol.n_embd).astype(np.float32)}, alpha=0.5,
                       max_tokens=30)
    questions = [p.question for p in load_problems(DATA)[:4]]
    chains = {"a0": SealChain(smol, vec_a, prompt_tokens(smol, questions[0], vec_a.system)),
              "a1": SealChain(smol, vec_a, prompt_tokens(smol, questions[1], vec_a.system)),
              "b": SealChain(smol, vec_b, prompt_tokens(smol, questions[2], vec_b.system)),
              "cot": CotChain(smol, CotConfig(max_tokens=30), prompt_tokens(smol, questions[3], None))}
    assert chains["a0"].steering is chains["a1"].steering is not chains["b"].steering

    decodes: list[tuple[tuple[int, ...], tuple[int, ...] | None, object]] = []
    prompts_steered: list[object] = []
    real_step, real_many = smol.decode_step, smol.decode_many

    def decode_step(seqs, tokens=None, rows=None):
        decodes.append((tuple(seqs), None if tokens is None else tuple(tokens), smol.control_vector_tag))
        return real_step(seqs, tokens=tokens, rows=rows)

    def decode_many(feeds):
        prompts_steered.append(smol.control_vector_active)
        return real_many(feeds)

    monkeypatch.setattr(smol, "decode_step", decode_step)
    monkeypatch.setattr(smol, "decode_many", decode_many)
    smol.clear()
    batch = StepBatcher(smol, 4)
    for key, chain in chains.items():
        batch.add_chain(key, chain)
    seq_of = {slot.key: seq for seq, slot in batch._slots.items()}
    events: dict[str, list] = {key: [] for key in chains}
    while batch.active:
        for key, ev in batch.step():
            events[key].append(ev)
    assert not smol.control_vector_active and prompts_steered and not any(prompts_steered)
    assert all(n > 0 for n in counts.values()) and len(counts) == len(chains)
    assert max(len(seqs) for seqs, _, _ in decodes) >= 2  # decoded side by side, not one at a time

    for key, chain in chains.items():
        seq = seq_of[key]
        fed = [(toks[seqs.index(seq)], tag) for seqs, toks, tag in decodes if seq in seqs]
        assert all(toks is not None for seqs, toks, _ in decodes if seq in seqs)
        gen = [e.token_id for e in events[key] if isinstance(e, Token)]
        summary = events[key][-1]
        assert isinstance(summary, Summary)
        assert [t for t, _ in fed] == gen[: len(fed)] and len(fed) == len(gen) - 1  # the last is not fed
        # the delimiters of the reasoning span (up to the token that completes the answer
        # marker), found from the generated text alone
        span = len(gen)
        for i, ev in enumerate(events[key]):
            if isinstance(ev, PhaseChange):
                span = sum(isinstance(e, Token) for e in events[key][:i]) - 1
                break
        pieces = [m.piece(t) for t in gen]
        delims = [i for i in range(min(span, len(fed))) if is_delimiter(pieces[i], b"".join(pieces[:i]))]
        assert delims, key  # the forced blank lines at least
        steered = [i for i, (_, tag) in enumerate(fed) if tag is not None]
        if key == "cot":
            assert steered == []
            continue
        assert steered == delims == summary.extra["steered_positions"], key
        assert all(tag is chain.steering for _, tag in fed if tag is not None), key


def test_swi_reasoning_batches_and_one_chain_in_a_batch_is_the_lone_run(smol, tmp_path, monkeypatch):
    """SwiReasoning's chain in a batch: a batch holding only it decodes exactly what the lone run
    decodes (one row per step either way: same tokens, modes, entropies and summary), and four
    problems at once share their steps, soft rows among them, and give one recorded row each.
    Catches a chain whose batched feeds differ from its lone ones (a row fed as a token, a
    missed blend) or a SwiReasoning that still decodes alone."""
    from latentlocal.batching import StepBatcher
    from latentlocal.events import Summary, Token
    from latentlocal.methods.swi_reasoning import SwiReasoningConfig, run_swi_reasoning, swi_chain

    # math_explicit off: a problem whose first token is a digit or a single letter would
    # otherwise feed no soft row at all (decoding starts latent, so now the first row is soft)
    cfg = SwiReasoningConfig(max_tokens=24, answer_reserve=8, seed=3, math_explicit=False)
    question = load_problems(DATA)[0].question
    lone = list(run_swi_reasoning(smol, question, cfg))
    smol.clear()
    batch = StepBatcher(smol, 4)
    batch.add_chain("one", swi_chain(smol, question, cfg))
    batched = []
    while batch.active:
        batched += [ev for _, ev in batch.step()]
    batch.close()

    def view(events):
        return [(e.token_id, e.mode, e.entropy) for e in events if isinstance(e, Token)]

    assert view(batched) == view(lone) and any(m == "soft" for _, m, _ in view(lone))
    a, b = lone[-1], batched[-1]
    assert isinstance(b, Summary) and (b.text, b.finish_reason) == (a.text, a.finish_reason)
    assert {k: v for k, v in b.extra.items() if k != "time_to_first_step_s"} == \
        {k: v for k, v in a.extra.items() if k != "time_to_first_step_s"}

    methods = [("swi", lambda e, q, c=None: run_swi_reasoning(e, q, cfg, c))]
    chains = {"swi": lambda e, q: swi_chain(e, q, cfg)}
    sizes = _step_sizes(smol, monkeypatch)
    problems = load_problems(DATA)[:4]
    rows = read_results(run_bench(smol, problems, methods, tmp_path / "b", batch=4, chains=chains))
    assert sorted(r["id"] for r in rows) == sorted(p.id for p in problems)
    assert {r["batch"] for r in rows} == {4}
    assert max(n for kind, n in sizes if kind == "rows") >= 2  # soft rows of several problems at once
