"""What every op is: a named output computed from named inputs, with exact cell index maps."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

__all__ = ['Kernel', 'Mask', 'Op', 'Reads']


# numpy bool arrays; numpy's stubs type `.any(axis=...)` as `bool | ndarray`, so this stays loose.
Mask = Any
Reads = str  # "row", "prefix" or "whole"
# An op's computation of some rows, worked out once: called with the values ({tensor: array}),
# it writes those rows of the op's output in place.
Kernel = Callable[[dict[str, np.ndarray]], None]


def _sel(rows: np.ndarray) -> Any:
    """Sorted row indices as a slice when they are contiguous (views, not copies: a one-row call
    reads and writes in place), else as they are. The values are the same either way."""
    n = len(rows)
    r0 = int(rows[0])
    if n == 1 or int(rows[-1]) - r0 + 1 == n:
        return slice(r0, r0 + n)
    return rows


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


def _n_rows(sel: Any) -> int:
    return sel.stop - sel.start if isinstance(sel, slice) else len(sel)


def _last_row(sel: Any) -> int:
    return sel.stop - 1 if isinstance(sel, slice) else int(sel[-1])


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


def _mm(a: np.ndarray, b: np.ndarray, exact: bool) -> np.ndarray:
    """[..., R, K] @ [..., K, N] -> [..., R, N], row-canonical when exact."""
    if exact and a.shape[-2] != 1:
        # Each row its own [1, K] @ [K, N] product; a single row already is one (numpy's matmul
        # picks its BLAS call per [m, K] @ [K, N] core, the same core either way).
        return np.matmul(a[..., :, None, :], b[..., None, :, :])[..., 0, :]
    return np.matmul(a, b)


@dataclass(frozen=True)
class Op:
    """One named output tensor computed from named input tensors."""

    out: str
    ins: tuple[str, ...]
    kind: ClassVar[str] = "op"
    masked: ClassVar[float] = 0.0  # the value of a cell the causal mask leaves unread (a key past its query)
    row_reads: ClassVar[tuple[Reads, ...]] = ()

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        """The computation of rows `sel` (a slice or sorted indices) at capacity `cap`, with
        everything that depends only on them worked out now: a clean read runs a cached list
        of these, so a forward of a small model pays no per-op set-up. A kernel leaves floating-point
        warnings to its caller (a pin may make inf or nan, shown as such): `Engine.ensure` and
        `forward` silence them once around many kernels."""
        raise NotImplementedError

    def forward(self, ctx: Any, rows: np.ndarray) -> None:
        """Compute the given rows of the output in `ctx.values`, in place. The same kernel a clean
        read runs, so every road to a row computes it with the same operations, bit for bit."""
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            self.kernel(_sel(rows), ctx.cap, ctx.exact)(ctx.values)

    def cells_read(self, k: int, out_mask: Mask, ctx: Any) -> Mask | None:
        """Cells of input `k` read by the cells of `out_mask` (None: none)."""
        raise NotImplementedError

    def cells_written(self, masks: list[Mask | None], ctx: Any) -> Mask:
        """Cells of the output that read any cell of the input masks."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return {}


def _rowany(m: Mask) -> np.ndarray:
    """[T, ...] -> [T]: does any cell of each row appear?"""
    return m.reshape(m.shape[0], -1).any(axis=1)
