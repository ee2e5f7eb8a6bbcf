"""SEAL: thought segmentation and labels, the block mapping, delimiter-only steering, extraction."""

from __future__ import annotations

import json
from pathlib import Path
import numpy as np
import pytest

from latentlocal.controlvector import ControlVector, export_gguf, import_gguf, read_manifest
from latentlocal.engine import Engine
from latentlocal.errors import LatentLocalError
from latentlocal.events import PhaseChange, Progress, Summary, Thought, Token
from latentlocal.methods.seal import (
    ExtractConfig,
    SealConfig,
    count_labels,
    default_layer,
    extract,
    extract_vector,
    is_delimiter,
    label_thought,
    reasoning_length,
    run_seal,
    segment_thoughts,
    work_dir,
)
from latentlocal.methods.seal.thoughts import text_thoughts
from latentlocal.prompts import build_prompt

# the first rows of GSM8K train (MIT, see data/GSM8K_LICENSE), so the tests need no outside data
GSM8K = str(Path(__file__).parent / "data" / "gsm8k_train_head.jsonl")


@pytest.fixture(scope="module")
def smol(smol_model):
    """One thread: llama.cpp's spinning thread pool with 2 threads on 2 shared, busy cores is
    about 10x slower per token than 1 thread (measured while other test suites ran)."""
    engine = Engine(smol_model, n_ctx=2048, n_seq_max=2, n_threads=1)
    yield engine
    engine.close()
QUESTION = "Tom has 3 apples and buys 5 more. How many apples does he have?"


# ---------------------------------------------------------------------------------------------
# labels and segmentation (no model)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,label", [
    ("Wait, 3 + 5 is 8.", "reflection"),
    ("  wait. Let me redo it", "reflection"),
    ("So I should VERIFY the sum.", "reflection"),
    ("Let me check the total again.", "reflection"),
    ("Hold on, that is off.", "reflection"),
    ("That's correct.", "reflection"),
    ("The answer seems right to me.", "reflection"),
    ("it\u2019s incorrect", "reflection"),
    ("To make sure, add them again.", "reflection"),
    ("I need to think again about this.", "reflection"),
    ("Let's verify: 8 - 5 = 3.", "reflection"),
    ("Waiting is not needed; 3 + 5 = 8.", "reflection"),  # the paper's startswith("wait")
    ("Alternatively, count them one by one.", "transition"),
    ("Another way is to add first.", "transition"),
    ("Let's try another approach.", "transition"),
    ("ANOTHER METHOD: count on from 5.", "transition"),
    ("Maybe there is another solution.", "transition"),
    ("We could use another strategy.", "transition"),
    ("Here is another technique.", "transition"),
    ("3 + 5 = 8 apples.", "execution"),
    ("He waits for the bus.", "execution"),  # "wait" inside, not at the start
    # the paper's transition phrases need "another": a bare-word rule called these transitions
    ("The solution to the equation is x = 5.", "execution"),
    ("Using the substitution method, x = 3.", "execution"),
    ("A better strategy: multiply.", "execution"),
    ("Use the same technique.", "execution"),
    ("This approach gives 8.", "execution"),
    ("Let me think differently.", "execution"),  # the paper's list has the typo "think differenly"
    ("He said, alternatively, 8.", "execution"),  # "alternatively" counts only at the start
    # precedence: reflection is checked first
    ("Wait, there is another approach here.", "reflection"),
    ("Alternatively, let me check by counting.", "reflection"),
])
def test_labels_follow_the_paper_rules(text, label):
    assert label_thought(text) == label


def test_delimiters_include_merged_and_split_blank_lines():
    assert is_delimiter("\n\n")
    assert is_delimiter(".\n\n")  # merged form (Qwen-style vocabularies)
    assert is_delimiter(" \n\n")
    assert is_delimiter("\n\n   ")
    assert is_delimiter("\n", before="step one.\n")  # a blank line written as two "\n" tokens
    assert not is_delimiter("\n", before="step one.")
    assert not is_delimiter(".\n")
    assert not is_delimiter("Wait")


