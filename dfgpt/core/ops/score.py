"""Attention scores: score[h][t][s] = Σ_d q[h][t][d] · k[h // G][s][d] / √hs for s ≤ t; -inf (masked) for s > t.

G query heads share a key head (grouped-query attention; G = 1 in GPT-2), and a sliding window masks
keys s ≤ t - W too (Mistral).
"""

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
from .window import expand, fold, fold_sum, hidden, seen

__all__ = ["Score"]


@register
@dataclass(frozen=True)
class Score(Op):
    """score[h][t][s] = Σ_d q[h][t][d] · k[h][s][d] / √hs for s ≤ t; -inf (masked) for s > t.

    >>> Score("att", ("q", "k")).sym_compose([], keep_shift=True)
    -oo
    """

    groups: int = 1  # query heads per key head
    window: int = 0  # the sliding window in tokens (0: none)
    kind: ClassVar[OpKind] = OpKind.SCORE
    masked: ClassVar[float] = -np.inf
    row_reads: ClassVar[tuple[Reads, ...]] = ("row", "prefix")
    resident: ClassVar[bool] = False
    paired: ClassVar[bool] = True

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        (q_name, k_name), out_name = self.ins, self.out
        width = cap if exact else _last_row(sel) + 1
        # [R, width]: keys past each query (and before its window)
        later = _later_of(sel, width) if not self.window else hidden(sel, width, self.window)
        groups = self.groups

        def run(vals: dict[str, np.ndarray]) -> None:
            q, k = vals[q_name], vals[k_name]  # [H, cap, hs], [KV, cap, hs]
            kk = expand(k[:, :width], groups)  # [H, width, hs]
            s = _mm(q[:, sel], kk.transpose(0, 2, 1), exact)  # -> [H, R, width]
            s *= 1.0 / math.sqrt(q.shape[-1])  # a Python float (as np.sqrt's, bit for bit): float32 stays float32
            _mask_later(s, later, -np.inf)
            out = vals[out_name]
            out[:, sel, :width] = s
            if width < out.shape[-1]:
                out[:, sel, width:] = -np.inf

        return run

    def _seen(self, T: int) -> np.ndarray:
        return causal(T) if not self.window else seen(T, self.window)

    def cells_read(self, k: int, out_mask: Mask, ctx: OpContext) -> Mask | None:
        m = out_mask & self._seen(ctx.T)
        hs = ctx.shape(self.ins[k])[2]
        axis = 2 if k == 0 else 1  # q reads rows t, k reads rows s
        rows = m.any(axis=axis)  # [H, T]
        if k == 1:
            rows = fold(rows, self.groups)  # -> [KV, T]
        return np.repeat(rows[:, :, None], hs, axis=2)

    def cells_written(self, masks: list[Mask | None], ctx: OpContext) -> Mask:
        H, T = ctx.shape(self.out)[:2]
        out = np.zeros((H, T, T), bool)
        if masks[0] is not None:
            out |= masks[0].any(axis=2)[:, :, None]
        if masks[1] is not None:
            out |= expand(masks[1].any(axis=2), self.groups)[:, None, :]
        return out & self._seen(T)

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in (("groups", self.groups), ("window", self.window)) if v != (k == "groups")}

    def batched(self, V: Arrays) -> np.ndarray:
        q, k = V[self.ins[0]], expand(V[self.ins[1]], self.groups, axis=1)  # [B, H, T, hs] -> [B, H, T, T]
        s = (q @ k.swapaxes(-1, -2)) * float(1.0 / np.sqrt(q.shape[-1]))  # a Python float: float32 stays float32
        return np.where(self._seen(q.shape[2]), s, -np.inf)

    def vjp(self, V: Arrays, g: np.ndarray, G: Arrays) -> None:
        q, k = V[self.ins[0]], expand(V[self.ins[1]], self.groups, axis=1)
        g = np.where(self._seen(q.shape[2]), g, 0.0) * float(1.0 / np.sqrt(q.shape[-1]))
        acc(G, V, self.ins[0], g @ k)  # [B, H, T, T] @ [B, H, T, hs]
        acc(G, V, self.ins[1], fold_sum(g.swapaxes(-1, -2) @ q, self.groups, axis=1))  # -> [B, KV, T, hs]

    def text(self, view: SheetView, idx: tuple[int, ...]) -> str:
        h, t, s_ = idx
        if s_ > t:
            return f"−∞ (causal mask: position {t} cannot see position {s_})"
        if self.window and t - s_ >= self.window:
            return f"−∞ (sliding window: position {t} sees the {self.window} positions up to it, not {s_})"
        ins = self.ins
        hs = view.dims(ins[0])[2]
        return f"Σ_{{d=0..{hs - 1}}} {ins[0]}[{h}][{t}][d] · {ins[1]}[{h // self.groups}][{s_}][d] / √{hs}"

    def sym_reads(self, view: SheetView, idx: tuple[int, ...], keep_shift: bool) -> list[Key]:
        h, t, s = idx
        if s > t or (self.window and t - s >= self.window):
            return []  # the causal mask (or the window): a constant
        ins, kh = self.ins, h // self.groups
        return [k for d in range(view.dims(ins[0])[2]) for k in ((ins[0], (h, t, d)), (ins[1], (kh, s, d)))]

    def sym_compose(self, vals: list[Any], keep_shift: bool) -> Any:
        if not vals:
            return -sympy.oo
        hs = len(vals) // 2
        dot = folding.fsum_([folding.mul(vals[2 * i], vals[2 * i + 1]) for i in range(hs)])
        return dot / math.sqrt(hs) if folding.is_num(dot) else dot / sympy.sqrt(hs)

    def sheet_formulas(self, shape: Shape, R: Ref, S: Span) -> Iterator[Formula]:
        q, k = self.ins
        H, T, hs = shape(q)
        G, W = self.groups, self.window
        for h, t, s in product(range(H), range(T), range(T)):
            if s > t or (W and t - s >= W):
                yield (h, t, s), None
            else:
                qr, kr = S(q, (h, t, 0), (h, t, hs - 1)), S(k, (h // G, s, 0), (h // G, s, hs - 1))
                yield (h, t, s), f"SUMPRODUCT({qr},{kr})/SQRT({hs})"

    def label(self) -> str:
        return self.kind.value
