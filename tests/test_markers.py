"""Marker spotting across token boundaries and the answer-line stop rule."""

from __future__ import annotations

from latentlocal.markers import AnswerLineWatch, MarkerWatch


def feed(watch, pieces):
    """Index of the piece at which the watch fired, or None."""
    for i, p in enumerate(pieces):
        if watch.push(p):
            return i
    return None


def test_marker_split_across_tokens_and_case():
    assert feed(MarkerWatch("Final answer:"), ["The fin", "AL ans", "wer", ":", " 3"]) == 3
    assert feed(MarkerWatch("Final answer:"), ["no marker here", "\n"]) is None


def test_answer_line_fires_when_the_number_line_ends():
    pieces = ["So 2+3=5.\n", "Final", " answer:", " 5", "\n", "extra"]
    assert feed(AnswerLineWatch("Final answer:"), pieces) == 4


def test_marker_line_without_a_number_waits_for_the_number():
    # "4. **Final answer:**" must not stop before the number: the list item's 4 is not the answer
    pieces = ["4. **Final answer:**", "\n", "\n", "The answer is ", "5", "\n"]
    assert feed(AnswerLineWatch("Final answer:"), pieces) == 5


def test_gives_up_after_lines_without_digits():
    pieces = ["Final answer:", " see above\n", "really\n", "done\n", "more\n"]
    assert feed(AnswerLineWatch("Final answer:", give_up_lines=3), pieces) == 3


def test_nothing_fires_before_the_marker():
    assert feed(AnswerLineWatch("Final answer:"), ["1\n", "2\n", "3\n"]) is None