def test_segmentation_of_a_hand_written_trace():
    pieces = [
        "First", " add", ": 3 + 5 = 8", ".\n\n",              # 0-3, merged delimiter at 3
        "Wait", ",", " is", " that", " right", "?",            # 4-9
        "\n", "\n", "\n",                                     # 10 no, 11 yes, 12 yes (empty thought)
        "Another", " approach", ":", " count", ".\n\n",       # 13-17
        "Wait", " or", " another approach", "\n\n",           # 18-21: both rules -> reflection
        "So", " 8", ".",                                      # 22-24, span ends without a delimiter
    ]
    ts = segment_thoughts(pieces)
    assert [t.text for t in ts] == [
        "First add: 3 + 5 = 8.",
        "Wait, is that right?",
        "Another approach: count.",
        "Wait or another approach",
        "So 8.",
    ]
    assert [t.label for t in ts] == ["execution", "reflection", "transition", "reflection", "execution"]
    # the delimiter right before each thought (consecutive delimiters: the latest one)
    assert [t.delimiter for t in ts] == [None, 3, 12, 17, 21]
    assert [(t.start, t.end) for t in ts] == [(0, 4), (4, 12), (13, 18), (18, 22), (22, 25)]
    assert count_labels(ts) == {"execution": 2, "reflection": 2, "transition": 1}
    # bytes work the same; text after a delimiter's last newline starts the next thought
    ts2 = segment_thoughts([b"a", b"\n\nb", b" c"])
    assert [(t.text, t.delimiter) for t in ts2] == [("a", None), ("b c", 1)]


def test_forced_cues_label_their_thought():
    pieces = ["Add", ".\n\n", "Alternatively", ",", " we", " verify", ".\n\n", "Then", " 8"]
    ts = segment_thoughts(pieces, cues={2: "transition"})
    # by the rules this thought would be reflection ("verify"); the cue decides
    assert [(t.label, t.cue) for t in ts] == [("execution", None), ("transition", "transition"),
                                             ("execution", None)]


def test_reasoning_span_ends_at_the_answer_marker(smol_model):
    m = smol_model
    toks = m.tokenize("3 + 5 = 8.\n\nSo he has 8.\nFinal answer: 8\n", add_special=False)
    n = reasoning_length(m, toks)
    assert m.detokenize(toks[:n]).rstrip().endswith("So he has 8.")
    assert "Final" not in m.detokenize(toks[:n])
    assert reasoning_length(m, toks[:4]) == 4  # no marker: all of it


def test_default_layer_maps_the_paper_depth():
    assert default_layer(28) == 19  # HF hidden_states[20] of 28 blocks = output of block 19
    assert default_layer(30) == 20  # SmolLM2-135M
    assert default_layer(18) == 12  # Gemma 3 270M
    assert default_layer(2) == 1
    with pytest.raises(LatentLocalError):
        default_layer(1)


# ---------------------------------------------------------------------------------------------
# the block mapping, pinned by capture
# ---------------------------------------------------------------------------------------------


def test_exported_direction_n_shifts_l_out_n_exactly(smol, tmp_path):
    il, alpha = default_layer(smol.n_layer), 1.5
    s = np.random.default_rng(3).normal(size=smol.n_embd).astype(np.float32)
    path = tmp_path / "v.gguf"
    export_gguf(ControlVector("llama", {il: s}, n_layer=smol.n_layer), path)
    cv = import_gguf(path, expect_n_embd=smol.n_embd, expect_model_hint=smol.model.arch,
                     expect_n_layer=smol.n_layer)
    assert cv.layers == [il]
    cap = smol.sibling(capture_layers=[il - 1, il], n_seq_max=1)
    toks = smol.model.tokenize(build_prompt(smol.model, QUESTION))[:20]

    def states():
        cap.clear()
        cap.decode_tokens(toks, logits="none")
        return {k: cap.captured(k).copy() for k in (il - 1, il)}

    base = states()
    cap.set_control_vector(cv.directions, alpha)
    steered = states()
    cap.set_control_vector(None)
    cap.close()
    np.testing.assert_array_equal(steered[il - 1], base[il - 1])  # earlier block untouched
    tol = 4 * np.finfo(np.float32).eps * np.abs(base[il]).max()
    np.testing.assert_allclose(steered[il] - base[il], np.broadcast_to(alpha * s, base[il].shape), atol=tol)


