"""RMSNorm's mean square: ms[t] = Σ_c x[t][c]² / C (LayerNorm's variance without the mean)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from . import folding
from .base import Kernel, Mask, Op, Reads
from .context import Key, OpContext, SheetView
from .grads import Arrays, acc
from .kind import OpKind
from .masks import _rowany
from .registry import register
from .spreadsheet import Formula, Ref, Shape, Span

__all__ = ["RMS"]


@register
@dataclass(frozen=True)
class RMS(Op):
    """ms[t] = Σ_c x[t][c]² / C.

    >>> RMS("ms", ("x",)).sym_compose([1.0, 2.0, 2.0], keep_shift=True)
    3.0
    """

    kind: ClassVar[OpKind] = OpKind.RMS
    row_reads: ClassVar[tuple[Reads, ...]] = ("row",)
    resident: ClassVar[bool] = True  # a number a row that spares a replay its reduction

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        x_name, out = self.ins[0], self.out

        def run(vals: dict[str, np.ndarray]) -> None:
            x = vals[x_name][sel]  # [R, C] -> [R]
            vals[out][sel] = np.add.reduce(x * x, axis=-1) / x.shape[-1]

        return run

    def cells_read(self, k: int, out_mask: Mask, ctx: OpContext) -> Mask | None:
        return np.repeat(out_mask[:, None], ctx.shape(self.ins[0])[1], axis=1)

    def cells_written(self, masks: list[Mask | None], ctx: OpContext) -> Mask:
        return _rowany(masks[0]) if masks[0] is not None else np.zeros(ctx.T, bool)

    def batched(self, V: Arrays) -> np.ndarray:
        x = V[self.ins[0]]  # [B, T, C] -> [B, T]
        return (x * x).sum(axis=-1) / x.shape[-1]

    def vjp(self, V: Arrays, g: np.ndarray, G: Arrays) -> None:
        x = V[self.ins[0]]
        acc(G, V, self.ins[0], g[..., None] * (2.0 / x.shape[-1]) * x)

    def text(self, view: SheetView, idx: tuple[int, ...]) -> str:
        (t,) = idx
        x = self.ins[0]
        C = view.dims(x)[1]
        return f"Σ_{{i=0..{C - 1}}} {x}[{t}][i]² / {C}"

    def sym_reads(self, view: SheetView, idx: tuple[int, ...], keep_shift: bool) -> list[Key]:
        (t,) = idx
        x = self.ins[0]
        return [(x, (t, i)) for i in range(view.dims(x)[1])]

    def sym_compose(self, vals: list[Any], keep_shift: bool) -> Any:
        return folding.fsum_([v**2 for v in vals]) / len(vals)

    def sheet_formulas(self, shape: Shape, R: Ref, S: Span) -> Iterator[Formula]:
        x = self.ins[0]
        T, C = shape(x)
        for t in range(T):
            yield (t,), f"SUMSQ({S(x, (t, 0), (t, C - 1))})/{C}"

    def label(self) -> str:
        return self.kind.value
