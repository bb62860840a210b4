"""One BLAS thread for the engine's many small matmuls; which CPU and BLAS kernel ran them.

Floating-point results (and so trained weights) are reproducible bit for bit on one
machine; another CPU kernel (AVX-512 vs AVX2) sums in another order, so `machine()` names
the kernel next to any result that is claimed bit for bit.

>>> import numpy as np
>>> with one_blas_thread():
...     float((np.eye(2) @ np.eye(2)).sum())
2.0
"""

from __future__ import annotations

import contextlib
import functools
import platform
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from threadpoolctl import ThreadpoolController, threadpool_info

__all__ = ["machine", "one_blas_thread"]


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run BLAS on one thread: small matmuls are ~20x faster than with threads on a busy
    machine, and the summation order can no longer depend on the thread count."""
    with _controller().limit(limits=1, user_api="blas"):
        yield


@functools.cache
def _controller() -> ThreadpoolController:
    """Found once: finding the loaded BLAS libraries reads /proc and costs ~1 ms a call, more than
    a whole sort forward."""
    np.dot(np.ones(2), np.ones(2))  # numpy's BLAS is loaded by now
    return ThreadpoolController()


def machine() -> str:
    """The CPU, numpy and BLAS kernel that compute here, in one line.

    >>> "numpy" in machine() and "BLAS" in machine()
    True
    """
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    np.dot(np.ones(2), np.ones(2))  # loads the BLAS library, so threadpoolctl can see it
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    kernel = ", ".join(
        f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture') or 'generic'} kernel)" for i in blas
    ) or "unknown"
    return f"{cpu}; numpy {np.__version__}; BLAS {kernel}"