# ---------------------------------------------------------------------------------------------
# steered decoding touches only delimiter positions
# ---------------------------------------------------------------------------------------------


def _prefilled(engine, answer_start: str) -> list[int]:
    return engine.model.tokenize(build_prompt(engine.model, QUESTION) + answer_start)


def test_seal_steers_only_the_delimiter_positions(smol):
    m = smol.model
    il, alpha = default_layer(smol.n_layer), 2.0
    # a strong direction so the continuation after the first delimiter visibly changes
    s = np.random.default_rng(5).normal(size=smol.n_embd).astype(np.float32) * 3.0
    prompt = _prefilled(smol, "Tom has 3 apples.\n\nHe buys 5 more.")
    cfg = SealConfig(directions={il: s}, alpha=alpha, max_tokens=10, stop_after_answer=False,
                     model_hint=m.arch)
    before = smol.cvec_changes
    events = list(run_seal(smol, QUESTION, cfg, prompt=prompt))
    summary = events[-1]
    assert isinstance(summary, Summary) and summary.method == "seal"
    gen = [e.token_id for e in events if isinstance(e, Token)]
    assert all(e.phase == "think" for e in events if isinstance(e, Token))
    steered = summary.extra["steered_positions"]
    # exactly the delimiters of the generation, computed independently
    pieces = [m.piece(t) for t in gen]
    delims = [i for i in range(len(gen)) if is_delimiter(pieces[i], b"".join(pieces[:i]))]
    assert steered == [i for i in delims if i < len(gen) - 1]  # the last token is never fed
    assert steered and steered[0] >= 1  # a non-delimiter comes first
    assert summary.extra["cvec_changes"] == smol.cvec_changes - before > 0
    assert not smol.control_vector_active  # cleared at the end
    thoughts = [e for e in events if isinstance(e, Thought)]
    # the generation opens with a blank line, so every thought follows a steered delimiter
    assert thoughts and all(t.steered for t in thoughts)
    assert sum(summary.extra["thoughts"].values()) == len(thoughts)

    # replay in a capture sibling, token by token, with and without the same toggling
    cap = smol.sibling(capture_layers=[il - 1, il], n_seq_max=1)

    def replay(toggle: bool):
        cap.clear()
        cap.decode_tokens(prompt)
        greedy = [int(np.argmax(cap.logits(-1)))]
        rows = {il - 1: [], il: []}
        for i, t in enumerate(gen[:-1]):
            on = toggle and i in steered
            if on != cap.control_vector_active:
                cap.set_control_vector({il: s} if on else None, alpha)
            cap.decode_tokens([t])
            for k in rows:
                rows[k].append(cap.captured(k)[0].copy())
            greedy.append(int(np.argmax(cap.logits(-1))))
        cap.set_control_vector(None)
        return {k: np.array(v) for k, v in rows.items()}, greedy

    with_seal, greedy_seal = replay(True)
    without, greedy_plain = replay(False)
    cap.close()
    first = steered[0]
    # identical at every non-delimiter position before the first delimiter
    for k in (il - 1, il):
        np.testing.assert_array_equal(with_seal[k][:first], without[k][:first])
    # the delimiter differs by exactly alpha * S at the steered block, not before it
    np.testing.assert_array_equal(with_seal[il - 1][first], without[il - 1][first])
    tol = 4 * np.finfo(np.float32).eps * np.abs(without[il][first]).max()
    np.testing.assert_allclose(with_seal[il][first] - without[il][first], alpha * s, atol=tol)
    # the replay with the same toggling reproduces the SEAL run token for token, the plain one
    # does not: the run really steered, and only there
    assert greedy_seal == gen
    assert greedy_plain != gen
    assert greedy_plain[: first + 1] == gen[: first + 1]


