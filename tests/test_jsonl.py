"""latentlocal.jsonl: one reader with file:line errors, one append that survives a torn line; and
one id rule for evaluation problems and SEAL extraction questions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from latentlocal.datasets import load_problems
from latentlocal.errors import LatentLocalError
from latentlocal.jsonl import append_object, read_objects
from latentlocal.methods.seal.extract import ExtractConfig, _load_questions
from latentlocal.methods.seal.workdir import WorkFolder


def test_each_bad_line_is_named_by_file_line_and_problem(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"a": 1}\n\n[1, 2]\n')
    with pytest.raises(LatentLocalError, match=r"data\.jsonl:3: expected a JSON object, got list; do X"):
        read_objects(path, fix="do X")
    path.write_bytes(b'{"a": 1}\n{"a": \n{"a": 3}\n')
    with pytest.raises(LatentLocalError, match=r"data\.jsonl:2: bad JSON \(Expecting value, column 7\)"):
        read_objects(path, torn_tail_ok=True)  # a bad middle line is never a torn tail
    path.write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    with pytest.raises(LatentLocalError, match=r"data\.jsonl:2: not UTF-8 text"):
        read_objects(path)
    with pytest.raises(LatentLocalError, match=r"missing\.jsonl not found"):
        read_objects(tmp_path / "missing.jsonl")


def test_a_torn_last_line_is_dropped_only_when_allowed(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"a": 2}\n{"a": "\xc3')  # killed inside a two-byte character
    assert read_objects(path, torn_tail_ok=True) == [(1, {"a": 1}), (3, {"a": 2})]
    with pytest.raises(LatentLocalError, match=r"log\.jsonl:4"):
        read_objects(path)


def test_append_after_a_torn_line_keeps_every_whole_record(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    append_object(path, {"a": 1})
    with open(path, "ab") as f:
        f.write(b'{"a": 2, "half')  # a kill mid-append
    append_object(path, {"a": 3})
    assert read_objects(path) == [(1, {"a": 1}), (2, {"a": 3})]  # strict: no bad line anywhere


def test_seal_work_folder_resumes_over_a_torn_trace(tmp_path: Path) -> None:
    # The work folder used to start a new line after a torn one, leaving it in the middle of the
    # log; with the shared append it is cut, and the strict reader finds every finished trace.
    import numpy as np

    work = WorkFolder(tmp_path / "w", {"captured_layers": [3], "v": 1}, layer=3)
    work.add({"k": 0, "id": "a"}, np.zeros((1, 4), dtype=np.float32))
    with open(work.traces_path, "ab") as f:
        f.write(b'{"k": 1, "id": "b", "sta')
    work.add({"k": 2, "id": "c"}, np.ones((1, 4), dtype=np.float32))
    again = WorkFolder(tmp_path / "w", {"captured_layers": [3], "v": 1}, layer=3)
    assert sorted(again.load()) == ["a", "c"]
    assert read_objects(work.traces_path)  # no torn line left in the middle


def _rows(path: Path, rows: list[dict | None]) -> Path:
    # None writes a blank line: it still counts in a default id's line index
    path.write_text("".join("\n" if r is None else json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_extraction_and_evaluation_give_a_file_the_same_ids(tmp_path: Path) -> None:
    data = _rows(tmp_path / "mix.jsonl", [
        {"question": "q0", "answer": "#### 1"},
        None,
        {"question": "q1", "answer": "#### 2", "id": 17},
        {"question": "q2", "answer": "no number here"},
        {"question": "q3"},
    ])
    cfg = ExtractConfig(data=str(data), out=str(tmp_path / "v.gguf"), limit=10, offset=1)
    questions = _load_questions(cfg)
    assert [(q.k, q.id, q.gold) for q in questions] == [(1, "17", "2"), (2, "mix:3", None), (3, "mix:4", None)]
    evaluated = load_problems(_rows(tmp_path / "mix.jsonl", [
        {"question": "q0", "answer": "#### 1"}, None, {"question": "q1", "answer": "#### 2", "id": 17},
        {"question": "q2", "answer": "#### 3"}, {"question": "q3", "answer": "#### 4"},
    ]), offset=1)
    assert [p.id for p in evaluated] == [q.id for q in questions]


def test_extraction_refuses_repeated_ids(tmp_path: Path) -> None:
    # Traces are kept by id in the work folder: a repeated id would silently skip the second
    # problem as "done earlier".
    data = _rows(tmp_path / "dup.jsonl", [{"question": "a", "id": 1}, {"question": "b", "id": 1}])
    with pytest.raises(LatentLocalError, match=r"dup\.jsonl:2: id '1' already used on line 1"):
        _load_questions(ExtractConfig(data=str(data), out=str(tmp_path / "v.gguf"), limit=5))


def test_a_byte_order_mark_is_not_part_of_the_first_object(tmp_path: Path) -> None:
    # Windows editors save UTF-8 with a BOM; the first line was "bad JSON"
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b'\xef\xbb\xbf{"question": "q1", "answer": "1"}\n{"question": "q2", "answer": "2"}\n')
    assert [obj["question"] for _, obj in read_objects(p)] == ["q1", "q2"]
    assert [pr.gold for pr in load_problems(p)] == ["1", "2"]
