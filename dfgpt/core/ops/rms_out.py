"""RMSNorm's output: out[t][c] = x[t][c] / √(ms[t] + eps) · (offset + w[c]) (offset 1 in Gemma, else 0)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from . import folding
from .base import Kernel, Mask, Op, Reads
from .context import Key, OpContext, SheetView
from .grads import Arrays, acc, param_sum
from .kind import OpKind
from .masks import _rowany
from .registry import register
from .spreadsheet import Formula, Ref, Shape, Span, num_text

__all__ = ["RMSOut"]


@register
@dataclass(frozen=True)
class RMSOut(Op):
    """out[t][c] = x[t][c] / √(ms[t] + eps) · (offset + w[c]).

    >>> RMSOut("y", ("x", "ms", "w"), eps=0.0, offset=1.0).sym_compose([2.0, 4.0, 0.5], keep_shift=True)
    1.5
    """

    eps: float = 1e-6
    offset: float = 0.0
    kind: ClassVar[OpKind] = OpKind.RMS_OUT
    row_reads: ClassVar[tuple[Reads, ...]] = ("row", "row", "whole")
    resident: ClassVar[bool] = False

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        x_name, ms_name, w_name = self.ins
        out, eps, offset = self.out, self.eps, self.offset

        def run(vals: dict[str, np.ndarray]) -> None:
            x, ms = vals[x_name][sel], vals[ms_name][sel]  # [R, C], [R] -> [R, C]
            y = x / np.sqrt(ms + eps)[:, None]
            w = vals[w_name]
            y *= (w + offset) if offset else w
            vals[out][sel] = y

        return run

    def cells_read(self, k: int, out_mask: Mask, ctx: OpContext) -> Mask | None:
        if k == 0:
            return out_mask.copy()
        if k == 1:
            return _rowany(out_mask)
        return out_mask.any(axis=0)

    def cells_written(self, masks: list[Mask | None], ctx: OpContext) -> Mask:
        out = np.zeros((ctx.T, ctx.shape(self.out)[1]), bool)
        for k, m in enumerate(masks):
            if m is None:
                continue
            out |= m if k == 0 else m[:, None] if k == 1 else m[None, :]
        return out

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps, "offset": self.offset}

    def batched(self, V: Arrays) -> np.ndarray:
        x, ms, w = (V[n] for n in self.ins)  # -> [B, T, C]
        return x / np.sqrt(ms + self.eps)[..., None] * (w + self.offset)

    def vjp(self, V: Arrays, g: np.ndarray, G: Arrays) -> None:
        x, ms, w = (V[n] for n in self.ins)
        r = 1.0 / np.sqrt(ms + self.eps)
        gw = g * (w + self.offset)
        acc(G, V, self.ins[0], gw * r[..., None])
        acc(G, V, self.ins[1], (gw * x).sum(axis=-1) * (-0.5 * r * r * r))
        acc(G, V, self.ins[2], param_sum(g * x * r[..., None], 1))

    def _scale(self, w: str) -> str:
        return f"({self.offset:g} + {w})" if self.offset else w

    def text(self, view: SheetView, idx: tuple[int, ...]) -> str:
        t, c = idx
        x, ms, w = self.ins
        return f"{x}[{t}][{c}] / √({ms}[{t}] + {self.eps:g}) · {self._scale(f'{w}[{c}]')}"

    def sym_reads(self, view: SheetView, idx: tuple[int, ...], keep_shift: bool) -> list[Key]:
        t, c = idx
        x, ms, w = self.ins
        return [(x, (t, c)), (ms, (t,)), (w, (c,))]

    def sym_compose(self, vals: list[Any], keep_shift: bool) -> Any:
        w = vals[2] + self.offset if self.offset else vals[2]
        return vals[0] / folding.sqrt(vals[1] + self.eps) * w

    def sheet_formulas(self, shape: Shape, R: Ref, S: Span) -> Iterator[Formula]:
        x, ms, w = self.ins
        T, C = shape(x)
        eps = num_text(self.eps)
        for t in range(T):
            m = R(ms, (t,))
            for c in range(C):
                scale = f"({num_text(self.offset)}+{R(w, (c,))})" if self.offset else R(w, (c,))
                yield (t, c), f"{R(x, (t, c))}/SQRT({m}+{eps})*{scale}"

    def label(self) -> str:
        return self.kind.value