def test_a_cancelled_run_still_reports_its_open_thought(smol, monkeypatch):
    """Cancelled inside the reasoning span, the run yields the thought it was writing before its
    Summary, as a run that ends by itself does: every thought the Summary counts came as a
    Thought event, and the vector is cleared. (The tokens are scripted: a build whose greedy
    text opened with a blank line or the answer marker would leave no thought open.)"""
    import threading

    import latentlocal.methods.cot as decoding

    script = iter(smol.model.tokenize(" He buys 5 more apples and eats one of them", add_special=False))
    monkeypatch.setattr(decoding, "sample_token", lambda logits, cfg, rng: (next(script), 1.0))
    cancel = threading.Event()
    cfg = SealConfig(directions={default_layer(smol.n_layer): np.zeros(smol.n_embd, np.float32)},
                     max_tokens=64, stop_after_answer=False)
    events = []
    for ev in run_seal(smol, QUESTION, cfg, cancel=cancel, prompt=_prefilled(smol, "Tom has 3 apples.")):
        events.append(ev)
        if isinstance(ev, Token) and sum(isinstance(e, Token) for e in events) == 5:
            cancel.set()
    summary = events[-1]
    assert isinstance(summary, Summary) and summary.finish_reason == "cancelled"
    thoughts = [e for e in events if isinstance(e, Thought)]
    assert thoughts and sum(summary.extra["thoughts"].values()) == len(thoughts)
    assert isinstance(events[-2], Thought)  # the open one, closed by the cancel
    assert not smol.control_vector_active


def test_seal_without_delimiters_never_sets_the_vector(smol):
    s = np.ones(smol.n_embd, dtype=np.float32)
    prompt = _prefilled(smol, "Let's solve this step by step.")
    cfg = SealConfig(directions={default_layer(smol.n_layer): s}, max_tokens=6, stop_after_answer=False)
    before = smol.cvec_changes
    events = list(run_seal(smol, QUESTION, cfg, prompt=prompt))
    text = "".join(e.text for e in events if isinstance(e, Token))
    assert "\n\n" not in text
    assert smol.cvec_changes == before
    summary = events[-1]
    assert summary.extra["cvec_changes"] == 0 and summary.extra["steered_positions"] == []
    assert summary.extra["reasoning_tokens"] == 6


def test_always_on_keeps_the_vector_for_the_whole_generation(smol):
    s = np.zeros(smol.n_embd, dtype=np.float32)
    prompt = _prefilled(smol, "Tom has 3 apples.\n\nHe buys 5 more.")
    cfg = SealConfig(directions={5: s}, always_on=True, alpha=0.5, max_tokens=4, stop_after_answer=False)
    before = smol.cvec_changes
    events = list(run_seal(smol, QUESTION, cfg, prompt=prompt))
    assert smol.cvec_changes - before == 2  # set once, cleared once
    assert events[-1].extra["mode"] == "always-on"
    assert all(e.steered for e in events if isinstance(e, Thought))


def test_vectors_for_another_model_are_refused(smol):
    with pytest.raises(LatentLocalError, match="n_embd"):
        next(run_seal(smol, QUESTION, SealConfig(directions={5: np.zeros(8)})))
    with pytest.raises(LatentLocalError, match="blocks 1.."):
        next(run_seal(smol, QUESTION, SealConfig(directions={smol.n_layer: np.zeros(smol.n_embd)})))
    with pytest.raises(LatentLocalError, match="qwen2"):
        next(run_seal(smol, QUESTION, SealConfig(directions={5: np.zeros(smol.n_embd)}, model_hint="qwen2")))


