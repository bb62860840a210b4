"""The causal mask: which keys each query position sees, as cached masks and in-place fills.

>>> causal(3).astype(int).tolist()
[[1, 0, 0], [1, 1, 0], [1, 1, 1]]
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .masks import Mask

__all__ = ["_later", "_later_of", "_mask_later", "_read_row_keys", "_visible", "causal"]


def causal(T: int) -> np.ndarray:
    """[T, T]: causal[t, s] = s <= t (a fresh array)."""
    return np.tril(np.ones((T, T), bool))


@functools.lru_cache(maxsize=64)
def _later(width: int) -> np.ndarray:
    """[width, width] read-only: later[t, s] = s > t, the keys past each query (the causal mask)."""
    m = np.arange(width)[None, :] > np.arange(width)[:, None]
    m.flags.writeable = False
    return m


@functools.lru_cache(maxsize=64)
def _visible(width: int) -> np.ndarray:
    """[width, width] read-only: visible[t, s] = s <= t."""
    m = ~_later(width)
    m.flags.writeable = False
    return m


def _later_of(sel: Any, width: int) -> Any:
    """Where `_mask_later` writes for rows `sel` over `width` keys: the first key past a single
    row's position (an int: a slice is cheaper than a mask), else a [R, width] bool mask."""
    if isinstance(sel, slice) and sel.stop - sel.start == 1:
        return sel.stop
    return _later(width)[sel]


def _mask_later(a: np.ndarray, later: Any, value: float) -> None:
    """a[h][j][s] = value for every key s past row j's position ([H, R, width]; `later` from `_later_of`)."""
    if isinstance(later, int):
        a[:, 0, later:] = value
    else:
        np.copyto(a, value, where=later)  # [R, width] broadcast over heads: a third of a boolean setitem's cost


def _read_row_keys(out_mask: Mask, T: int) -> Mask:
    """[H, T] rows -> [H, T, T] the unmasked keys of each selected row."""
    return out_mask[:, :, None] & causal(T)
