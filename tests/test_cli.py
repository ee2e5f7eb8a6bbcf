"""The command line: JSON events, bad input as one clear line (the library/UI boundary is
tests/test_layers.py)."""

from __future__ import annotations

import json

import pytest

from latentlocal.cli import main
from latentlocal.errors import LatentLocalError


def test_run_json_ends_with_a_summary(capsys):
    assert main(["run", "What is 2 + 3?", "--max-tokens", "24", "--json", "--threads", "2", "--n-ctx", "512"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    summary = lines[-1]
    assert summary["type"] == "summary"
    assert {"answer", "generated_tokens", "elapsed_s"} <= summary.keys()
    tokens = [e for e in lines if e["type"] == "token"]
    assert summary["generated_tokens"] == len(tokens) > 0
    assert summary["text"] == "".join(t["text"] for t in tokens)


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    assert main(["run", "hi", "--model", str(tmp_path / "missing.gguf")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: model file not found") and "\n" not in err
    junk = tmp_path / "junk.gguf"
    junk.write_text("hello")
    assert main(["run", "hi", "--model", str(junk)]) == 2
    assert "not a GGUF file" in capsys.readouterr().err
    assert main(["run", "hi", "--method", "telepathy"]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert main(["run", "hi", "--max-tokens", "0"]) == 2
    assert "--max-tokens must be positive" in capsys.readouterr().err
    for argv, says in [(["run", "  "], "the prompt is empty"),
                       # a flag of another method was ignored without a word
                       (["run", "hi", "--alpha", "5"], "--alpha is an option of seal, not of cot"),
                       (["bench", "--data", str(junk), "--out", str(tmp_path / "o"), "--methods", "cot,sc",
                         "--max-topk", "3"], "--max-topk is an option of soft-thinking, not of cot, sc"),
                       (["run", "hi", "--method", "sr", "--dim", "100000"], "--dim must lie in [1, 21201]"),
                       (["bench", "--data", str(junk), "--out", str(tmp_path / "o"), "--limit", "0"], None),
                       (["bench", "--data", str(junk), "--out", str(tmp_path / "o"), "--shuffle-seed", "-1"],
                        "shuffle seed must be 0 or more")]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "\n" not in err.strip() and (says is None or says in err), err
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "What is 1 + 1?", "answer": "2"}\n')
    for argv, says in [(["--limit", "0"], "selects no problems"), (["--methods", ","], "names no method")]:
        assert main(["bench", "--data", str(data), "--out", str(tmp_path / "o"), *argv]) == 2
        assert says in capsys.readouterr().err
    assert main(["run", "hi", "--seed", "-1"]) == 2  # a traceback from numpy's seeding before
    assert "--seed must be at least 0, not -1" in capsys.readouterr().err
    assert main(["seal", "extract", "--data", str(junk), "--out", str(tmp_path / "v.gguf"),
                 "--temperature", "-1"]) == 2
    assert "--temperature must be at least 0" in capsys.readouterr().err


def test_outputs_that_cannot_be_written_and_no_terminal_are_one_line(tmp_path, capsys, monkeypatch):
    import latentlocal.cli.bench as bench_cli

    afile = tmp_path / "afile"
    afile.write_text("mine")
    monkeypatch.setattr(bench_cli, "open_engine", lambda args: pytest.fail("the model was loaded"))
    data = tmp_path / "q.jsonl"
    data.write_text('{"question": "What is 1 + 1?", "answer": "2"}\n')
    assert main(["bench", "--data", str(data), "--out", str(afile)]) == 2  # a traceback, after loading
    assert "--out" in capsys.readouterr().err and afile.read_text() == "mine"
    assert main(["seal", "extract", "--data", str(data), "--out", str(afile / "v.gguf"),
                 "--max-tokens", "4", "--threads", "1"]) == 2
    assert "cannot write beside it" in capsys.readouterr().err
    assert main(["tui"]) == 2  # pytest's stdin is no terminal: Textual died in termios
    assert "needs a terminal" in capsys.readouterr().err

    import latentlocal.cli.models as models_cli

    def full_disk(args):
        raise OSError(28, "No space left on device", "/data/out.json")

    monkeypatch.setattr(models_cli, "cmd_models", full_disk)
    assert main(["models"]) == 2  # any command's failed write: one line naming the file
    assert capsys.readouterr().err.strip() == ("error: No space left on device (/data/out.json); "
                                               "check that path and its free space")


def test_models_lists_the_bundled_model(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("LATENTLOCAL_MODELS", str(tmp_path))
    (tmp_path / "broken.gguf").write_bytes(b"GGUF\x03\x00")
    assert main(["models", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    bundled = [r for r in rows if r["bundled"]]
    assert bundled and bundled[0]["arch"] == "llama" and bundled[0]["n_layer"] == 30 and bundled[0]["n_embd"] == 576
    broken = [r for r in rows if r["path"].endswith("broken.gguf")]
    assert broken and "error" in broken[0]


def test_model_flags_default_to_the_engine_settings():
    """The engine defaults are written once (EngineSettings): the flags of every command that
    opens a model start from them, and --parallel beyond what a context holds is refused (it was
    clamped without a word)."""
    from latentlocal.cli import build_parser
    from latentlocal.cli.common import engine_settings
    from latentlocal.engine_settings import MAX_SEQUENCES, EngineSettings

    parser = build_parser()
    for argv in (["run", "q"], ["bench", "--out", "o"], ["seal", "extract", "--data", "d", "--out", "o"],
                 ["seal", "sweep", "v", "--data", "d"]):
        assert engine_settings(parser.parse_args(argv)) == EngineSettings(), argv
    args = parser.parse_args(["run", "q", "--n-ctx", "512", "--parallel", str(MAX_SEQUENCES), "--threads", "3",
                              "--seed", "7", "--n-gpu-layers", "5", "--model", "m.gguf", "--verbose",
                              "--reasoning", "off"])
    assert engine_settings(args) == EngineSettings(model="m.gguf", n_gpu_layers=5, n_ctx=512, n_threads=3,
                                                   n_seq_max=MAX_SEQUENCES, seed=7, verbose=True,
                                                   reasoning="off")
    for bad in (MAX_SEQUENCES + 1, 0):
        with pytest.raises(LatentLocalError, match=rf"--parallel.*not {bad}"):
            engine_settings(parser.parse_args(["run", "q", "--parallel", str(bad)]))


def test_the_tui_model_settings_start_from_the_engine_settings():
    from latentlocal.engine_settings import EngineSettings
    from tui.config import ModelSettings

    m, e = ModelSettings(), EngineSettings()
    assert (m.n_gpu_layers, m.n_ctx, m.threads or None, m.parallel, m.reasoning) == (
        e.n_gpu_layers, e.n_ctx, e.n_threads, e.n_seq_max, e.reasoning)


def test_every_model_command_takes_rpc_and_tensor_split():
    from latentlocal.cli import build_parser
    from latentlocal.cli.common import engine_settings

    parser = build_parser()
    for argv in (["run", "q"], ["bench", "--out", "o"], ["seal", "extract", "--data", "d", "--out", "o"],
                 ["seal", "sweep", "v", "--data", "d"], ["serve"]):
        args = parser.parse_args([*argv, "--rpc", "10.0.0.2:50052,10.0.0.3:6000", "--tensor-split", "3,1"])
        s = engine_settings(args)
        assert (s.rpc, s.tensor_split) == (("10.0.0.2:50052", "10.0.0.3:6000"), (3.0, 1.0)), argv