def test_scripted_trace_gives_thoughts_phases_and_toggles(smol, monkeypatch):
    """A scripted generation (sampling replaced) exercises the online bookkeeping exactly."""
    import latentlocal.methods.cot as decoding  # SEAL samples in the shared loop, cot's _Stream.steps

    m = smol.model
    script = m.tokenize("Add: 3 + 5 = 8.\n\nWait, let me check: 8.\n\nFinal answer: 8\nmore", add_special=False)
    it = iter(script)
    monkeypatch.setattr(decoding, "sample_token", lambda logits, cfg, rng: (next(it), 1.0))
    il = default_layer(smol.n_layer)
    cfg = SealConfig(directions={il: np.zeros(smol.n_embd, np.float32)}, max_tokens=64)
    before = smol.cvec_changes
    events = list(run_seal(smol, QUESTION, cfg))
    tokens = [e for e in events if isinstance(e, Token)]
    thoughts = [e for e in events if isinstance(e, Thought)]
    summary = events[-1]
    assert [(t.label, t.text, t.steered) for t in thoughts] == [
        ("execution", "Add: 3 + 5 = 8.", False),
        ("reflection", "Wait, let me check: 8.", True),
    ]
    assert sum(isinstance(e, PhaseChange) for e in events) == 1
    text = "".join(t.text for t in tokens)
    assert text == "Add: 3 + 5 = 8.\n\nWait, let me check: 8.\n\nFinal answer: 8\n"  # stops at the answer line
    n_think = sum(t.phase == "think" for t in tokens)
    assert "".join(t.text for t in tokens[:n_think]).endswith("Final answer:")
    assert all(t.phase == "answer" for t in tokens[n_think:])
    pieces = [m.piece(t.token_id) for t in tokens]
    delims = [i for i in range(n_think) if is_delimiter(pieces[i], b"".join(pieces[:i]))]
    assert summary.extra["steered_positions"] == delims and len(delims) == 2
    assert summary.extra["cvec_changes"] == smol.cvec_changes - before == 2 * len(delims)
    assert summary.extra["thoughts"] == {"execution": 1, "reflection": 1, "transition": 0}
    assert summary.answer == "8" and summary.finish_reason == "answer"
    assert summary.extra["reasoning_tokens"] == n_think - 1  # the token completing the marker is not
    assert text_thoughts(summary.text) == [t.text for t in thoughts]


def test_text_thoughts_match_live_segmentation(smol):
    """Unsteered methods get thought counts from their text; those must be SEAL's own thoughts,
    whatever this build's greedy chain is (it ended in eos on an AVX-512 build, at the answer
    marker here)."""
    cfg = SealConfig(directions={5: np.zeros(smol.n_embd, np.float32)}, alpha=0.0, max_tokens=160)
    events = list(run_seal(smol, "Tom has 3 boxes of 12 pens and gives away 7 pens. How many are left?", cfg))
    live = [e.text for e in events if isinstance(e, Thought)]
    assert live, "the reasoning span holds at least one thought"
    eog = {smol.model.token_text(t) for t in _tokens_ending_generation(smol.model)}
    assert not any(e in t for t in live for e in eog), live
    assert text_thoughts(events[-1].text) == live


def _tokens_ending_generation(model) -> list[int]:
    return [t for t in (model.eos, model.find_token("<|im_end|>"), model.find_token("<|endoftext|>"))
            if t is not None and model.is_eog(t)]


