"""Spotting text markers in a token stream, where a marker may span several tokens."""

from __future__ import annotations


class MarkerWatch:
    """Feed streamed text; reports when ``marker`` (case-insensitive) has appeared."""

    def __init__(self, marker: str) -> None:
        self.marker = marker.lower()
        self._tail = ""
        self.found = False

    def push(self, text: str) -> bool:
        if self.found or not self.marker:
            return self.found
        window = (self._tail + text).lower()
        if self.marker in window:
            self.found = True
        else:
            self._tail = window[-(len(self.marker) - 1):] if len(self.marker) > 1 else ""
        return self.found


class AnswerLineWatch:
    """Reports when the answer line after ``marker`` is complete: the first line after the marker
    that holds a digit has ended with a newline.

    Generation stops there: everything the grader reads has been written, and small models
    otherwise ramble on until the token limit. A marker line without a number ("4. **Final
    answer:**") waits for the number on a later line; after ``give_up_lines`` complete lines
    without any digit it fires anyway ("Final answer: see above").
    """

    def __init__(self, marker: str, give_up_lines: int = 3) -> None:
        self._marker = MarkerWatch(marker)
        self._after = ""
        self._give_up = give_up_lines

    def push(self, text: str) -> bool:
        if not self._marker.found:
            if not self._marker.push(text):
                return False
            # keep only what follows the marker inside this piece
            low = text.lower()
            idx = low.rfind(self._marker.marker[-1])
            text = text[idx + 1:] if idx >= 0 else ""
        self._after += text
        lines = self._after.split("\n")
        complete = [ln for ln in lines[:-1] if ln.strip()]
        if any(any(ch.isdigit() for ch in ln) for ln in complete):
            return True
        return len(complete) >= self._give_up
