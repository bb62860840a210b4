"""SiLU (swish), the gate's activation in SwiGLU: silu[t][j] = x / (1 + e^(−x)) = x · σ(x)."""

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

__all__ = ["Silu", "silu"]


def silu(x: np.ndarray) -> np.ndarray:
    """x / (1 + e^(−x)), elementwise (a very negative x gives −0: e^(−x) overflows to inf)."""
    return x / (1.0 + np.exp(-x))


@register
@dataclass(frozen=True)
class Silu(Op):
    """silu[t][j] = x / (1 + e^(−x)).

    >>> Silu("act", ("gate",)).sym_compose([0.0], keep_shift=False)
    0.0
    """

    kind: ClassVar[OpKind] = OpKind.SILU
    row_reads: ClassVar[tuple[Reads, ...]] = ("row",)
    resident: ClassVar[bool] = False

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        x, out = self.ins[0], self.out

        def run(vals: dict[str, np.ndarray]) -> None:
            vals[out][sel] = silu(vals[x][sel])  # [R, n]

        return run

    def cells_read(self, k: int, out_mask: Mask, ctx: OpContext) -> Mask | None:
        return out_mask.copy()

    def cells_written(self, masks: list[Mask | None], ctx: OpContext) -> Mask:
        m = masks[0]
        return m.copy() if m is not None else np.zeros(ctx.shape(self.out), bool)

    def batched(self, V: Arrays) -> np.ndarray:
        return silu(V[self.ins[0]])  # [B, T, n]

    def vjp(self, V: Arrays, g: np.ndarray, G: Arrays) -> None:
        x = V[self.ins[0]]
        sig = 1.0 / (1.0 + np.exp(-x))
        acc(G, V, self.ins[0], g * sig * (1.0 + x * (1.0 - sig)))

    def text(self, view: SheetView, idx: tuple[int, ...]) -> str:
        return f"x / (1 + exp(−x)) where x = {view.name(self.ins[0], idx)}"

    def sym_reads(self, view: SheetView, idx: tuple[int, ...], keep_shift: bool) -> list[Key]:
        return [(self.ins[0], idx)]

    def sym_compose(self, vals: list[Any], keep_shift: bool) -> Any:
        x = vals[0]
        return x / (1.0 + folding.exp(-x))

    def sheet_formulas(self, shape: Shape, R: Ref, S: Span) -> Iterator[Formula]:
        (x,) = self.ins
        for idx in product(*map(range, shape(self.out))):
            r = R(x, idx)
            yield idx, f"{r}/(1+EXP(-{r}))"

    def label(self) -> str:
        return self.kind.value
