"""Answer extraction, normalisation, grading and voting on the cases models actually produce."""

from __future__ import annotations

import pytest

from latentlocal.errors import LatentLocalError
from latentlocal.answers import (
    extract_answer,
    gold_from_gsm8k,
    is_correct,
    majority_vote,
    normalize_number,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is $1,234.50.", "1234.5"),
        (r"\boxed{\frac{3}{4}}", "0.75"),
        (r"\boxed{3/4}", "0.75"),
        (r"\boxed{\dfrac{1}{3}}", "0.333333"),
        (r"\boxed{-\frac{3}{4}}", "-0.75"),
        ("Final answer: 16 dollars.", "16"),
        ("Janet has 3 ducks.\n#### 72", "72"),
        ("16.", "16"),
        ("-5", "-5"),
        ("50%", "50"),
        (r"\$16", "16"),
        (r"16\%", "16"),
        ("She earns 5 apples.", "5"),
        (r"$\boxed{1{,}234}$", "1234"),
        (r"\boxed{16 \text{ dollars}}", "16"),
        (r"\boxed{x = 5}", "5"),
        ("**Final Answer:** 42", "42"),
        ("the final answer is 15 gallons * 8 pints / gallon = 120 pints", "120"),
        ("Final answer: 16 = 2^4", "16"),
        ("It costs 0.25 dollars", "0.25"),
        ("profit of -$5", "-5"),
        ("10-4=6", "6"),  # a binary minus is not a sign
        ("x = 10 - 5", "5"),
        ("\u22127 degrees", "-7"),
        ("1\\,234 people", "1234"),
        ("no number here", None),
        ("", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_marker_decides_among_many_numbers() -> None:
    text = "She had 3 apples and 5 pears, 2 were eaten. The answer is 7. Check: 3+4=7, 10 left."
    assert extract_answer(text) == "7"
    # the last marker wins, and a marker beats "####"
    assert extract_answer("Answer: 3. Wait, redo. Final answer: 9 cats.\n#### 4") == "9"
    # boxed beats everything
    assert extract_answer(r"The answer is 5. \boxed{6} Answer: 7") == "6"
    # a marker with no number does not steal one from earlier text
    assert extract_answer("The answer is 5. Answer: see above") == "5"
    # "2 points/answer = 48" is a unit, not a marker
    assert extract_answer("24 * 2 points/answer = 48 points, plus 16 = 64 points") == "64"


def test_boxed_last_one_and_nested_braces() -> None:
    assert extract_answer(r"\boxed{1} then \boxed{\text{{2}}} finally \boxed{\frac{6}{8}}") == "0.75"
    assert extract_answer(r"\boxed{12} and a truncated \boxed{") == "12"


def test_gsm8k_last_number_fallback() -> None:
    text = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nShe sold 48+24 = <<48+24=72>>72 clips."
    assert extract_answer(text) == "72"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("16", "16"),
        ("16.0", "16"),
        ("16.00", "16"),
        ("$16", "16"),
        ("1,600", "1600"),
        ("1600", "1600"),
        ("50%", "50"),
        (" 16 ", "16"),
        ("16.", "16"),
        ("-0", "0"),
        ("-0.50", "-0.5"),
        ("3/4", "0.75"),
        ("2/3", "0.666667"),
        ("0.1", "0.1"),  # no binary-float artefacts
        ("1e-7", "0.0000001"),  # small values keep significant digits
        ("15.9999999", "16"),
        ("1e5", "100000"),
        (r"\$1,234.5", "1234.5"),
        ("abc", None),
        ("", None),
        ("3/0", None),
        ("nan", None),
        ("inf", None),
        ("1e99999999", None),
        ("16 apples", None),
        # separators between digits only in thousands groups: a decimal comma or a list of two
        # answers is no number (stripping every comma read them as 15 and 23)
        ("1 234", "1234"),
        ("\u22121,234", "-1234"),
        ("1,000/3", "333.333333"),
        ("1,5", None),
        ("2, 3", None),
        ("12,34", None),
        ("1,2345", None),
    ],
)
def test_normalize_number(raw: str, expected: str | None) -> None:
    assert normalize_number(raw) == expected


def test_is_correct() -> None:
    assert is_correct("16.0", "16")
    assert is_correct("$16", "16")
    assert is_correct("1,234", "1234")
    assert is_correct("0.333333", "1/3")  # within the float tolerance
    assert is_correct("0.75", "3/4")
    assert not is_correct("0.3333", "1/3")
    assert not is_correct("17", "16")
    assert not is_correct(None, "16")
    assert not is_correct("sixteen", "16")
    assert is_correct(extract_answer("The answer is $1,234.50."), "1234.5")


def test_gold_from_gsm8k() -> None:
    assert gold_from_gsm8k("Natalia sold 48/2 = 24 clips.\n#### 72") == "72"
    assert gold_from_gsm8k("a #### 5 then #### 1,000") == "1000"
    assert gold_from_gsm8k("-3") == "-3"
    assert gold_from_gsm8k("#### 2.50") == "2.5"
    with pytest.raises(LatentLocalError, match="no number"):
        gold_from_gsm8k("#### none")
    assert gold_from_gsm8k("#### 1,000 dollars") == "1000"
    with pytest.raises(LatentLocalError, match="not a thousands separator"):
        gold_from_gsm8k("#### 1,5")


def test_a_boxed_list_is_not_read_as_one_number() -> None:
    # "\boxed{2, 3}" was normalised whole to 23; now its last number is the answer
    assert extract_answer(r"so \boxed{2, 3}") == "3"
    assert extract_answer(r"\boxed{1,234}") == "1234"


def test_majority_vote() -> None:
    assert majority_vote(["16", "16.0", "$16", "3"]) == "16"
    assert majority_vote([None, None]) is None
    assert majority_vote([]) is None
    assert majority_vote([None, "5", None]) == "5"
    # tie: first occurrence without scores
    assert majority_vote(["2", "1", "1", "2"]) == "2"
    # tie: highest score among the tied answers wins; the untied "9" is ignored even with score 99
    assert majority_vote(["1", "2", "2", "1", "9"], [0.1, 0.2, 0.3, 0.9, 99.0]) == "1"
    assert majority_vote(["1", "2", "2", "1"], [0.5, 0.6, 0.1, 0.1]) == "2"
    # equal best scores fall back to first occurrence
    assert majority_vote(["3", "4"], [1.0, 1.0]) == "3"
    with pytest.raises(ValueError):
        majority_vote(["1"], [0.1, 0.2])
