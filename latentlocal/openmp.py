"""How long llama.cpp's CPU threads spin at a barrier before they sleep, for processes that run
other work of their own beside decoding (the terminal UI's event loop, a server's).

llama.cpp's CPU threads are an OpenMP team in GCC builds, and GNU OpenMP lets a thread that
reaches a barrier spin 300,000 times before it sleeps. ggml meets a barrier at every graph node,
so whenever another thread takes a core from one ggml thread, the others burn their cores spinning
for it, the core that thread needs included. Measured on 2 cores, SmolLM2, 2 threads
(bench/bench_tui.py, issue 14): the Run tab decoded at 0.29-0.37x the CLI's tokens/s with the
default, 0.88-0.93x with 10,000 spins. A process that only decodes keeps the default: there it
was the fastest (the CLI: 56-71 tok/s, 55-59 with 10,000).
"""

from __future__ import annotations

import os
import sys

SHARED_CORE_SPINS = 10_000


def spin_less(spins: int = SHARED_CORE_SPINS) -> bool:
    """Set ``GOMP_SPINCOUNT`` for this process unless the user set it (or ``OMP_WAIT_POLICY``).

    libgomp reads its environment once, when it loads with llama.cpp, so this must run before
    ``llama_cpp`` is imported; returns whether the setting was made.
    """
    if "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ or "llama_cpp" in sys.modules:
        return False
    os.environ["GOMP_SPINCOUNT"] = str(spins)
    return True
