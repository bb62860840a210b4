"""Row selections: the rows a kernel computes, as a slice when contiguous (views) or as indices."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["_last_row", "_n_rows", "_sel"]


def _sel(rows: np.ndarray) -> Any:
    """Sorted row indices as a slice when they are contiguous (views, not copies: a one-row call
    reads and writes in place), else as they are. The values are the same either way.

    >>> _sel(np.array([2, 3, 4])), _sel(np.array([1, 3]))
    (slice(2, 5, None), array([1, 3]))
    """
    n = len(rows)
    r0 = int(rows[0])
    if n == 1 or int(rows[-1]) - r0 + 1 == n:
        return slice(r0, r0 + n)
    return rows


def _n_rows(sel: Any) -> int:
    return sel.stop - sel.start if isinstance(sel, slice) else len(sel)


def _last_row(sel: Any) -> int:
    return sel.stop - 1 if isinstance(sel, slice) else int(sel[-1])
