"""Loading math word problems from JSONL files (GSM8K, SVAMP, or anything shaped like them)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latentlocal.answers import gold_from_gsm8k
from latentlocal.errors import LatentLocalError
from latentlocal.jsonl import read_objects

__all__ = ["Problem", "load_problems", "problem_id"]

_FIELD_HINT = "pick the right ones with --question-field/--answer-field"


@dataclass(frozen=True)
class Problem:
    """One problem; ``gold`` is already normalised so grading never re-parses the dataset (None
    only from ``load_problems(gold_required=False)``)."""

    id: str
    question: str
    gold: str | None


def problem_id(row: dict[str, Any], id_field: str, path: Path, lineno: int) -> str:
    """The row's ``id_field`` as a string, else "<file stem>:<0-based line index>" (blank lines
    counted), which stays stable across shuffles and slices so results from different runs, and
    SEAL traces, can be paired."""
    raw = row.get(id_field)
    return str(raw) if raw is not None else f"{path.stem}:{lineno - 1}"


def _gold(answer: Any, where: str, answer_field: str, required: bool) -> str | None:
    # bool is an int subclass; True as a gold answer is certainly a wrong field.
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        if not required:
            return None
        raise LatentLocalError(f"{where}: field {answer_field!r} must be a string or number; {_FIELD_HINT}")
    try:
        return gold_from_gsm8k(str(answer))
    except LatentLocalError as err:
        if not required:
            return None
        raise LatentLocalError(f"{where}: {err}") from err


def load_problems(
    path: str | os.PathLike[str],
    question_field: str = "question",
    answer_field: str = "answer",
    id_field: str = "id",
    limit: int | None = None,
    offset: int = 0,
    shuffle_seed: int | None = None,
    gold_required: bool = True,
) -> list[Problem]:
    """Problems from a JSONL file, optionally shuffled (seeded), then sliced ``[offset:offset+limit]``.

    The answer may be GSM8K style ("...#### 72") or a bare number. With ``gold_required=False``
    (SEAL extraction, which only records it) a missing or unreadable answer gives ``gold`` None.
    Ids follow ``problem_id``. Blank lines are skipped; an unshuffled load lists the file's rows
    in order, so ``offset + i`` is row ``i``'s index among them.
    """
    path = Path(path)
    if limit is not None and limit < 0:
        raise LatentLocalError(f"limit must be 0 or more, got {limit}; pass a non-negative count")
    if offset < 0:
        raise LatentLocalError(f"offset must be 0 or more, got {offset}; pass a non-negative index")
    if shuffle_seed is not None and shuffle_seed < 0:
        raise LatentLocalError(f"the shuffle seed must be 0 or more, not {shuffle_seed}")
    if not path.exists():
        raise LatentLocalError(f"dataset file {path} not found; check the path")

    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for lineno, row in read_objects(path, fix="each line must be one JSON object"):
        where = f"{path}:{lineno}"
        fields = (question_field, answer_field) if gold_required else (question_field,)
        for field in fields:
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
        gold = _gold(row.get(answer_field), where, answer_field, gold_required)
        pid = problem_id(row, id_field, path, lineno)
        # Results are keyed by (method, id); a repeated id would silently overwrite a result.
        if pid in seen:
            raise LatentLocalError(
                f"{where}: id {pid!r} already used on line {seen[pid]}; make the ids in the "
                "file unique"
            )
        seen[pid] = lineno
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
