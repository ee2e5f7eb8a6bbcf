"""Keeping Python's cyclic garbage collector from pausing a generation.

A full (oldest-generation) collection walks every object the app holds: its widgets, styles,
caches and the libraries, about 220,000 objects after a model loads. It ran every few runs, in the
UI thread, for 120-185 ms (a Soft Thinking run of 256 tokens on the bundled model, 2 cores, lasts
3-7 s), and it holds the GIL all that time, so the worker decoding the model stops between two
steps until it ends: the CLI, whose heap is small, pays almost nothing for it.

``settle()`` runs when a job has ended: everything is collected (nothing stays frozen, so a cycle
that became garbage since the last job is freed), then what is left is frozen
(``gc.freeze``: moved to a generation that collections do not walk). A collection during the next
job walks only what that job made. The younger generations are collected as before.
"""

from __future__ import annotations

import gc


def settle() -> int:
    """Collect everything, then freeze what is left; returns the number of objects frozen."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
