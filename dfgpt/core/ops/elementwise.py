"""Element-wise ops: the residual addition and GELU (tanh or erf)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import Mask, Op, Reads

__all__ = ['GELU_C', 'Add', 'Gelu', 'gelu']


GELU_C = float(np.sqrt(2.0 / np.pi))


@dataclass(frozen=True)
class Add(Op):
    """out[t][c] = a[t][c] + b[t][c]: the residual stream."""

    kind: ClassVar[str] = "add"
    row_reads: ClassVar[tuple[Reads, ...]] = ("row", "row")

    def forward(self, ctx: Any, rows: np.ndarray) -> None:
        a, b = (ctx.values[n] for n in self.ins)
        ctx.values[self.out][rows] = a[rows] + b[rows]

    def cells_read(self, k: int, out_mask: Mask, ctx: Any) -> Mask | None:
        return out_mask.copy()

    def cells_written(self, masks: list[Mask | None], ctx: Any) -> Mask:
        out = np.zeros(ctx.shape(self.out), bool)
        for m in masks:
            if m is not None:
                out |= m
        return out


@dataclass(frozen=True)
class Gelu(Op):
    """gelu[t][j] = ½ x (1 + tanh(√(2/π)(x + 0.044715 x³))), or ½ x (1 + erf(x/√2))."""

    approx: str = "tanh"
    kind: ClassVar[str] = "gelu"
    row_reads: ClassVar[tuple[Reads, ...]] = ("row",)

    def forward(self, ctx: Any, rows: np.ndarray) -> None:
        x = ctx.values[self.ins[0]][rows]
        ctx.values[self.out][rows] = gelu(x, self.approx)

    def cells_read(self, k: int, out_mask: Mask, ctx: Any) -> Mask | None:
        return out_mask.copy()

    def cells_written(self, masks: list[Mask | None], ctx: Any) -> Mask:
        m = masks[0]
        return m.copy() if m is not None else np.zeros(ctx.shape(self.out), bool)

    def params(self) -> dict[str, Any]:
        return {"approx": self.approx}


def gelu(x: np.ndarray, approx: str) -> np.ndarray:
    """GELU, elementwise (shape kept)."""
    if approx == "tanh":
        return 0.5 * x * (1.0 + np.tanh(GELU_C * (x + 0.044715 * (x * x * x))))
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))
