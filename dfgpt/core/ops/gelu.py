"""GELU, tanh or erf form: gelu[t][j] = ½ x (1 + tanh(√(2/π)(x + 0.044715 x³))), or ½ x (1 + erf(x/√2))."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import product
from typing import Any, ClassVar

import numpy as np
import sympy

from . import folding
from .base import Kernel, Mask, Op, Reads
from .context import Key, OpContext, SheetView
from .grads import Arrays, acc
from .kind import OpKind
from .registry import register
from .spreadsheet import Formula, Ref, Shape, Span, num_text

__all__ = ["GELU_C", "Gelu", "gelu"]


GELU_C = float(np.sqrt(2.0 / np.pi))


@register
@dataclass(frozen=True)
class Gelu(Op):
    """gelu[t][j] = ½ x (1 + tanh(√(2/π)(x + 0.044715 x³))), or ½ x (1 + erf(x/√2)).

    >>> Gelu("h[0].mlp.gelu", ("h[0].mlp.c_fc",)).sym_compose([0.0], keep_shift=False)
    0.0
    """

    approx: str = "tanh"
    kind: ClassVar[OpKind] = OpKind.GELU
    row_reads: ClassVar[tuple[Reads, ...]] = ("row",)
    resident: ClassVar[bool] = False

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        x, out, approx = self.ins[0], self.out, self.approx
        in_place = isinstance(sel, slice) and approx == "tanh"

        def run(vals: dict[str, np.ndarray]) -> None:
            if in_place:  # the output rows are a view: computed straight into them
                gelu(vals[x][sel], approx, out=vals[out][sel])
            else:
                vals[out][sel] = gelu(vals[x][sel], approx)

        return run

    def cells_read(self, k: int, out_mask: Mask, ctx: OpContext) -> Mask | None:
        return out_mask.copy()

    def cells_written(self, masks: list[Mask | None], ctx: OpContext) -> Mask:
        m = masks[0]
        return m.copy() if m is not None else np.zeros(ctx.shape(self.out), bool)

    def params(self) -> dict[str, Any]:
        return {"approx": self.approx}

    def batched(self, V: Arrays) -> np.ndarray:
        return gelu(V[self.ins[0]], self.approx)  # [B, T, 4C]

    def vjp(self, V: Arrays, g: np.ndarray, G: Arrays) -> None:
        x = V[self.ins[0]]
        if self.approx == "tanh":
            th = np.tanh(GELU_C * (x + 0.044715 * x * x * x))
            d = 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * GELU_C * (1.0 + 3 * 0.044715 * x * x)
        else:
            from scipy.special import erf

            d = 0.5 * (1.0 + erf(x / np.sqrt(2.0))) + x * np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)
        acc(G, V, self.ins[0], g * d)

    def text(self, view: SheetView, idx: tuple[int, ...]) -> str:
        x = view.name(self.ins[0], idx)
        if self.approx == "tanh":
            return f"½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) where x = {x}"
        return f"½·x·(1 + erf(x/√2)) where x = {x}"

    def sym_reads(self, view: SheetView, idx: tuple[int, ...], keep_shift: bool) -> list[Key]:
        return [(self.ins[0], idx)]

    def sym_compose(self, vals: list[Any], keep_shift: bool) -> Any:
        x = vals[0]
        if self.approx == "tanh":
            c = math.sqrt(2 / math.pi) if folding.is_num(x) else sympy.sqrt(2 / sympy.pi)
            return 0.5 * x * (1.0 + folding.tanh(c * (x + 0.044715 * x**3)))
        r2 = math.sqrt(2) if folding.is_num(x) else sympy.sqrt(2)
        return x * (1 + folding.erf(x / r2)) / 2

    def sheet_formulas(self, shape: Shape, R: Ref, S: Span) -> Iterator[Formula]:
        (x,) = self.ins
        for idx in product(*map(range, shape(self.out))):
            r = R(x, idx)
            if self.approx == "tanh":
                yield idx, f"0.5*{r}*(1+TANH({num_text(GELU_C)}*({r}+0.044715*{r}^3)))"
            else:
                yield idx, f"0.5*{r}*(1+ERF({r}/SQRT(2)))"

    def label(self) -> str:
        return self.kind.value


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
