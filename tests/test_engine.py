"""The engine on real GGUF models: parity, capture, control vectors, sequences, greedy decoding."""

from __future__ import annotations

import numpy as np
import pytest

from latentlocal.engine import Engine
from latentlocal.engine_settings import EngineSettings
from latentlocal.errors import LatentLocalError
from latentlocal.events import Summary, Token
from latentlocal.methods.cot import CotConfig, prompt_tokens, run_cot
from latentlocal.prompts import COT_SYSTEM
from closeness import assert_same_distribution
from onestep import token_and_row_logits

QUESTION = "Tom has 3 apples and buys 5 more. How many apples does he have?"


def _prompt_logits(engine: Engine, toks: list[int], rows: bool) -> np.ndarray:
    engine.clear()
    if rows:
        engine.decode_embeddings(engine.model.embeddings.rows(toks))
    else:
        engine.decode_tokens(toks)
    return np.array(engine.logits(-1))


@pytest.mark.parametrize("name", ["smol", "gemma"])
def test_embedding_rows_give_the_token_logits(name, request):
    engine = request.getfixturevalue(name)
    toks = prompt_tokens(engine, QUESTION, None)
    lt = _prompt_logits(engine, toks, rows=False)
    le = _prompt_logits(engine, toks, rows=True)
    assert lt.argmax() == le.argmax()
    scale = lt.max() - lt.min()
    assert np.abs(lt - le).max() <= 1e-3 * scale


def test_gemma_needs_the_token_path_scale(gemma):
    """Without sqrt(n_embd) the rows are not the tokens: pins why the scale exists."""
    toks = prompt_tokens(gemma, QUESTION, None)
    lt = _prompt_logits(gemma, toks, rows=False)
    raw = gemma.model.embeddings.rows(toks) / gemma.model.embeddings.scale
    gemma.clear()
    gemma.decode_embeddings(raw)
    assert gemma.model.embeddings.scale == pytest.approx(np.sqrt(gemma.n_embd))
    assert np.abs(np.array(gemma.logits(-1)) - lt).max() > 1.0


def test_one_step_rows_and_tokens_agree_in_a_parallel_batch(smol):
    toks = prompt_tokens(smol, QUESTION, None)
    by_token, by_row = token_and_row_logits(smol, toks, [28, 1000])
    np.testing.assert_allclose(by_row, by_token, atol=1e-3)
    assert smol.pos(0) == smol.pos(1) == len(toks) + 1


def test_capture_is_the_same_in_one_batch_or_token_by_token(smol):
    last = smol.n_layer - 1
    cap = smol.sibling(capture_layers=[0, 11, last], n_seq_max=1)
    toks = prompt_tokens(smol, QUESTION, None)[:40]
    cap.clear()
    cap.decode_tokens(toks, logits="all")
    batch = {il: cap.captured(il) for il in (0, 11, last)}
    cap.clear()
    steps = {il: [] for il in (0, 11, last)}
    for t in toks:
        cap.decode_tokens([t])
        for il in steps:
            steps[il].append(cap.captured(il))
    for il in (0, 11, last):
        one_by_one = np.concatenate(steps[il])
        assert batch[il].shape == (len(toks), smol.n_embd)
        np.testing.assert_allclose(batch[il], one_by_one, atol=2e-3 * np.abs(one_by_one).max())
    # the last block keeps only rows whose logits were asked for
    cap.clear()
    cap.decode_tokens(toks, logits="last")
    assert cap.captured(last).shape == (1, smol.n_embd)
    assert cap.captured(11).shape == (len(toks), smol.n_embd)
    with pytest.raises(LatentLocalError, match="not captured"):
        cap.captured(5)
    cap.close()


def test_control_vector_slot_shifts_exactly_that_block(smol):
    il = 12
    cap = smol.sibling(capture_layers=[il - 1, il, il + 1], n_seq_max=1)
    toks = prompt_tokens(smol, QUESTION, None)[:24]

    def run() -> tuple[dict[int, np.ndarray], np.ndarray]:
        cap.clear()
        cap.decode_tokens(toks, logits="last")
        return {k: cap.captured(k).copy() for k in (il - 1, il, il + 1)}, np.array(cap.logits(-1))

    base, base_logits = run()
    v = np.random.default_rng(0).normal(size=smol.n_embd).astype(np.float32)
    cap.set_control_vector({il: v}, scale=0.5)
    steered, steered_logits = run()
    np.testing.assert_array_equal(steered[il - 1], base[il - 1])
    # exact up to float32 rounding of the residual's magnitude
    tol = 4 * np.finfo(np.float32).eps * np.abs(base[il]).max()
    np.testing.assert_allclose(steered[il] - base[il], np.broadcast_to(0.5 * v, base[il].shape), atol=tol)
    assert not np.allclose(steered[il + 1], base[il + 1])
    assert not np.allclose(steered_logits, base_logits)
    cap.set_control_vector(None)
    cleared, cleared_logits = run()
    np.testing.assert_array_equal(cleared_logits, base_logits)
    np.testing.assert_array_equal(cleared[il], base[il])
    cap.close()


