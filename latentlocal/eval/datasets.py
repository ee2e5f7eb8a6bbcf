"""Loading math word problems from JSONL files (GSM8K, SVAMP, or anything shaped like them)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentlocal.answers import gold_from_gsm8k
from latentlocal.errors import LatentLocalError

__all__ = ["Problem", "load_problems"]

_FIELD_HINT = "pick the right ones with --question-field/--answer-field"


@dataclass(frozen=True)
class Problem:
    """One problem; ``gold`` is already normalised so grading never re-parses the dataset."""

    id: str
    question: str
    gold: str


def load_problems(
    path: str | os.PathLike[str],
    question_field: str = "question",
    answer_field: str = "answer",
    id_field: str = "id",
    limit: int | None = None,
    offset: int = 0,
    shuffle_seed: int | None = None,
) -> list[Problem]:
    """Problems from a JSONL file, optionally shuffled (seeded), then sliced ``[offset:offset+limit]``.

    The answer may be GSM8K style ("...#### 72") or a bare number. Without an id field the id is
    "<file stem>:<0-based line index>", which stays stable across shuffles and slices so results
    from different runs can be paired.
    """
    path = Path(path)
    if limit is not None and limit < 0:
        raise LatentLocalError(f"limit must be 0 or more, got {limit}; pass a non-negative count")
    if offset < 0:
        raise LatentLocalError(f"offset must be 0 or more, got {offset}; pass a non-negative index")
    if not path.exists():
        raise LatentLocalError(f"dataset file {path} not found; check the path")
    if not path.is_file():
        raise LatentLocalError(f"dataset path {path} is not a file; pass a .jsonl file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise LatentLocalError(f"{path} is not UTF-8 text ({err.reason}); convert it to UTF-8 JSONL") from err
    except OSError as err:
        raise LatentLocalError(f"cannot read dataset {path}: {err.strerror}; check permissions") from err

    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        where = f"{path}:{index + 1}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise LatentLocalError(
                f"{where}: bad JSON ({err.msg}, column {err.colno}); each line must be one JSON object"
            ) from err
        if not isinstance(row, dict):
            raise LatentLocalError(f"{where}: expected a JSON object, got {type(row).__name__}; one object per line")
        for field in (question_field, answer_field):
            if field not in row:
                present = ", ".join(sorted(row)) or "none"
                raise LatentLocalError(
                    f"{where}: no field {field!r} (fields present: {present}); {_FIELD_HINT}"
                )
        question = row[question_field]
        if not isinstance(question, str) or not question.strip():
            raise LatentLocalError(
                f"{where}: field {question_field!r} must be a non-empty string; {_FIELD_HINT}"
            )
        answer = row[answer_field]
        # bool is an int subclass; True as a gold answer is certainly a wrong field.
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
            raise LatentLocalError(
                f"{where}: field {answer_field!r} must be a string or number; {_FIELD_HINT}"
            )
        try:
            gold = gold_from_gsm8k(str(answer))
        except LatentLocalError as err:
            raise LatentLocalError(f"{where}: {err}") from err
        raw_id = row.get(id_field)
        pid = str(raw_id) if raw_id is not None else f"{path.stem}:{index}"
        # Results are keyed by (method, id); a repeated id would silently overwrite a result.
        if pid in seen:
            raise LatentLocalError(
                f"{where}: id {pid!r} already used on line {seen[pid]}; make the ids in the "
                "file unique"
            )
        seen[pid] = index + 1
        problems.append(Problem(id=pid, question=question, gold=gold))

    if not problems:
        raise LatentLocalError(f"dataset {path} has no problems; it needs one JSON object per line")
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(problems))
        problems = [problems[i] for i in order]
    if offset >= len(problems):
        raise LatentLocalError(
            f"offset {offset} is past the end of {path} ({len(problems)} problems); use a smaller offset"
        )
    end = None if limit is None else offset + limit
    return problems[offset:end]