def test_an_end_of_generation_token_is_no_thought_text(smol, monkeypatch):
    """A trace that ends with the end-of-generation token (scripted, so every build sees it): the
    token's text ("<|im_end|>") enters neither the last thought nor the summary, and the thoughts
    still equal the text segmentation."""
    import latentlocal.methods.cot as decoding  # SEAL samples in the shared loop, cot's _Stream.steps

    m = smol.model
    eog_tokens = _tokens_ending_generation(m)
    assert eog_tokens
    for eog in eog_tokens:
        script = m.tokenize("Add 3 and 5.\n\nThat is 8.\nStill 8.\n\nWait, check it.", add_special=False) + [eog]
        it = iter(script)
        monkeypatch.setattr(decoding, "sample_token", lambda logits, cfg, rng: (next(it), 1.0))
        cfg = SealConfig(directions={5: np.zeros(smol.n_embd, np.float32)}, alpha=0.0, max_tokens=64)
        events = list(run_seal(smol, QUESTION, cfg))
        summary = events[-1]
        live = [e.text for e in events if isinstance(e, Thought)]
        assert summary.finish_reason == "eos" and summary.generated_tokens == len(script)
        assert live == ["Add 3 and 5.", "That is 8.\nStill 8.", "Wait, check it."]
        text = m.token_text(eog)
        assert text not in summary.text and not any(text in t for t in live)
        assert text_thoughts(summary.text) == live
        assert summary.extra["thoughts"] == {"execution": 2, "reflection": 1, "transition": 0}


def test_text_thoughts_by_hand():
    text = "Add 2 and 3.\n\n\nWait, check: 5.\nStill 5.\n\nAlternatively, count.\nFinal answer: 5\n\nextra"
    assert text_thoughts(text) == ["Add 2 and 3.", "Wait, check: 5.\nStill 5.", "Alternatively, count."]
    assert text_thoughts("Think.\n\nMore.</think>\n\nFinal answer: 1") == ["Think.", "More."]
    assert text_thoughts("no marker at all") == ["no marker at all"]


# ---------------------------------------------------------------------------------------------
# extraction end to end on a tiny slice
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def extracted(smol, tmp_path_factory):
    out = tmp_path_factory.mktemp("seal") / "smol.gguf"
    # GSM8K train rows 1-2: SmolLM2 writes a blank line in both within 64 tokens
    cfg = ExtractConfig(data=GSM8K, out=out, offset=1, limit=2, max_tokens=64, elicit="cue",
                        cue_rate=0.5, min_thoughts=1)
    events = list(extract(smol, cfg))
    return cfg, events


def _count_decodes(engine, monkeypatch) -> list[int]:
    calls = []
    real = engine.decode_tokens

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(engine, "decode_tokens", counting)
    return calls


