"""Element-wise ops: the residual addition and GELU (tanh or erf)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import Kernel, Mask, Op, Reads

__all__ = ['GELU_C', 'Add', 'Gelu', 'gelu']


GELU_C = float(np.sqrt(2.0 / np.pi))


@dataclass(frozen=True)
class Add(Op):
    """out[t][c] = a[t][c] + b[t][c]: the residual stream."""

    kind: ClassVar[str] = "add"
    row_reads: ClassVar[tuple[Reads, ...]] = ("row", "row")

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        (a, b), out = self.ins, self.out
        if isinstance(sel, slice):

            def in_place(vals: dict[str, np.ndarray]) -> None:
                np.add(vals[a][sel], vals[b][sel], out=vals[out][sel])

            return in_place

        def run(vals: dict[str, np.ndarray]) -> None:
            vals[out][sel] = vals[a][sel] + vals[b][sel]

        return run

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

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        x, out, approx = self.ins[0], self.out, self.approx
        in_place = isinstance(sel, slice) and approx == "tanh"

        def run(vals: dict[str, np.ndarray]) -> None:
            if in_place:  # the output rows are a view: computed straight into them
                gelu(vals[x][sel], approx, out=vals[out][sel])
            else:
                vals[out][sel] = gelu(vals[x][sel], approx)

        return run

    def cells_read(self, k: int, out_mask: Mask, ctx: Any) -> Mask | None:
        return out_mask.copy()

    def cells_written(self, masks: list[Mask | None], ctx: Any) -> Mask:
        m = masks[0]
        return m.copy() if m is not None else np.zeros(ctx.shape(self.out), bool)

    def params(self) -> dict[str, Any]:
        return {"approx": self.approx}


def gelu(x: np.ndarray, approx: str, out: np.ndarray | None = None) -> np.ndarray:
    """GELU, elementwise (shape kept); `out`: an array of x's shape to write it into (tanh form)."""
    if approx == "tanh":
        x = np.asarray(x)
        if x.ndim == 0:
            return 0.5 * x * (1.0 + np.tanh(GELU_C * (x + 0.044715 * (x * x * x))))
        # 0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³))) in place in one temporary: the same operations
        # in the same order (each product and sum commutes exactly), so the same bits.
        t = x * x
        t *= x
        t *= 0.044715
        t += x
        t *= GELU_C
        np.tanh(t, out=t)
        t += 1.0
        y = np.multiply(0.5, x, out=out)
        y *= t
        return y
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))
