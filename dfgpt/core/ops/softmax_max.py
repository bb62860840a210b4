"""A softmax's maximum (its shift): score_max[h][t] = max_{s ≤ t} score[h][t][s], or max over a logit row."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import product
from typing import Any, ClassVar

import numpy as np
import sympy

from . import folding
from .base import Kernel, Mask, Op, Reads
from .causal import _read_row_keys, _visible
from .context import Key, OpContext, SheetView
from .grads import Arrays, acc
from .kind import OpKind
from .registry import register
from .spreadsheet import Formula, Ref, Shape, Span
from .window import seen

__all__ = ["SoftmaxMax"]


@register
@dataclass(frozen=True)
class SoftmaxMax(Op):
    """score_max[h][t] = max_{s ≤ t} score[h][t][s].

    >>> SoftmaxMax("m", ("s",)).sym_compose([1.0, 3.0, 2.0], keep_shift=True)
    3.0
    """

    window: int = 0  # an attention softmax under a sliding window: keys t - W < s ≤ t only (0: causal alone)

    kind: ClassVar[OpKind] = OpKind.SOFTMAX_MAX
    row_reads: ClassVar[tuple[Reads, ...]] = ("row",)
    resident: ClassVar[bool] = True  # a few numbers a row that spare a replay its reductions
    shift: ClassVar[bool] = True
    cancels: ClassVar[bool] = True  # exp(s - max) / Σ exp(s - max) is exp(s) / Σ exp(s)

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        s_name, out = self.ins[0], self.out
        visible = _visible(cap)[sel]  # [R, cap], for attention's [H, cap, cap] scores

        def run(vals: dict[str, np.ndarray]) -> None:
            s = vals[s_name]  # [.., cap, cap] -> [.., R]
            if s.ndim == 3:
                # Mask by structure, not by the stored -inf: a pinned masked entry must stay unread.
                vals[out][:, sel] = np.maximum.reduce(np.where(visible, s[:, sel], -np.inf), axis=-1)
            else:
                vals[out][sel] = s[sel].max(axis=-1)

        return run

    def cells_read(self, k: int, out_mask: Mask, ctx: OpContext) -> Mask | None:
        if out_mask.ndim == 2:
            if self.window:
                return out_mask[:, :, None] & seen(ctx.T, self.window)
            return _read_row_keys(out_mask, ctx.T)
        return np.repeat(out_mask[:, None], ctx.shape(self.ins[0])[1], axis=1)

    def cells_written(self, masks: list[Mask | None], ctx: OpContext) -> Mask:
        m = masks[0]
        if m is None:
            return np.zeros(ctx.shape(self.out), bool)
        return m.any(axis=-1)

    def batched(self, V: Arrays) -> np.ndarray:
        return V[self.ins[0]].max(axis=-1)  # [B, .., K] -> [B, ..]

    def vjp(self, V: Arrays, g: np.ndarray, G: Arrays) -> None:
        s = V[self.ins[0]]
        onehot = np.zeros_like(s)
        np.put_along_axis(onehot, s.argmax(axis=-1)[..., None], 1.0, axis=-1)
        acc(G, V, self.ins[0], onehot * g[..., None])

    def text(self, view: SheetView, idx: tuple[int, ...]) -> str:
        x = self.ins[0]
        if len(idx) == 2:
            h, t = idx
            return f"max_{{s={max(0, t - self.window + 1) if self.window else 0}..{t}}} {x}[{h}][{t}][s]"
        (t,) = idx
        return f"max_{{v}} {x}[{t}][v]"

    def sym_reads(self, view: SheetView, idx: tuple[int, ...], keep_shift: bool) -> list[Key]:
        x = self.ins[0]
        if len(idx) == 2:
            first = max(0, idx[1] - self.window + 1) if self.window else 0
            return [(x, (*idx, s)) for s in range(first, idx[1] + 1)]
        return [(x, (idx[0], v)) for v in range(view.dims(x)[1])]

    def sym_compose(self, vals: list[Any], keep_shift: bool) -> Any:
        return max(vals) if all(folding.is_num(v) for v in vals) else sympy.Max(*vals, evaluate=False)

    def sheet_formulas(self, shape: Shape, R: Ref, S: Span) -> Iterator[Formula]:
        src = self.ins[0]
        causal = len(shape(src)) == 3
        for pre in product(*map(range, shape(src)[:-1])):  # (h, t) or (t,)
            last = pre[-1] if causal else shape(src)[-1] - 1  # keys s ≤ t, or the whole vocab row
            first = max(0, last - self.window + 1) if causal and self.window else 0
            yield pre, f"MAX({S(src, (*pre, first), (*pre, last))})"

    def label(self) -> str:
        return self.kind.value