def test_control_vector_validation(smol):
    with pytest.raises(LatentLocalError, match="width"):
        smol.set_control_vector({3: np.zeros(smol.n_embd + 1)})
    with pytest.raises(LatentLocalError, match="out of range"):
        smol.set_control_vector({smol.n_layer: np.zeros(smol.n_embd)})
    with pytest.raises(LatentLocalError, match="out of range"):
        smol.set_control_vector({0: np.zeros(smol.n_embd)})
    assert not smol.control_vector_active


def test_continuing_a_copied_sequence_matches_the_original(smol):
    toks = prompt_tokens(smol, QUESTION, None)
    smol.clear()
    smol.decode_tokens(toks, seq=0)
    smol.seq_copy(0, 3)
    smol.decode_tokens([330, 29], seq=3)
    copied = np.array(smol.logits(-1))
    smol.decode_tokens([330, 29], seq=0)
    original = np.array(smol.logits(-1))
    np.testing.assert_allclose(copied, original, atol=1e-4)
    assert smol.pos(0) == smol.pos(3) == len(toks) + 2
    smol.seq_remove(3)
    assert smol.pos(3) == 0


def test_greedy_cot_matches_llama_cpp_python(smol, smol_path):
    from llama_cpp import Llama

    toks = prompt_tokens(smol, QUESTION, None)
    ours = [e.token_id for e in run_cot(smol, QUESTION, CotConfig(max_tokens=48, stop_after_answer=False),
                                        prompt=toks) if isinstance(e, Token)]
    # the engine leaves flash attention on llama.cpp's "auto" (on for CPU); Llama's default (off)
    # computes slightly different logits, enough to flip a near-tie in a longer generation
    llm = Llama(str(smol_path), n_ctx=1024, n_threads=2, flash_attn=True, verbose=False)
    theirs = []
    for t in llm.generate(toks, temp=0.0, reset=True):
        theirs.append(t)
        if len(theirs) == len(ours):
            break
    llm.close()
    assert len(ours) > 10
    assert ours == theirs


def test_run_cot_summary(smol):
    events = list(run_cot(smol, "What is 2 + 3?", CotConfig(max_tokens=40)))
    summary = events[-1]
    assert isinstance(summary, Summary)
    tokens = [e for e in events if isinstance(e, Token)]
    assert summary.generated_tokens == len(tokens)
    assert summary.text == "".join(t.text for t in tokens)
    assert summary.elapsed_s > 0


def test_bad_inputs_get_clear_errors(smol, tmp_path, smol_path):
    with pytest.raises(LatentLocalError, match="not found"):
        Engine.open(EngineSettings(model=tmp_path / "nope.gguf"))
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"this is not a model" * 10)
    with pytest.raises(LatentLocalError, match="not a GGUF"):
        Engine.open(EngineSettings(model=junk))
    cut = tmp_path / "cut.gguf"
    with open(smol_path, "rb") as f:
        cut.write_bytes(f.read(2_000_000))
    with pytest.raises(LatentLocalError, match="truncated"):
        Engine.open(EngineSettings(model=cut))
    with pytest.raises(LatentLocalError, match="width"):
        smol.decode_embeddings(np.zeros((2, smol.n_embd - 1)))
    with pytest.raises(LatentLocalError, match="out of range"):
        smol.sibling(capture_layers=[smol.n_layer])
    small = smol.sibling(n_ctx=256, n_seq_max=1)
    too_long = smol.model.tokenize("word " * (small.n_ctx + 10))
    with pytest.raises(LatentLocalError, match="do not fit the context"):
        small.decode_tokens(too_long)
    small.close()


def test_n_gpu_layers_without_gpu_warns_and_runs(smol_path):
    from latentlocal.engine import gpu_offload_supported

    if gpu_offload_supported():
        pytest.skip("this build offloads to a GPU, so nothing to warn about")
    with pytest.warns(RuntimeWarning, match="no GPU support"):
        e = Engine.open(EngineSettings(model=smol_path, n_gpu_layers=99, n_ctx=256, n_seq_max=1))
    e.decode_tokens([1, 2, 3])
    assert e.logits(-1).shape == (e.n_vocab,)
    e.close()


