"""Numeric answer extraction, normalisation, grading and voting for math word problems.

Everything here works on strings so results files stay human-readable; the canonical form
produced by :func:`normalize_number` is what gets stored, compared and voted on.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from decimal import Decimal, localcontext
from fractions import Fraction

from latentlocal.errors import LatentLocalError

__all__ = [
    "extract_answer",
    "normalize_number",
    "gold_from_gsm8k",
    "is_correct",
    "majority_vote",
]

# Relative tolerance for float equality: generous enough to forgive the 6-decimal rounding of
# normalize_number, far too tight to accept a genuinely different answer.
_REL_TOL = 1e-6
_ABS_TOL = 1e-9

# A number body: "1,234,567.5" (commas only in valid thousands groups, otherwise "1,2" would
# read as 12), "1234.5", or ".5". The (?!\d) stops "1,2345" from being read as "1,234".
_NUM_BODY = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|(?<![\w.])\.\d+"
# A sign only counts when it is not a binary minus: "10-4" must not yield -4. "-$5" and "$-5"
# both occur in model output.
_PREFIX = r"(?P<pre>(?<![\w)\]}])-\$?|\$\s?-?)?"
_NUMBER_RE = re.compile(rf"{_PREFIX}(?P<a>{_NUM_BODY})")
_FRACTION_RE = re.compile(rf"{_PREFIX}(?P<a>{_NUM_BODY})(?:\s*/\s*(?P<b>\d+)(?![\d.,]*\d))?")

# "Final answer: 16", "**Final Answer**: 16", "The answer is 16", "Answer: 16". Bare "answer is"
# is deliberately not a marker: "to check my answer is right, 3+4=7" would grade as 3.
# A bare "answer" needs a colon and no "/" before it: "2 points/answer = 48" is a unit.
_MARKER_RE = re.compile(
    r"\b(?:final\s+answer[\s*]*(?:is\b|[:=])"
    r"|the\s+(?:correct\s+)?answer[\s*]*(?:is\b|:)"
    r"|(?<!/)answer[\s*]*:)",
    re.IGNORECASE,
)
# End of the sentence that states the answer: a newline or a period that is not a decimal point.
_SENTENCE_END_RE = re.compile(r"\n|\.(?!\d)")
_OPERATOR_RE = re.compile(r"[*+\u00d7\u00f7/]|\s[-x]\s")
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_HASHES_RE = re.compile(r"####")
_EXPONENT_RE = re.compile(r"[eE]([-+]?\d+)")
# Commas and spaces between digits are only thousands separators in groups of three: "1,234"
# and "1 234" are 1234, while "1,5" (a decimal comma) and "2, 3" (two answers) are no number,
# not 15 and 23.
_SEPARATOR_RE = re.compile("\\d[, \u00a0\u2009]+\\d")
_BAD_COMMA_RE = re.compile(r"\d,(?!\d{3}(?!\d))\d")
_GROUPED_RE = re.compile("[-+]?\\d{1,3}(?:[, \u00a0\u2009]\\d{3})+(?:\\.\\d*)?")

# LaTeX that wraps or decorates numbers; rewritten to plain text before any number search.
_FRAC_RE = re.compile(r"\\[dt]?frac\s*\{\s*(-?[\d.,]+)\s*\}\s*\{\s*(-?[\d.,]+)\s*\}")
_FRAC_SHORT_RE = re.compile(r"\\[dt]?frac\s*(\d)\s*(\d)")
_TEXT_RE = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_THIN_SPACE_RE = re.compile(r"(?<=\d)\\[,;:!]\s*(?=\d)")


def _clean_latex(text: str) -> str:
    """Rewrite the LaTeX that models put around numbers so the plain number regex sees them."""
    text = text.replace("\u2212", "-").replace("\u2013", "-")  # unicode minus / en dash
    text = text.replace("\\$", "$").replace("\\%", "%").replace("{,}", ",")
    text = _THIN_SPACE_RE.sub("", text)  # "1\,234" is a thousands separator
    text = _TEXT_RE.sub(r" \1 ", text)
    text = _FRAC_RE.sub(r"\1/\2", text)
    text = _FRAC_SHORT_RE.sub(r"\1/\2", text)
    text = text.replace("\\left", "").replace("\\right", "").replace("\\!", "")
    return text


def _token(match: re.Match[str]) -> str | None:
    """Turn a number-regex match into a normalised string, or None if it is not a number."""
    negative = "-" in (match.group("pre") or "")
    body = match.group("a")
    den = match.groupdict().get("b")
    if den is not None and int(den) != 0:
        body = f"{body}/{den}"
    return normalize_number(("-" if negative else "") + body)


def _numbers(text: str, fractions: bool) -> list[str]:
    # Fractions are only read where the text states an answer (boxed, after a marker): in
    # running prose "48/2 = 24" or "scored 7/10" is working, not a value.
    pattern = _FRACTION_RE if fractions else _NUMBER_RE
    out = []
    for m in pattern.finditer(text):
        tok = _token(m)
        if tok is not None:
            out.append(tok)
    return out


def _boxed_contents(text: str) -> list[str]:
    """Contents of every \\boxed{...}, brace-balanced; a truncated last one runs to the end."""
    out = []
    for m in _BOXED_RE.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            i += 1
        out.append(text[m.end() : i - 1] if depth == 0 else text[m.end() :])
    return out


def _from_content(content: str) -> str | None:
    whole = normalize_number(content)
    if whole is not None:
        return whole
    # "x = 5", "2+3=5", "16 dollars": the stated value is the last number.
    nums = _numbers(content, fractions=True)
    return nums[-1] if nums else None


def _after_marker(segment: str) -> str | None:
    nums = _numbers(segment, fractions=True)
    if not nums:
        return None
    # "The answer is 15 * 8 = 120": the value is the result, not the first operand. Only when
    # the stated sentence holds arithmetic before the "=", so "16 = 2^4" still reads 16.
    first = _FRACTION_RE.search(segment)
    if first is None:
        return nums[0]
    stop = _SENTENCE_END_RE.search(segment, first.end())
    sentence = segment[: stop.start() if stop else len(segment)]
    eq = sentence.rfind("=")
    if eq > first.start() and _OPERATOR_RE.search(sentence, first.start(), eq):
        after = _numbers(sentence[eq + 1 :], fractions=True)
        if after:
            return after[0]
    return nums[0]


def extract_answer(text: str, last_number: bool = True) -> str | None:
    """The model's final numeric answer in a chain of thought, normalised; None if there is none.

    Priority: last \\boxed{...}; the number right after the last "Final answer:" / "The answer
    is" / "Answer:" marker; the number after the last "####"; the last number in the text (only
    with ``last_number``: without it, a text that never states an answer has none).
    """
    if not text:
        return None
    text = _clean_latex(text)

    for content in reversed(_boxed_contents(text)):
        ans = _from_content(content)
        if ans is not None:
            return ans

    # Each marker's number must come before the next marker, otherwise an empty last marker
    # ("Answer: see above") would steal a number from an earlier sentence.
    markers = list(_MARKER_RE.finditer(text))
    for k in range(len(markers) - 1, -1, -1):
        end = markers[k + 1].start() if k + 1 < len(markers) else len(text)
        ans = _after_marker(text[markers[k].end() : end])
        if ans is not None:
            return ans

    hashes = list(_HASHES_RE.finditer(text))
    if hashes:
        nums = _numbers(text[hashes[-1].end() :], fractions=True)
        if nums:
            return nums[0]

    if not last_number:
        return None
    nums = _numbers(text, fractions=False)
    return nums[-1] if nums else None


def _to_fraction(s: str | None) -> Fraction | None:
    """Exact value of a number string ("$1,234.50", "50%", "3/4", "-2"); None if not a number."""
    if s is None:
        return None
    s = str(s).strip()
    for junk in ("\\$", "\\%", "$", "%"):
        s = s.replace(junk, "")
    s = s.replace("\u2212", "-").strip()
    if any(_SEPARATOR_RE.search(part) and not _GROUPED_RE.fullmatch(part.strip())
           for part in s.split("/")):
        return None
    for junk in (",", " ", "\u00a0", "\u2009"):
        s = s.replace(junk, "")
    s = s.rstrip(".")  # "16." ends a sentence, it is not a decimal point
    if not s:
        return None
    exp = _EXPONENT_RE.search(s)
    if exp and abs(int(exp.group(1))) > 300:
        # Fraction("1e99999999") would build a gigantic int; no real answer looks like that.
        return None
    try:
        if "/" in s:
            num, _, den = s.partition("/")
            value = Fraction(num) / Fraction(den)
        else:
            value = Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
    return value


def _format(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    # Six decimal places, but at least six significant digits for small values, so 1e-7 does
    # not collapse to "0". Decimal avoids binary-float artefacts like 0.30000000000000004.
    # Digit-count estimate of floor(log10|value|) (off by at most one, which only shifts the
    # precision slightly) instead of math.log10, which overflows on huge fractions.
    exponent = len(str(abs(value.numerator))) - len(str(value.denominator))
    places = max(6, 5 - exponent)
    with localcontext() as ctx:
        ctx.prec = places + max(exponent, 0) + 10
        dec = Decimal(value.numerator) / Decimal(value.denominator)
        dec = dec.quantize(Decimal(1).scaleb(-places))
    text = format(dec, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def normalize_number(s: str) -> str | None:
    """Canonical string of a number so "16", "16.0", "$16", "16.00" all read "16"; None if not one.

    Strips "$", "," (thousands), "%" and spaces; accepts simple fractions "a/b"; integers print
    without ".0", other values with up to 6 decimals, trailing zeros trimmed.
    """
    value = _to_fraction(s)
    return None if value is None else _format(value)


def gold_from_gsm8k(answer_field: str) -> str:
    """The normalised gold number after the last "####" (or the whole field if it has none).

    Raises LatentLocalError when there is no number; dataset loaders add the file and line.
    """
    text = str(answer_field)
    idx = text.rfind("####")
    tail = text[idx + 4 :] if idx >= 0 else text
    gold = normalize_number(tail)
    if gold is None and _BAD_COMMA_RE.search(tail):
        raise LatentLocalError(
            f"gold answer {tail.strip()[:60]!r} has a comma that is not a thousands separator; "
            "write the number without it (15) or with a decimal point (1.5)"
        )
    if gold is None:
        nums = _numbers(_clean_latex(tail), fractions=True)
        gold = nums[0] if nums else None
    if gold is None:
        raise LatentLocalError(
            f"gold answer {tail.strip()[:60]!r} has no number; the answer field must end with "
            "'#### <number>' or be a bare number"
        )
    return gold


def is_correct(pred: str | None, gold: str) -> bool:
    """Numeric equality after normalisation, with ~1e-6 relative tolerance for floats."""
    p, g = _to_fraction(pred), _to_fraction(gold)
    if p is None or g is None:
        return False
    if p == g or _format(p) == _format(g):
        return True
    # Exact Fraction arithmetic: float() would overflow on absurdly large model outputs.
    return abs(p - g) <= Fraction(_REL_TOL) * max(abs(p), abs(g)) + Fraction(_ABS_TOL)


def majority_vote(answers: list[str | None], scores: list[float] | None = None) -> str | None:
    """Most common normalised answer (None and non-numbers ignored).

    Ties go to the answer with the highest single score among its votes when scores are given,
    then to the answer that appeared first.
    """
    if scores is not None and len(scores) != len(answers):
        raise ValueError(f"majority_vote: {len(answers)} answers but {len(scores)} scores")
    counts: Counter[str] = Counter()
    first: dict[str, int] = {}
    best: dict[str, float] = {}
    for i, raw in enumerate(answers):
        ans = normalize_number(raw) if raw is not None else None
        if ans is None:
            continue
        counts[ans] += 1
        first.setdefault(ans, i)
        if scores is not None:
            sc = float(scores[i])
            if not math.isnan(sc):  # a NaN score must not win (or poison) a tie-break
                best[ans] = max(best.get(ans, -math.inf), sc)
    if not counts:
        return None
    top = max(counts.values())
    tied = [a for a in counts if counts[a] == top]
    return min(tied, key=lambda a: (-best.get(a, -math.inf), first[a]))
