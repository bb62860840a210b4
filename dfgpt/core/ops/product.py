"""The gate: out[t][j] = a[t][j] · b[t][j] (SwiGLU's and GeGLU's act(gate) · up)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import product
from typing import Any, ClassVar

import numpy as np

from . import folding
from .base import Kernel, Mask, Op, Reads
from .context import Key, OpContext, SheetView
from .grads import Arrays, acc
from .kind import OpKind
from .registry import register
from .spreadsheet import Formula, Ref, Shape, Span

__all__ = ["Product"]


@register
@dataclass(frozen=True)
class Product(Op):
    """out[t][j] = a[t][j] · b[t][j].

    >>> Product("h", ("act", "up")).sym_compose([2.0, 3.0], keep_shift=False)
    6.0
    """

    kind: ClassVar[OpKind] = OpKind.PRODUCT
    row_reads: ClassVar[tuple[Reads, ...]] = ("row", "row")
    resident: ClassVar[bool] = False
    paired: ClassVar[bool] = True

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        (a, b), out = self.ins, self.out

        def run(vals: dict[str, np.ndarray]) -> None:
            vals[out][sel] = vals[a][sel] * vals[b][sel]  # [R, n]

        return run

    def cells_read(self, k: int, out_mask: Mask, ctx: OpContext) -> Mask | None:
        return out_mask.copy()

    def cells_written(self, masks: list[Mask | None], ctx: OpContext) -> Mask:
        out = np.zeros(ctx.shape(self.out), bool)
        for m in masks:
            if m is not None:
                out |= m
        return out

    def batched(self, V: Arrays) -> np.ndarray:
        return V[self.ins[0]] * V[self.ins[1]]  # [B, T, n]

    def vjp(self, V: Arrays, g: np.ndarray, G: Arrays) -> None:
        acc(G, V, self.ins[0], g * V[self.ins[1]])
        acc(G, V, self.ins[1], g * V[self.ins[0]])

    def text(self, view: SheetView, idx: tuple[int, ...]) -> str:
        n, ins = view.name, self.ins
        return f"{n(ins[0], idx)} · {n(ins[1], idx)}"

    def sym_reads(self, view: SheetView, idx: tuple[int, ...], keep_shift: bool) -> list[Key]:
        return [(self.ins[0], idx), (self.ins[1], idx)]

    def sym_compose(self, vals: list[Any], keep_shift: bool) -> Any:
        return folding.mul(vals[0], vals[1])

    def sheet_formulas(self, shape: Shape, R: Ref, S: Span) -> Iterator[Formula]:
        a, b = self.ins
        for idx in product(*map(range, shape(self.out))):
            yield idx, f"{R(a, idx)}*{R(b, idx)}"

    def label(self) -> str:
        return self.kind.value