def test_extraction_writes_a_vector_and_manifest(extracted, smol):
    cfg, events = extracted
    assert [e.done for e in events if isinstance(e, Progress)] == [1, 2]
    summary = events[-1]
    assert isinstance(summary, Summary) and summary.extra["new"] == 2
    layer = default_layer(smol.n_layer)
    cv = import_gguf(cfg.out, expect_n_embd=smol.n_embd, expect_model_hint="llama",
                     expect_n_layer=smol.n_layer)
    assert cv.layers == [layer] and cv.n_layer == smol.n_layer
    m = read_manifest(cfg.out)
    assert m["layer"] == layer and m["alpha"] == 1.0 and m["recommended_scale"] > 0
    assert m["elicitation"]["mode"] == "cue" and m["elicitation"]["rate"] == 0.5
    assert m["model"]["n_layer"] == smol.n_layer and m["model"]["n_embd"] == smol.n_embd
    assert m["model"]["arch"] == "llama" and len(m["model"]["sha256"]) == 64
    assert m["dataset"] == GSM8K and m["limit"] == 2 and m["problems"] == 2
    used = m["counts"]["used"]
    assert used["execution"] >= 1 and used["reflection"] + used["transition"] >= 1
    # S is the mean difference of the saved states at the delimiters
    work = work_dir(cfg.out)
    recs = [json.loads(x) for x in (work / "traces.jsonl").read_text().splitlines()]
    ex, other = [], []
    for r in recs:
        st = np.load(work / r["states"])
        labels = [t["label"] for t in r["thoughts"] if t["delimiter"] is not None]
        assert st.shape == (len(labels), 1, smol.n_embd)
        for row, lab in zip(st[:, 0], labels):
            (ex if lab == "execution" else other).append(row)
    want = np.mean(ex, axis=0) - np.mean(other, axis=0)
    np.testing.assert_allclose(cv.directions[layer], want, rtol=1e-5, atol=1e-4)
    # the states are the residual after block `layer` at the delimiter token: close to an
    # independent capture there (other batch shapes change llama.cpp's rounding by ~2% at this
    # depth), far from the neighbouring tokens and blocks
    r = next(r for r in recs if any(t["delimiter"] is not None for t in r["thoughts"]))
    d = next(t["delimiter"] for t in r["thoughts"] if t["delimiter"] is not None)
    question = json.loads(open(GSM8K).readlines()[r["k"]])["question"]
    toks = smol.model.tokenize(build_prompt(smol.model, question))
    assert len(toks) == r["prompt_tokens"]
    cap = smol.sibling(capture_layers=[layer - 1, layer], n_seq_max=1)
    cap.decode_tokens((toks + r["tokens"])[: len(toks) + d + 2], logits="none")
    here, before = cap.captured(layer), cap.captured(layer - 1)
    cap.close()
    saved = np.load(work / r["states"])[0, 0]
    p = len(toks) + d

    def rel(x):
        return np.linalg.norm(saved - x) / np.linalg.norm(x)

    assert rel(here[p]) < 0.05
    assert min(rel(here[p - 1]), rel(here[p + 1]), rel(before[p])) > 5 * rel(here[p])


def test_extraction_resumes_without_redoing_problems(extracted, smol, monkeypatch):
    cfg, _ = extracted
    first = cfg.out.read_bytes()
    calls = _count_decodes(smol, monkeypatch)
    summary = extract_vector(smol, cfg)
    assert summary.extra["new"] == 0 and summary.extra["resumed"] == 2
    assert calls == []  # nothing decoded
    assert cfg.out.read_bytes() == first
    # lose one finished problem (and a torn line from a crash): only that one is redone, the same
    work = work_dir(cfg.out)
    lines = (work / "traces.jsonl").read_text().splitlines()
    (work / "traces.jsonl").write_text("\n".join(lines[1:]) + '\n{"k": 9, "id": "tr')
    summary = extract_vector(smol, cfg)
    assert summary.extra["new"] == 1 and summary.extra["resumed"] == 1
    assert cfg.out.read_bytes() == first  # the same trace again: the same vector


def test_too_few_thoughts_reports_the_counts(extracted, smol, monkeypatch):
    cfg, _ = extracted
    m = read_manifest(cfg.out)
    used = m["counts"]["used"]
    calls = _count_decodes(smol, monkeypatch)
    from dataclasses import replace

    with pytest.raises(LatentLocalError, match="too few thoughts") as err:
        extract_vector(smol, replace(cfg, min_thoughts=10_000))
    assert calls == []
    msg = str(err.value)
    assert f"{used['execution']} execution" in msg
    assert f"{used['reflection'] + used['transition']} reflection/transition" in msg
    assert "--cue-rate" in msg and "--elicit cue" not in msg  # cues are already on: suggest more of them
    with pytest.raises(LatentLocalError, match="elicit them with --elicit cue"):
        extract_vector(smol, replace(cfg, min_thoughts=10_000, elicit="none", out=cfg.out.with_name("nc.gguf")))


def test_extract_refuses_an_out_that_is_a_model_before_any_trace(smol, smol_path, tmp_path, monkeypatch):
    model = tmp_path / "model.gguf"
    model.write_bytes(smol_path.read_bytes())
    calls = _count_decodes(smol, monkeypatch)
    with pytest.raises(LatentLocalError, match="a model\\?"):
        extract_vector(smol, ExtractConfig(data=GSM8K, out=model, limit=2, max_tokens=3))
    assert calls == [] and model.stat().st_size == smol_path.stat().st_size


