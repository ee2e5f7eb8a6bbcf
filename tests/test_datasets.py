"""Loading problems from JSONL: slicing, seeded shuffles, field names and clear input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from latentlocal.errors import LatentLocalError
from latentlocal.datasets import Problem, load_problems

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def ten(tmp_path: Path) -> Path:
    rows = [{"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"} for i in range(10)]
    return _write(tmp_path / "toy.jsonl", rows)


def test_basic_load_gsm8k_style_and_default_ids(ten: Path) -> None:
    probs = load_problems(ten)
    assert len(probs) == 10
    assert probs[0] == Problem(id="toy:0", question="What is 0 + 1?", gold="1")
    assert [p.id for p in probs] == [f"toy:{i}" for i in range(10)]
    with pytest.raises(Exception):  # frozen
        probs[0].gold = "2"  # type: ignore[misc]


def test_limit_and_offset(ten: Path) -> None:
    assert [p.gold for p in load_problems(ten, limit=3)] == ["1", "2", "3"]
    assert [p.gold for p in load_problems(ten, offset=8)] == ["9", "10"]
    assert [p.gold for p in load_problems(ten, offset=2, limit=2)] == ["3", "4"]
    assert [p.gold for p in load_problems(ten, offset=8, limit=5)] == ["9", "10"]
    assert load_problems(ten, limit=0) == []


def test_shuffle_is_seeded_and_applied_before_slicing(ten: Path) -> None:
    a = load_problems(ten, shuffle_seed=7)
    assert a == load_problems(ten, shuffle_seed=7)
    assert sorted(p.id for p in a) == sorted(p.id for p in load_problems(ten))
    assert [p.id for p in a] != [p.id for p in load_problems(ten)]
    assert [p.id for p in a] != [p.id for p in load_problems(ten, shuffle_seed=8)]
    # offset/limit slice the shuffled order, so chunks of one seed tile the whole file
    chunks = load_problems(ten, shuffle_seed=7, limit=4) + load_problems(ten, shuffle_seed=7, offset=4)
    assert chunks == a
    import numpy as np

    expected = [f"toy:{i}" for i in np.random.default_rng(7).permutation(10)]
    assert [p.id for p in a] == expected


def test_custom_fields_bare_numbers_and_ids(tmp_path: Path) -> None:
    rows = [
        {"body": "Q1", "target": 72, "uid": "a"},
        {"body": "Q2", "target": "1,000", "uid": 7},
        {"body": "Q3", "target": 2.5},  # no id: falls back to stem:line
    ]
    path = _write(tmp_path / "custom.jsonl", rows)
    probs = load_problems(path, question_field="body", answer_field="target", id_field="uid")
    assert probs == [
        Problem("a", "Q1", "72"),
        Problem("7", "Q2", "1000"),
        Problem("custom:2", "Q3", "2.5"),
    ]


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "gaps.jsonl"
    path.write_text('{"question": "a", "answer": "1"}\n\n{"question": "b", "answer": "2"}\n', encoding="utf-8")
    probs = load_problems(path)
    assert [(p.id, p.gold) for p in probs] == [("gaps:0", "1"), ("gaps:2", "2")]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LatentLocalError, match="not found"):
        load_problems(tmp_path / "nope.jsonl")


def test_bad_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "a", "answer": "1"}\n{"question": "b", "answer"\n', encoding="utf-8")
    with pytest.raises(LatentLocalError, match=r"bad\.jsonl:2: bad JSON"):
        load_problems(path)


def test_not_an_object(tmp_path: Path) -> None:
    path = _write(tmp_path / "list.jsonl", [[1, 2]])
    with pytest.raises(LatentLocalError, match="expected a JSON object"):
        load_problems(path)


@pytest.mark.parametrize("missing", ["question", "answer"])
def test_missing_field_names_field_and_options(tmp_path: Path, missing: str) -> None:
    row = {"question": "q", "answer": "#### 1"}
    del row[missing]
    path = _write(tmp_path / "f.jsonl", [row])
    with pytest.raises(LatentLocalError) as info:
        load_problems(path)
    msg = str(info.value)
    assert repr(missing) in msg and "--question-field/--answer-field" in msg and "f.jsonl:1" in msg


def test_custom_field_missing(ten: Path) -> None:
    with pytest.raises(LatentLocalError, match="no field 'problem'"):
        load_problems(ten, question_field="problem")


def test_gold_without_number(tmp_path: Path) -> None:
    path = _write(tmp_path / "g.jsonl", [{"question": "q", "answer": "#### 1"}, {"question": "q", "answer": "#### many"}])
    with pytest.raises(LatentLocalError, match=r"g\.jsonl:2: .*has no number"):
        load_problems(path)


@pytest.mark.parametrize("answer", [None, True, ["1"]])
def test_gold_of_wrong_type(tmp_path: Path, answer: object) -> None:
    path = _write(tmp_path / "t.jsonl", [{"question": "q", "answer": answer}])
    with pytest.raises(LatentLocalError, match="must be a string or number"):
        load_problems(path)


def test_empty_question(tmp_path: Path) -> None:
    path = _write(tmp_path / "e.jsonl", [{"question": "  ", "answer": "1"}])
    with pytest.raises(LatentLocalError, match="non-empty string"):
        load_problems(path)


def test_duplicate_ids(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", [{"question": "a", "answer": "1", "id": "x"}, {"question": "b", "answer": "2", "id": "x"}])
    with pytest.raises(LatentLocalError, match="already used on line 1"):
        load_problems(path)


def test_empty_file_and_bad_slices(tmp_path: Path, ten: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(LatentLocalError, match="no problems"):
        load_problems(empty)
    with pytest.raises(LatentLocalError, match="past the end"):
        load_problems(ten, offset=10)
    with pytest.raises(LatentLocalError, match="offset must be"):
        load_problems(ten, offset=-1)
    with pytest.raises(LatentLocalError, match="limit must be"):
        load_problems(ten, limit=-1)
    with pytest.raises(LatentLocalError, match="not a file"):
        load_problems(tmp_path)


needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder {DATA} not present")


@needs_data
def test_real_gsm8k_train() -> None:
    probs = load_problems(DATA / "gsm8k" / "train.jsonl")
    assert len(probs) == 7473
    assert probs[0].id == "train:0"
    assert probs[0].gold == "72"  # Natalia's clips
    assert all(p.question and p.gold for p in probs)
    assert len({p.id for p in probs}) == 7473
    shuffled = load_problems(DATA / "gsm8k" / "train.jsonl", shuffle_seed=0, offset=100, limit=50)
    assert len(shuffled) == 50
    assert shuffled == load_problems(DATA / "gsm8k" / "train.jsonl", shuffle_seed=0, offset=100, limit=50)


@needs_data
def test_real_svamp_dev() -> None:
    probs = load_problems(DATA / "svamp" / "dev.jsonl")
    assert len(probs) == 500
    assert probs[0].id == "chal-265"  # the file's own id field
    assert probs[0].gold == "3"
    assert len({p.id for p in probs}) == 500