def test_engine_keeps_openblas_on_one_thread(smol_model):
    # spinning OpenBLAS workers after numpy calls would steal the cores from ggml between decodes
    from latentlocal.blas import single_thread_blas

    handles = single_thread_blas.handles
    assert handles, "numpy's OpenBLAS should be found on Linux"
    before = [getter() for getter, _ in handles]
    with Engine(smol_model, n_ctx=256, n_seq_max=1) as eng:
        assert all(getter() == 1 for getter, _ in handles)
        np.dot(np.ones(64), np.ones(64))
        assert eng.n_ctx >= 256
    assert [getter() for getter, _ in handles] == before


@pytest.mark.parametrize("which", ["smol_model", "gemma_model"])
def test_embedding_table_from_ggml_header_matches_gguf_package(which, request, tmp_path):
    """Rows read through ggml's header reader and a memory map equal the gguf package's own full
    parse and dequantization (an independent reader), times the architecture's input scale."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from latentlocal.embeddings import EmbeddingTable, input_scale
    from latentlocal.gguf_header import locate_tensor

    model = request.getfixturevalue(which)
    table = model.embeddings
    alone = EmbeddingTable(model.path)  # width, architecture and tensor all from the header
    assert (alone.n_vocab, alone.n_embd, alone.arch, alone.scale, int(alone.qtype)) == \
        (table.n_vocab, table.n_embd, table.arch, table.scale, int(table.qtype))
    tensor = next(t for t in GGUFReader(str(model.path), "r").tensors if t.name == "token_embd.weight")
    assert (int(tensor.shape[-1]), int(tensor.shape[0]), int(tensor.tensor_type)) == \
        (table.n_vocab, table.n_embd, int(table.qtype))
    ids = np.array([0, 1, 17, table.n_vocab // 2, table.n_vocab - 1])
    want = dequantize(np.asarray(tensor.data[ids]), tensor.tensor_type).reshape(len(ids), -1)
    want = (want * np.float32(input_scale(model.arch, model.n_embd))).astype(np.float32)
    np.testing.assert_array_equal(table.rows(ids), want)
    np.testing.assert_array_equal(alone.rows(ids), want)
    assert locate_tensor(model.path, "no.such.tensor") is None
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(model.path.read_bytes()[:4096])
    with pytest.raises(LatentLocalError, match="truncated or corrupt"):
        locate_tensor(cut, "token_embd.weight")


@pytest.mark.parametrize("which", ["smol_model", "gemma_model"])
def test_read_info_agrees_with_the_loaded_model(which, request, tmp_path):
    from latentlocal.gguf_header import read_info

    model = request.getfixturevalue(which)
    info = read_info(model.path)
    assert (info["arch"], info["n_layer"], info["n_embd"], info["n_vocab"]) == \
        (model.arch, model.n_layer, model.n_embd, model.n_vocab)
    # the header's KV estimate is the loaded model's (the TUI checks a context with it first)
    from latentlocal.engine_settings import kv_bytes_per_token

    assert kv_bytes_per_token(info["n_layer"], info["n_embd"], info["n_head"], info["n_head_kv"]) == \
        model.kv_bytes_per_token
    assert info["size_bytes"] == model.path.stat().st_size and isinstance(info["file_type"], int)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 60)
    with pytest.raises(LatentLocalError, match="truncated or corrupt"):
        read_info(bad)


def test_an_opened_engine_owns_and_frees_its_model(smol_path):
    """Engine.open loaded the weights, so closing it frees them, but only once no sibling context
    still decodes on them; a second close is harmless and a freed model opens no new context."""
    engine = Engine.open(EngineSettings(model=smol_path, n_ctx=256, n_seq_max=1, n_threads=1))
    model = engine.model
    sibling = engine.sibling(n_ctx=128)
    engine.close()
    assert engine.closed and not model.closed
    sibling.decode_tokens([1, 2, 3])
    assert sibling.logits(-1).shape == (model.n_vocab,)
    sibling.close()
    assert model.closed
    engine.close()
    sibling.close()
    with pytest.raises(LatentLocalError, match="was closed"):
        Engine(model, n_ctx=128, n_seq_max=1)


def test_an_engine_on_a_given_model_leaves_it_open(smol_model):
    with Engine(smol_model, n_ctx=128, n_seq_max=1, n_threads=1) as engine:
        engine.decode_tokens([1, 2])
    assert engine.closed and not smol_model.closed


def test_a_context_or_batch_smaller_than_its_sequences_is_refused_not_aborted(smol_model):
    # llama.cpp asserts (SIGABRT) when the batch, cut to the context, has fewer rows than sequences
    with pytest.raises(LatentLocalError, match="--n-ctx 16 or more, or --parallel 10"):
        Engine(smol_model, n_ctx=10, n_seq_max=16)
    with pytest.raises(LatentLocalError, match="n_batch >= 4"):
        Engine(smol_model, n_ctx=256, n_batch=2, n_seq_max=4)
    with Engine(smol_model, n_ctx=4, n_seq_max=4, n_threads=1) as engine:  # the smallest that fits
        engine.decode_tokens([1, 2])
        assert engine.n_batch >= 4


def test_a_context_whose_cache_outgrows_the_memory_is_refused(smol_model):
    # 1e9 tokens: llama.cpp spent minutes growing its allocation before it failed
    assert smol_model.kv_bytes_per_token == 2 * 2 * 30 * 64 * 3  # 30 blocks, 3 KV heads of 64, f16 K and V
    with pytest.raises(LatentLocalError, match="GiB of KV cache.*smaller --n-ctx"):
        Engine(smol_model, n_ctx=999_999_999, n_seq_max=1)


def test_engine_settings_refuse_bad_values_before_loading():
    for bad, match in [({"n_seq_max": 0}, "parallel sequences"), ({"n_seq_max": 257}, "parallel sequences"),
                       ({"n_ctx": -1}, "context size"), ({"n_threads": -2}, "threads"),
                       ({"seed": -1}, "seed must not be negative"), ({"n_threads": 10_000}, "0..512")]:
        with pytest.raises(LatentLocalError, match=match):
            EngineSettings(**bad)


def _alone(engine: Engine, toks: list[int]) -> np.ndarray:
    engine.clear()
    engine.decode_tokens(toks)
    return np.array(engine.logits(-1))


PROMPTS = [QUESTION, "What is 12 minus 5?", "A train travels 60 km in 1 hour. How far does it go in 3 hours?"]


@pytest.mark.parametrize("n_batch", [512, 32])
def test_prompts_decoded_together_give_each_its_own_logits(smol, n_batch):
    """decode_many: each prompt's row is its own (catches rows mapped to the wrong sequence) at
    its own positions, also when the prompts need several decodes (n_batch 32: the earlier
    decodes' logits are gone, so every last token must ride in the final one)."""
    engine = smol if n_batch == 512 else smol.sibling(n_batch=32)
    try:
        toks = [prompt_tokens(engine, q, None) for q in PROMPTS]
        alone = [_alone(engine, t) for t in toks]
        nxt = [_alone(engine, t + [330]) for t in toks]
        engine.clear()
        seqs = [3, 1, 5]
        rows = engine.decode_many(list(zip(seqs, toks)))
        for s, t, a in zip(seqs, toks, alone):
            assert engine.pos(s) == len(t)
            assert_same_distribution(a, engine.logits(rows[s]), f"sequence {s}")
        engine.decode_step(seqs, tokens=[330] * 3)  # each sequence's KV holds its own prompt
        for i, (s, b) in enumerate(zip(seqs, nxt)):
            assert_same_distribution(b, engine.logits(i), f"sequence {s}, one token on")
        with pytest.raises(ValueError, match="one feed per sequence"):
            engine.decode_many([(0, toks[0]), (0, toks[1])])
    finally:
        if engine is not smol:
            engine.close()


def test_a_copied_prompt_prefix_continues_like_a_fresh_prefill(smol):
    """seq_copy(src, dst, n): dst gets src's first n positions (KV and position) and nothing
    after them; src is untouched. Catches a copy one position long or short, or whole."""
    a, b = (prompt_tokens(smol, q, COT_SYSTEM) for q in PROMPTS[:2])
    n = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    assert n > 20  # the chat template and system message
    fresh_b, a_on = _alone(smol, b), _alone(smol, a + [330])
    smol.clear()
    smol.decode_tokens(a, seq=0)
    smol.seq_copy(0, 2, n)
    assert smol.pos(2) == n and smol.pos(0) == len(a)
    smol.decode_tokens(b[n:], seq=2)
    assert_same_distribution(fresh_b, smol.logits(-1), "copied prefix")
    smol.decode_tokens([330], seq=0)
    assert_same_distribution(a_on, smol.logits(-1), "the source after the copy")
    assert smol.seq_intact(2) and not smol.seq_intact(4)
    with pytest.raises(ValueError, match="holds"):
        smol.seq_copy(0, 3, len(a) + 5)


def test_a_model_load_stops_when_cancelled(smol_path):
    """The load polls its cancel event through llama.cpp's progress callback (Escape and Ctrl+Q
    in the TUI waited for a whole load); an unset event loads as usual."""
    import threading

    from latentlocal.engine import LoadCancelled, Model

    stop = threading.Event()
    stop.set()
    with pytest.raises(LoadCancelled, match="cancelled"):
        Model(smol_path, cancel=stop)
    with pytest.raises(LoadCancelled):
        Engine.open(EngineSettings(model=str(smol_path), n_ctx=256, n_seq_max=1), cancel=stop)
    model = Model(smol_path, cancel=threading.Event())
    assert model.n_vocab > 0 and model.n_layer > 0
    model.close()