def test_traces_without_paragraph_breaks_get_their_own_message(smol, tmp_path):
    # Three tokens hold no blank line: the situation of a base model that answers in one paragraph.
    cfg = ExtractConfig(data=GSM8K, out=tmp_path / "flat.gguf", limit=2, max_tokens=3, elicit="cue")
    with pytest.raises(LatentLocalError, match="none of the traces has a paragraph break") as err:
        extract_vector(smol, cfg)
    assert "0 reflection/transition" in str(err.value)


def test_work_folder_with_other_settings_is_refused(extracted, smol):
    cfg, _ = extracted
    from dataclasses import replace

    with pytest.raises(LatentLocalError, match="other settings.*max_tokens"):
        extract_vector(smol, replace(cfg, max_tokens=81))
    with pytest.raises(LatentLocalError, match="captured blocks"):
        extract_vector(smol, replace(cfg, layer=3))


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def test_cli_inspect_round_trip(extracted, capsys):
    from latentlocal.cli import main

    cfg, _ = extracted
    assert main(["seal", "inspect", str(cfg.out)]) == 0
    out = capsys.readouterr().out
    layer = read_manifest(cfg.out)["layer"]
    assert f"direction.{layer}" in out and "llama" in out and "recommended always-on scale" in out
    assert main(["seal", "inspect", str(cfg.out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    cv = import_gguf(cfg.out)
    assert info["layers"] == [layer] and info["n_embd"] == cv.n_embd
    assert info["norms"][str(layer)] == pytest.approx(float(np.linalg.norm(cv.directions[layer])))
    assert info["manifest"] == read_manifest(cfg.out)


def test_cli_inspect_shows_a_hand_edited_manifest(tmp_path, capsys):
    """A manifest whose fields were edited to other JSON types is shown, not a traceback."""
    from latentlocal.cli import main
    from latentlocal.controlvector import manifest_path

    vec = tmp_path / "v.gguf"
    export_gguf(ControlVector("llama", {3: np.ones(8, np.float32)}), vec)
    manifest_path(vec).write_text(json.dumps({"model": "qwen, by hand", "counts": ["a"],
                                              "elicitation": 3, "layer": 3}), encoding="utf-8")
    assert main(["seal", "inspect", str(vec)]) == 0
    out = capsys.readouterr().out
    assert "model: qwen, by hand" in out and "elicitation: 3" in out and "layer: 3" in out
    manifest_path(vec).write_text(json.dumps({"counts": {"thoughts": ["x"]}, "model": {"name": "m"}}),
                                  encoding="utf-8")
    assert main(["seal", "inspect", str(vec)]) == 0
    out = capsys.readouterr().out
    assert "thoughts: ['x']" in out and "model: m (None" in out


def test_cli_run_seal_needs_a_matching_vector(tmp_path, capsys, monkeypatch):
    import latentlocal.methods.seal as seal_pkg
    from latentlocal.cli import main

    monkeypatch.setattr(seal_pkg, "vector_folders", lambda: [tmp_path])  # no vector for this model
    assert main(["run", "hi", "--method", "seal"]) == 2
    assert "--vector" in capsys.readouterr().err
    bad = tmp_path / "bad.gguf"
    export_gguf(ControlVector("llama", {3: np.ones(8, np.float32)}), bad)
    assert main(["run", "hi", "--method", "seal", "--vector", str(bad), "--n-ctx", "256",
                 "--parallel", "1", "--threads", "2"]) == 2
    assert "n_embd" in capsys.readouterr().err
    assert main(["seal", "inspect", str(tmp_path / "missing.gguf")]) == 2
    assert "not found" in capsys.readouterr().err
