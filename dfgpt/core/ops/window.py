"""Grouped-query heads and the sliding window: which key/value head a query head reads, and which keys it sees.

A query head h of H reads key/value head h // (H / KV) (`groups` = H / KV query heads share one); a
sliding window of W tokens lets query t see keys t - W < s ≤ t (Mistral's, as transformers masks it).
Both are structure, like the causal mask: a key outside the window reads nothing and is read by nothing.

>>> seen(4, 2).astype(int).tolist()
[[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
>>> fold(np.array([[True], [False], [False], [False]]), 2).ravel().tolist()
[True, False]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .causal import causal
from .masks import Mask

__all__ = ["expand", "fold", "fold_sum", "hidden", "seen", "spread"]


def seen(T: int, window: int) -> np.ndarray:
    """[T, T]: seen[t, s] = s ≤ t within the window (0: no window, the causal mask alone)."""
    m = causal(T)
    if window:
        m &= (np.arange(T)[:, None] - np.arange(T)[None, :]) < window
    return m


def hidden(sel: Any, width: int, window: int) -> np.ndarray:
    """[R, width]: the keys rows `sel` do not see (past the query, or before its window)."""
    rows = np.arange(sel.start, sel.stop) if isinstance(sel, slice) else np.asarray(sel)
    d = rows[:, None] - np.arange(width)[None, :]  # t - s
    return (d < 0) | (d >= window) if window else d < 0


def expand(a: np.ndarray, groups: int, axis: int = 0) -> np.ndarray:
    """[KV, ...] -> [H, ...]: each key/value head repeated for the query heads that read it."""
    return a if groups == 1 else np.repeat(a, groups, axis=axis)


def fold(m: Mask, groups: int) -> Mask:
    """[H, ...] -> [KV, ...]: a key/value head's cells are read if any of its query heads reads them."""
    return m if groups == 1 else m.reshape(m.shape[0] // groups, groups, *m.shape[1:]).any(axis=1)


def fold_sum(g: np.ndarray, groups: int, axis: int) -> np.ndarray:
    """[..., H, ...] -> [..., KV, ...]: a shared head's gradient is the sum of its query heads'."""
    if groups == 1:
        return g
    shape = (*g.shape[:axis], g.shape[axis] // groups, groups, *g.shape[axis + 1:])
    return g.reshape(shape).sum(axis=axis + 1)


def spread(m: Mask, window: int, axis: int, forward: bool) -> Mask:
    """Along a position axis: forward, out[t] = any m[s] for t - W < s ≤ t (what a row's window reads);
    backward, out[s] = any m[t] for s ≤ t < s + W (the rows whose window holds s). W = 0: no limit."""
    T = m.shape[axis]
    a = np.moveaxis(m, axis, 0)
    if not forward:
        a = a[::-1]
    c = np.cumsum(a, axis=0, dtype=np.int64)
    if window and window < T:
        c[window:] = c[window:] - c[:-window].copy()
    out = c > 0
    if not forward:
        out = out[::-1]
    return np.moveaxis(out, 0, axis)
