"""Rotary position embedding of q or k: each pair (d, d + half) of a head's first `rot` dims turned by t·θ_d.

out[h][t][d]        = x[h][t][d] · cos[t][d] − x[h][t][d+half] · sin[t][d]      (d < half)
out[h][t][d+half]   = x[h][t][d+half] · cos[t][d] + x[h][t][d] · sin[t][d]
out[h][t][d]        = x[h][t][d]                                                (d ≥ rot: partial rotary)

cos and sin are named constant tensors (`rope.cos`, `rope.sin`, [positions, half]), the tables
transformers' rotary embedding computes, so a formula reads them as cells.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import product
from typing import Any, ClassVar

import numpy as np

from .base import Kernel, Mask, Op, Reads
from .context import Key, OpContext, SheetView
from .grads import Arrays, acc
from .kind import OpKind
from .registry import register
from .spreadsheet import Formula, Ref, Shape, Span

__all__ = ["Rotary"]


@register
@dataclass(frozen=True)
class Rotary(Op):
    """q or k rotated by position: ins (x [H, T, hs], cos [P, half], sin [P, half]); `rot` = 2·half dims turn.

    >>> Rotary("q_rot", ("q", "rope.cos", "rope.sin"), rot=2).sym_compose([1.0, 0.5, 2.0, 0.25, 0.5], False)
    0.0
    """

    rot: int = 0
    kind: ClassVar[OpKind] = OpKind.ROTARY
    row_reads: ClassVar[tuple[Reads, ...]] = ("row", "whole", "whole")
    resident: ClassVar[bool] = False

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        (x_name, cos_name, sin_name), out, half = self.ins, self.out, self.rot // 2

        def run(vals: dict[str, np.ndarray]) -> None:
            x = vals[x_name][:, sel]  # [H, R, hs] -> [H, R, hs]
            c, s = vals[cos_name][sel], vals[sin_name][sel]  # [R, half]
            y = x.copy()
            x1, x2 = x[..., :half], x[..., half : 2 * half]
            y[..., :half] = x1 * c - x2 * s  # transformers: x·cos + rotate_half(x)·sin, the same sums
            y[..., half : 2 * half] = x2 * c + x1 * s
            vals[out][:, sel] = y

        return run

    def cells_read(self, k: int, out_mask: Mask, ctx: OpContext) -> Mask | None:
        half = self.rot // 2
        lo, hi = out_mask[..., :half], out_mask[..., half : 2 * half]
        if k == 0:
            m = out_mask.copy()
            m[..., :half] |= hi
            m[..., half : 2 * half] |= lo
            return m
        m = np.zeros(ctx.shape(self.ins[k]), bool)
        m[: out_mask.shape[1]] = (lo | hi).any(axis=0)
        return m

    def cells_written(self, masks: list[Mask | None], ctx: OpContext) -> Mask:
        half, T = self.rot // 2, ctx.T
        out = np.zeros(ctx.shape(self.out), bool)
        if masks[0] is not None:
            m = masks[0]
            out |= m
            out[..., :half] |= m[..., half : 2 * half]
            out[..., half : 2 * half] |= m[..., :half]
        for m in masks[1:]:
            if m is not None:
                out[..., :half] |= m[:T][None]
                out[..., half : 2 * half] |= m[:T][None]
        return out

    def params(self) -> dict[str, Any]:
        return {"rot": self.rot}

    def batched(self, V: Arrays) -> np.ndarray:
        x = V[self.ins[0]]  # [B, H, T, hs]
        half, T = self.rot // 2, x.shape[2]
        c, s = V[self.ins[1]][:T], V[self.ins[2]][:T]  # [T, half]
        y = x.copy()
        x1, x2 = x[..., :half], x[..., half : 2 * half]
        y[..., :half] = x1 * c - x2 * s
        y[..., half : 2 * half] = x2 * c + x1 * s
        return y

    def vjp(self, V: Arrays, g: np.ndarray, G: Arrays) -> None:
        x = V[self.ins[0]]
        half, T = self.rot // 2, x.shape[2]
        cos, sin = V[self.ins[1]], V[self.ins[2]]
        c, s = cos[:T], sin[:T]
        x1, x2 = x[..., :half], x[..., half : 2 * half]
        g1, g2 = g[..., :half], g[..., half : 2 * half]
        gx = g.copy()
        gx[..., :half] = g1 * c + g2 * s
        gx[..., half : 2 * half] = g2 * c - g1 * s
        acc(G, V, self.ins[0], gx)
        gc, gs = np.zeros_like(cos), np.zeros_like(sin)
        gc[:T] = (g1 * x1 + g2 * x2).reshape(-1, T, half).sum(axis=0)
        gs[:T] = (g2 * x1 - g1 * x2).reshape(-1, T, half).sum(axis=0)
        acc(G, V, self.ins[1], gc)
        acc(G, V, self.ins[2], gs)

    def _pair(self, d: int) -> tuple[int, int, bool] | None:
        """(partner dim, table column, first half?) of a rotating dim; None for one that passes through."""
        half = self.rot // 2
        if d < half:
            return d + half, d, True
        if d < 2 * half:
            return d - half, d - half, False
        return None

    def text(self, view: SheetView, idx: tuple[int, ...]) -> str:
        h, t, d = idx
        x, cos, sin = self.ins
        pair = self._pair(d)
        if pair is None:
            return f"{x}[{h}][{t}][{d}] (dim {d} does not rotate: only the first {self.rot} of each head do)"
        p, i, first = pair
        sign = "−" if first else "+"
        return f"{x}[{h}][{t}][{d}] · {cos}[{t}][{i}] {sign} {x}[{h}][{t}][{p}] · {sin}[{t}][{i}]"

    def sym_reads(self, view: SheetView, idx: tuple[int, ...], keep_shift: bool) -> list[Key]:
        h, t, d = idx
        x, cos, sin = self.ins
        pair = self._pair(d)
        if pair is None:
            return [(x, idx)]
        p, i, first = pair
        reads = [(x, idx), (cos, (t, i)), (x, (h, t, p)), (sin, (t, i))]
        # sym_compose sees values only: the first half's minus is marked by its cos cell read again
        return [*reads, (cos, (t, i))] if first else reads

    def sym_compose(self, vals: list[Any], keep_shift: bool) -> Any:
        if len(vals) == 1:
            return vals[0]
        a = vals[0] * vals[1]
        b = vals[2] * vals[3]
        return a - b if len(vals) == 5 else a + b

    def sheet_formulas(self, shape: Shape, R: Ref, S: Span) -> Iterator[Formula]:
        x, cos, sin = self.ins
        for h, t, d in product(*map(range, shape(self.out))):
            pair = self._pair(d)
            if pair is None:
                yield (h, t, d), R(x, (h, t, d))
                continue
            p, i, first = pair
            sign = "-" if first else "+"
            yield (h, t, d), f"{R(x, (h, t, d))}*{R(cos, (t, i))}{sign}{R(x, (h, t, p))}*{R(sin, (t, i))}"

    def label(self) -> str:
        return self.kind.value
