"""Attention scores: score[h][t][s] = Σ_d q[h][t][d] · k[h][s][d] / √hs for s ≤ t; -inf (masked) for s > t."""

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
from .causal import _later_of, _mask_later, causal
from .context import Key, OpContext, SheetView
from .grads import Arrays, acc
from .kind import OpKind
from .matmul import _mm
from .registry import register
from .selection import _last_row
from .spreadsheet import Formula, Ref, Shape, Span

__all__ = ["Score"]


@register
@dataclass(frozen=True)
class Score(Op):
    """score[h][t][s] = Σ_d q[h][t][d] · k[h][s][d] / √hs for s ≤ t; -inf (masked) for s > t.

    >>> Score("att", ("q", "k")).sym_compose([], keep_shift=True)
    -oo
    """

    kind: ClassVar[OpKind] = OpKind.SCORE
    masked: ClassVar[float] = -np.inf
    row_reads: ClassVar[tuple[Reads, ...]] = ("row", "prefix")
    resident: ClassVar[bool] = False
    paired: ClassVar[bool] = True

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        (q_name, k_name), out_name = self.ins, self.out
        width = cap if exact else _last_row(sel) + 1
        later = _later_of(sel, width)  # [R, width]: keys past each query

        def run(vals: dict[str, np.ndarray]) -> None:
            q, k = vals[q_name], vals[k_name]  # [H, cap, hs]
            s = _mm(q[:, sel], k[:, :width].transpose(0, 2, 1), exact)  # -> [H, R, width]
            s *= 1.0 / math.sqrt(q.shape[-1])  # a Python float (as np.sqrt's, bit for bit): float32 stays float32
            _mask_later(s, later, -np.inf)
            out = vals[out_name]
            out[:, sel, :width] = s
            if width < out.shape[-1]:
                out[:, sel, width:] = -np.inf

        return run

    def cells_read(self, k: int, out_mask: Mask, ctx: OpContext) -> Mask | None:
        m = out_mask & causal(ctx.T)
        hs = ctx.shape(self.ins[k])[2]
        axis = 2 if k == 0 else 1  # q reads rows t, k reads rows s
        return np.repeat(m.any(axis=axis)[:, :, None], hs, axis=2)

    def cells_written(self, masks: list[Mask | None], ctx: OpContext) -> Mask:
        H, T = ctx.shape(self.out)[:2]
        out = np.zeros((H, T, T), bool)
        if masks[0] is not None:
            out |= masks[0].any(axis=2)[:, :, None]
        if masks[1] is not None:
            out |= masks[1].any(axis=2)[:, None, :]
        return out & causal(T)

    def batched(self, V: Arrays) -> np.ndarray:
        q, k = V[self.ins[0]], V[self.ins[1]]  # [B, H, T, hs] -> [B, H, T, T]
        s = (q @ k.swapaxes(-1, -2)) * float(1.0 / np.sqrt(q.shape[-1]))  # a Python float: float32 stays float32
        return np.where(causal(q.shape[2]), s, -np.inf)

    def vjp(self, V: Arrays, g: np.ndarray, G: Arrays) -> None:
        q, k = V[self.ins[0]], V[self.ins[1]]
        g = np.where(causal(q.shape[2]), g, 0.0) * float(1.0 / np.sqrt(q.shape[-1]))
        acc(G, V, self.ins[0], g @ k)  # [B, H, T, T] @ [B, H, T, hs]
        acc(G, V, self.ins[1], g.swapaxes(-1, -2) @ q)

    def text(self, view: SheetView, idx: tuple[int, ...]) -> str:
        h, t, s_ = idx
        if s_ > t:
            return f"−∞ (causal mask: position {t} cannot see position {s_})"
        ins = self.ins
        hs = view.dims(ins[0])[2]
        return f"Σ_{{d=0..{hs - 1}}} {ins[0]}[{h}][{t}][d] · {ins[1]}[{h}][{s_}][d] / √{hs}"

    def sym_reads(self, view: SheetView, idx: tuple[int, ...], keep_shift: bool) -> list[Key]:
        h, t, s = idx
        if s > t:
            return []  # the causal mask: a constant
        ins = self.ins
        return [k for d in range(view.dims(ins[0])[2]) for k in ((ins[0], (h, t, d)), (ins[1], (h, s, d)))]

    def sym_compose(self, vals: list[Any], keep_shift: bool) -> Any:
        if not vals:
            return -sympy.oo
        hs = len(vals) // 2
        dot = folding.fsum_([folding.mul(vals[2 * i], vals[2 * i + 1]) for i in range(hs)])
        return dot / math.sqrt(hs) if folding.is_num(dot) else dot / sympy.sqrt(hs)

    def sheet_formulas(self, shape: Shape, R: Ref, S: Span) -> Iterator[Formula]:
        q, k = self.ins
        H, T, hs = shape(q)
        for h, t, s in product(range(H), range(T), range(T)):
            if s > t:
                yield (h, t, s), None
            else:
                qr, kr = S(q, (h, t, 0), (h, t, hs - 1)), S(k, (h, s, 0), (h, s, hs - 1))
                yield (h, t, s), f"SUMPRODUCT({qr},{kr})/SQRT({hs})"

    def label(self) -> str:
        return self.kind.value
