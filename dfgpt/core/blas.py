"""One BLAS thread for the engine's many small matmuls.

>>> import numpy as np
>>> with one_blas_thread():
...     float((np.eye(2) @ np.eye(2)).sum())
2.0
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from threadpoolctl import threadpool_limits

__all__ = ["one_blas_thread"]


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run BLAS on one thread: small matmuls are ~20x faster than with threads on a busy
    machine, and the summation order can no longer depend on the thread count."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield
