"""The heads' weighted values: y[t][h·hs + d] = Σ_{s ≤ t} att[h][t][s] · v[h // G][s][d], concatenated.

G query heads share a value head (grouped-query attention; G = 1 in GPT-2); a sliding window of W
tokens sums over t - W < s ≤ t only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import product
from typing import Any, ClassVar

import numpy as np

from . import folding
from .base import Kernel, Mask, Op, Reads
from .causal import causal
from .context import Key, OpContext, SheetView
from .grads import Arrays, acc
from .kind import OpKind
from .matmul import _mm
from .registry import register
from .selection import _last_row
from .spreadsheet import Formula, Ref, Shape, Span
from .window import expand, fold, fold_sum, seen, spread

__all__ = ["Weighted"]


@register
@dataclass(frozen=True)
class Weighted(Op):
    """y[t][h·hs + d] = Σ_{s ≤ t} att[h][t][s] · v[h][s][d]: the heads' weighted values, concatenated.

    >>> Weighted("y", ("att", "v")).sym_compose([0.5, 2.0, 0.5, 4.0], keep_shift=True)
    3.0
    """

    groups: int = 1  # query heads per value head
    window: int = 0  # the sliding window in tokens (0: none)

    kind: ClassVar[OpKind] = OpKind.WEIGHTED
    row_reads: ClassVar[tuple[Reads, ...]] = ("row", "prefix")
    resident: ClassVar[bool] = False
    paired: ClassVar[bool] = True

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        (att_name, v_name), out = self.ins, self.out
        width = cap if exact else _last_row(sel) + 1
        rows = np.arange(sel.start, sel.stop) if isinstance(sel, slice) else sel
        R, in_place = len(rows), isinstance(sel, slice)
        groups, window = self.groups, self.window

        def run(vals: dict[str, np.ndarray]) -> None:
            att, v = vals[att_name], vals[v_name]  # [H, cap, cap], [KV, cap, hs]
            vv = expand(v[:, :width], groups)  # [H, width, hs]
            if math.isfinite(np.add.reduce(vv, axis=None)):  # every v finite (a sum with an inf or nan is not)
                y = _mm(att[:, sel, :width], vv, exact)  # [H, R, width] @ [H, width, hs]
            else:
                # 0 · inf is nan: a later row's non-finite v (a pin) must not leak into earlier rows.
                keep = np.arange(width)[None, :] <= rows[:, None]  # [R, width]
                if window:
                    keep &= np.arange(width)[None, :] > rows[:, None] - window
                masked = np.where(keep[None, :, :, None], vv[:, None], 0.0)  # [H, R, width, hs]
                y = np.matmul(att[:, rows, None, :width], masked)[:, :, 0, :]  # -> [H, R, hs]
            if in_place:  # the output rows are a view: y lands in them in one copy
                vals[out][sel].reshape(R, y.shape[0], -1)[...] = y.transpose(1, 0, 2)  # [H, R, hs] -> [R, H, hs]
            else:
                vals[out][sel] = y.transpose(1, 0, 2).reshape(R, -1)  # -> [R, C]

        return run

    def _seen(self, T: int) -> np.ndarray:
        return causal(T) if not self.window else seen(T, self.window)

    def cells_read(self, k: int, out_mask: Mask, ctx: OpContext) -> Mask | None:
        T, hs = ctx.T, ctx.shape(self.ins[1])[2]
        H = out_mask.shape[1] // hs
        m = out_mask.reshape(T, H, hs).transpose(1, 0, 2)  # [H, T, hs]
        if k == 0:
            return m.any(axis=2)[:, :, None] & self._seen(T)
        if self.groups == 1 and not self.window:
            # v[h][s][d] is read by y[t][h, d] for every t >= s.
            later = np.flip(np.logical_or.accumulate(np.flip(m, axis=1), axis=1), axis=1)
            return later
        # v[h // G][s][d] is read by y[t][h, d] for every t in s ≤ t < s + W.
        return fold(spread(m, self.window, axis=1, forward=False), self.groups)

    def cells_written(self, masks: list[Mask | None], ctx: OpContext) -> Mask:
        T, hs = ctx.T, ctx.shape(self.ins[1])[2]
        H = ctx.shape(self.out)[1] // hs
        out = np.zeros((H, T, hs), bool)
        if masks[0] is not None:
            out |= (masks[0] & self._seen(T)).any(axis=2)[:, :, None]
        if masks[1] is not None:
            if self.groups == 1 and not self.window:
                # y[t][h, d] reads v[h][s][d] for all s <= t.
                out |= np.logical_or.accumulate(masks[1], axis=1)
            else:  # ... for t - W < s ≤ t, of value head h // G
                out |= expand(spread(masks[1], self.window, axis=1, forward=True), self.groups)
        return out.transpose(1, 0, 2).reshape(T, H * hs)

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in (("groups", self.groups), ("window", self.window)) if v != (k == "groups")}

    def batched(self, V: Arrays) -> np.ndarray:
        att, v = V[self.ins[0]], expand(V[self.ins[1]], self.groups, axis=1)  # [B, H, T, T] @ [B, H, T, hs]
        y = att @ v  # -> [B, T, H·hs] below
        return y.transpose(0, 2, 1, 3).reshape(y.shape[0], y.shape[2], -1)

    def vjp(self, V: Arrays, g: np.ndarray, G: Arrays) -> None:
        att, v = V[self.ins[0]], expand(V[self.ins[1]], self.groups, axis=1)
        B, H, T, hs = v.shape
        gy = g.reshape(B, T, H, hs).transpose(0, 2, 1, 3)  # [B, T, C] -> [B, H, T, hs]
        acc(G, V, self.ins[0], np.where(self._seen(T), gy @ v.swapaxes(-1, -2), 0.0))
        acc(G, V, self.ins[1], fold_sum(att.swapaxes(-1, -2) @ gy, self.groups, axis=1))  # -> [B, KV, T, hs]

    def _head(self, view: SheetView, idx: tuple[int, ...]) -> tuple[int, int, int]:
        """(position, head, dim) of one output cell."""
        t, c = idx
        h, d = divmod(c, view.dims(self.ins[1])[2])
        return t, h, d

    def _first(self, t: int) -> int:
        """The first key position row t sums over."""
        return max(0, t - self.window + 1) if self.window else 0

    def text(self, view: SheetView, idx: tuple[int, ...]) -> str:
        t, h, d = self._head(view, idx)
        ins = self.ins
        return f"Σ_{{s={self._first(t)}..{t}}} {ins[0]}[{h}][{t}][s] · {ins[1]}[{h // self.groups}][s][{d}]"

    def sym_reads(self, view: SheetView, idx: tuple[int, ...], keep_shift: bool) -> list[Key]:
        t, h, d = self._head(view, idx)
        ins, vh = self.ins, h // self.groups
        return [k for s in range(self._first(t), t + 1) for k in ((ins[0], (h, t, s)), (ins[1], (vh, s, d)))]

    def sym_compose(self, vals: list[Any], keep_shift: bool) -> Any:
        return folding.fsum_([folding.mul(vals[2 * i], vals[2 * i + 1]) for i in range(len(vals) // 2)])

    def sheet_formulas(self, shape: Shape, R: Ref, S: Span) -> Iterator[Formula]:
        att, v = self.ins
        H, T, _ = shape(att)
        hs, G = shape(v)[2], self.groups
        for t, h, d in product(range(T), range(H), range(hs)):
            terms = [f"{R(att, (h, t, s))}*{R(v, (h // G, s, d))}" for s in range(self._first(t), t + 1)]
            yield (t, h * hs + d), "+".join(terms)

    def label(self) -> str:
        return self.kind.value
