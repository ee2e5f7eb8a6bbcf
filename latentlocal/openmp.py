"""How long llama.cpp's CPU threads spin at a barrier before they sleep.

llama.cpp's CPU threads are an OpenMP team in GCC builds, and GNU OpenMP lets a thread that
reaches a barrier spin 300,000 times before it sleeps. ggml meets a barrier at every graph node,
so whenever anything else takes a core from one ggml thread (another program, the terminal UI's
event loop, the server's), the others burn their cores spinning for it, the core that thread
needs included. Measured on 2 cores, SmolLM2, 2 threads, ``latentlocal run`` soft-thinking, 128
tokens, 3 runs each (issue 14): alone, 64-83 tok/s with the default, 79-82 with 10,000 spins,
56-66 with 1,000, 29-32 with none; beside 2 busy processes, 0.6-1.8 tok/s with the default,
3.9-30 with 10,000, 20-25 with 1,000. The terminal UI's Run tab decoded at 0.29-0.37x the CLI's
speed with the default, 0.9-1.0x with 10,000 (bench/bench_tui.py). 10,000 costs nothing alone
and is never worse than the default under load, so every latentlocal process uses it unless the
user chose otherwise.
"""

from __future__ import annotations

import os
import sys

SPINS = 10_000


def spin_less(spins: int = SPINS) -> bool:
    """Set ``GOMP_SPINCOUNT`` for this process unless the user set it (or ``OMP_WAIT_POLICY``).

    libgomp reads its environment once, when it loads with llama.cpp, so this must run before
    ``llama_cpp`` is imported (``latentlocal.llama_libs`` calls it first); returns whether the
    setting was made.
    """
    if "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ or "llama_cpp" in sys.modules:
        return False
    os.environ["GOMP_SPINCOUNT"] = str(spins)
    return True
