"""What every op is: a named output computed from named inputs, with exact cell index maps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

__all__ = ['Mask', 'Op', 'Reads']


# numpy bool arrays; numpy's stubs type `.any(axis=...)` as `bool | ndarray`, so this stays loose.
Mask = Any
Reads = str  # "row", "prefix" or "whole"


def _mm(a: np.ndarray, b: np.ndarray, exact: bool) -> np.ndarray:
    """[..., R, K] @ [..., K, N] -> [..., R, N], row-canonical when exact."""
    if exact:
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

    def forward(self, ctx: Any, rows: np.ndarray) -> None:
        raise NotImplementedError

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
