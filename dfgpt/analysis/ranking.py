"""The top k cells of many tensors by |score|, in one total order, without an array of every cell.

`top_cells` ranks score arrays it is given; `Best` is the same ranking fed one tensor at a time,
so a caller can make each tensor's scores, offer them, and keep only what the ranking kept of
that tensor (influence keeps the gradients of those cells and writes the scores over the rest).

>>> b = Best(2)
>>> b.offer(0, np.array([0.5, 2.0])).tolist(), b.offer(1, np.array([2.0, 1.0, 3.0])).tolist()
([1, 0], [2, 0])
>>> b.cells(["a", "b"])
[('b', 2), ('a', 1)]
"""

from __future__ import annotations

import numpy as np

from ..core import arena

__all__ = ["Best", "offer_order", "top_cells", "top_indices"]


class Best:
    """The running top k of tensors offered smallest first: each keeps its own best k of the cells at or
    above a bound (the k-th best kept so far: k real cells are at least that large), so the big tensors,
    offered last, leave a handful of candidates each."""

    def __init__(self, k: int) -> None:
        self.k, self.tau = k, -1.0
        self._vals: list[np.ndarray] = []
        self._tens: list[np.ndarray] = []
        self._idxs: list[np.ndarray] = []

    def offer(self, rank: int, a: np.ndarray) -> np.ndarray:
        """Offer tensor `rank`'s |scores| a [n] (read, not kept); the flat indices it keeps [m], m <= k."""
        at = np.flatnonzero(~(a < self.tau))  # >= tau, and nan (nan < tau is False)
        if not at.size:
            return at
        v = _nan_high(a[at])
        keep = top_indices(v, self.k)
        self._vals.append(v[keep])
        self._tens.append(np.full(keep.size, rank))
        self._idxs.append(at[keep])
        best = np.concatenate(self._vals)
        if best.size >= self.k:
            self.tau = float(best[top_indices(best, self.k)[-1]])
        return at[keep]

    def cells(self, names: list[str]) -> list[tuple[str, int]]:
        """The top k as [(names[rank], flat index)]: |score| descending (nan first), then rank, then index."""
        if not self._vals:
            return []
        v, t, i = np.concatenate(self._vals), np.concatenate(self._tens), np.concatenate(self._idxs)
        order = np.lexsort((i, t, -v))[: self.k]
        return [(names[int(t[o])], int(i[o])) for o in order]


def offer_order(sizes: list[int]) -> list[int]:
    """The ranks in the order `Best` wants them: smallest tensor first, then by rank.

    >>> offer_order([5, 2, 5, 1])
    [3, 1, 0, 2]
    """
    return sorted(range(len(sizes)), key=lambda r: (sizes[r], r))


def top_cells(flat: dict[str, np.ndarray], k: int) -> list[tuple[str, int]]:
    """The k largest |score| over every tensor: [(tensor, flat index into its cone cells)].

    One total order: |score| descending (nan, an undefined target, first), then graph order,
    then index. A GPT-2 cone has ~10^8 cells, so no array of all of them is built: tensors are
    offered to `Best` smallest first, and |score| goes through one scratch buffer.

    >>> top_cells({"a": np.array([0.5, -2.0]), "b": np.array([2.0, 1.0])}, 3)  # a tie: graph order
    [('a', 1), ('b', 0), ('b', 1)]
    """
    names = [n for n in flat if flat[n].size]
    if not names or k <= 0:
        return []
    scratch: dict[np.dtype, np.ndarray] = {}
    longest = max(flat[n].size for n in names)
    best = Best(k)
    for r in offer_order([flat[n].size for n in names]):
        f = flat[names[r]].reshape(-1)
        buf = scratch.get(f.dtype)
        if buf is None:
            buf = scratch[f.dtype] = arena.block(longest, f.dtype)
        best.offer(r, np.abs(f, out=buf[: f.size]))  # [n] -> [n], no new array per tensor
    return best.cells(names)


def _nan_high(a: np.ndarray) -> np.ndarray:
    """nan (an undefined target) ranks above every number."""
    return np.where(np.isnan(a), np.inf, a) if np.isnan(a).any() else a


def top_indices(v: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, largest first, equal values by index: one total order.

    argpartition alone leaves the order of equal values (and which of them make the cut) to
    the CPU's SIMD kernel, so the cut is taken at the k-th value and ties are settled by index.

    >>> top_indices(np.array([1.0, 3.0, 3.0, 2.0, 3.0]), 2).tolist()
    [1, 2]
    """
    k = min(k, v.size)
    if k <= 0:
        return np.zeros(0, np.intp)
    kth = v[np.argpartition(-v, k - 1)[k - 1]] if k < v.size else v.min()
    idx = np.flatnonzero(v >= kth)  # every value at the cut: which of them win is settled below
    order = np.lexsort((idx, -v[idx]))  # [n] -> [n]: by value descending, then by index
    return idx[order[:k]]
