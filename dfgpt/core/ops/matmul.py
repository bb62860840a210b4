"""The kernels' matrix product: row-canonical in exact mode, so a row's bits do not depend on its batch."""

from __future__ import annotations

import numpy as np

__all__ = ["_mm"]


def _mm(a: np.ndarray, b: np.ndarray, exact: bool) -> np.ndarray:
    """[..., R, K] @ [..., K, N] -> [..., R, N], row-canonical when exact.

    >>> _mm(np.ones((2, 3)), np.ones((3, 1)), True).ravel().tolist()
    [3.0, 3.0]
    """
    if exact and a.shape[-2] != 1:
        # Each row its own [1, K] @ [K, N] product; a single row already is one (numpy's matmul
        # picks its BLAS call per [m, K] @ [K, N] core, the same core either way).
        return np.matmul(a[..., :, None, :], b[..., None, :, :])[..., 0, :]
    return np.matmul(a, b)
