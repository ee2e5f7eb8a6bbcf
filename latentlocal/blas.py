"""Keep NumPy/SciPy's OpenBLAS on one thread while llama.cpp owns the cores.

After any BLAS call (even a 30-element ``np.dot``) OpenBLAS leaves its worker threads
spin-waiting for a while. Between two llama_decode calls that is enough to steal the cores from
ggml's threads: measured on 2 cores, a Soft Thinking step went from 7.5 ms to 26 ms with one
``np.dot`` per step. This is what threadpoolctl does for OpenBLAS, kept dependency-free;
anywhere it cannot find OpenBLAS it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable

# (get, set) symbol pairs of the OpenBLAS builds that NumPy/SciPy wheels ship.
_OPENBLAS_SYMBOLS = (
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),
)

_Handle = tuple[Callable[[], int], Callable[[int], object]]


def _find_openblas() -> list[_Handle]:
    found: list[_Handle] = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            paths = {ln.split()[-1] for ln in fh if "openblas" in ln.lower() and "/" in ln}
        mode = getattr(os, "RTLD_NOLOAD", 0) | getattr(os, "RTLD_LOCAL", 0)
        for path in sorted(paths):
            try:
                lib = ctypes.CDLL(path, mode=mode)
            except OSError:
                continue
            for get_name, set_name in _OPENBLAS_SYMBOLS:
                if hasattr(lib, get_name) and hasattr(lib, set_name):
                    getter, setter = getattr(lib, get_name), getattr(lib, set_name)
                    getter.restype = ctypes.c_int
                    setter.argtypes = [ctypes.c_int]
                    found.append((getter, setter))
                    break
    except (OSError, ValueError, AttributeError):
        pass  # best effort (no /proc on macOS): run with the default threads
    return found


class SingleThreadBlas:
    """Re-entrant context manager pinning every loaded OpenBLAS to one thread, then restoring it.

    The lock guards only the counter, so concurrent users overlap; the last one out restores the
    thread counts.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        self._saved: list[tuple[Callable[[int], object], int]] = []
        self._handles: list[_Handle] | None = None

    @property
    def handles(self) -> list[_Handle]:
        if self._handles is None:
            self._handles = _find_openblas()
        return self._handles

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._saved = []
                for getter, setter in self.handles:
                    n = int(getter())
                    if n > 1:
                        setter(1)
                        self._saved.append((setter, n))
            self._depth += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                for setter, n in self._saved:
                    setter(n)
                self._saved = []


single_thread_blas = SingleThreadBlas()
