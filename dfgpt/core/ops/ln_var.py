"""LayerNorm's variance: var[t] = Σ_c (x[t][c] - mean[t])² / C (the biased, population variance)."""

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

__all__ = ["LNVar"]


@register
@dataclass(frozen=True)
class LNVar(Op):
    """var[t] = Σ_c (x[t][c] - mean[t])² / C (the biased, population variance).

    >>> LNVar("v", ("x", "m")).sym_compose([1.0, 2.0, 3.0, 2.0], keep_shift=True)
    1.0
    """

    kind: ClassVar[OpKind] = OpKind.LN_VAR
    row_reads: ClassVar[tuple[Reads, ...]] = ("row", "row")
    resident: ClassVar[bool] = True  # a few numbers a row that spare a replay its reductions

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        (x_name, mean_name), out = self.ins, self.out

        def run(vals: dict[str, np.ndarray]) -> None:
            x, mean = vals[x_name][sel], vals[mean_name][sel]  # [R, C], [R] -> [R]
            d = x - mean[:, None]
            np.multiply(d, d, out=d)
            vals[out][sel] = np.add.reduce(d, axis=-1) / x.shape[-1]

        return run

    def cells_read(self, k: int, out_mask: Mask, ctx: OpContext) -> Mask | None:
        if k == 1:
            return out_mask.copy()
        return np.repeat(out_mask[:, None], ctx.shape(self.ins[0])[1], axis=1)

    def cells_written(self, masks: list[Mask | None], ctx: OpContext) -> Mask:
        out = np.zeros(ctx.T, bool)
        if masks[0] is not None:
            out |= _rowany(masks[0])
        if masks[1] is not None:
            out |= masks[1]
        return out

    def batched(self, V: Arrays) -> np.ndarray:
        x, m = V[self.ins[0]], V[self.ins[1]]  # [B, T, C], [B, T] -> [B, T]
        d = x - m[..., None]
        return (d * d).sum(axis=-1) / x.shape[-1]

    def vjp(self, V: Arrays, g: np.ndarray, G: Arrays) -> None:
        x, m = V[self.ins[0]], V[self.ins[1]]
        d = x - m[..., None]
        C = x.shape[-1]
        acc(G, V, self.ins[0], g[..., None] * (2.0 / C) * d)
        acc(G, V, self.ins[1], -g * (2.0 / C) * d.sum(axis=-1))

    def text(self, view: SheetView, idx: tuple[int, ...]) -> str:
        (t,) = idx
        ins = self.ins
        C = view.dims(ins[0])[1]
        return f"Σ_{{i=0..{C - 1}}} ({ins[0]}[{t}][i] − {ins[1]}[{t}])² / {C}"

    def sym_reads(self, view: SheetView, idx: tuple[int, ...], keep_shift: bool) -> list[Key]:
        (t,) = idx
        ins = self.ins
        return [k for i in range(view.dims(ins[0])[1]) for k in ((ins[0], (t, i)), (ins[1], (t,)))]

    def sym_compose(self, vals: list[Any], keep_shift: bool) -> Any:
        return folding.fsum_([(vals[i] - vals[i + 1]) ** 2 for i in range(0, len(vals), 2)]) / (len(vals) // 2)

    def sheet_formulas(self, shape: Shape, R: Ref, S: Span) -> Iterator[Formula]:
        x = self.ins[0]
        T, C = shape(x)
        for t in range(T):
            row, m = S(x, (t, 0), (t, C - 1)), R(self.ins[1], (t,))
            yield (t,), f"SUMPRODUCT({row}-{m},{row}-{m})/{C}"

    def label(self) -> str:
        return self.kind.value
