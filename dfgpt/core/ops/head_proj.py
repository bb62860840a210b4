"""A head's output through its slice of `c_proj`: out[t][c] = Σ_d y[t][d] · W[c][h·hs + d].

The attention output of a block is the sum of these over its heads plus the bias; a circuit
graph keeps each head's term apart, so that every later destination can take it or leave it.

>>> op = HeadProj("h[0].head[1].out", ("h[0].head[1].y", "h[0].attn.c_proj.w"), head=1, size=2)
>>> op.sym_compose([1.0, 2.0, 3.0, 4.0], keep_shift=True)
14.0
"""

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
from .matmul import _mm
from .registry import register
from .spreadsheet import Formula, Ref, Shape, Span

__all__ = ["HeadProj"]


@register
@dataclass(frozen=True)
class HeadProj(Op):
    """out[t][c] = Σ_d y[t][d] · W[c][head·size + d] ("out_in"; W[head·size + d][c] for "in_out")."""

    head: int = 0
    size: int = 0  # the head's width hs
    layout: str = "out_in"
    kind: ClassVar[OpKind] = OpKind.HEAD_PROJ
    row_reads: ClassVar[tuple[Reads, ...]] = ("row", "whole")
    resident: ClassVar[bool] = False
    paired: ClassVar[bool] = True

    @property
    def cols(self) -> slice:
        return slice(self.head * self.size, (self.head + 1) * self.size)

    def _wt(self, W: np.ndarray) -> np.ndarray:
        """The head's slice of W as a C-ordered [hs, C] copy: "out_in"'s view W[:, cols].T has strides
        numpy's matmul cannot give BLAS ([4, 3072] bytes at GPT-2 width: 65x slower than the copy)."""
        return np.ascontiguousarray(W[:, self.cols].T if self.layout == "out_in" else W[self.cols])

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        y_name, w_name, out = self.ins[0], self.ins[1], self.out

        def run(vals: dict[str, np.ndarray]) -> None:
            # The slice copied per call (hs·C numbers, ~20 µs at GPT-2 width): an edit writes W in place.
            vals[out][sel] = _mm(vals[y_name][sel], self._wt(vals[w_name]), exact)  # [R, hs] @ [hs, C] -> [R, C]

        return run

    def cells_read(self, k: int, out_mask: Mask, ctx: OpContext) -> Mask | None:
        if k == 0:
            return np.repeat(_rowany(out_mask)[:, None], self.size, axis=1)
        m = np.zeros(ctx.shape(self.ins[1]), bool)
        cols = out_mask.any(axis=0)  # [C]
        if self.layout == "out_in":
            m[:, self.cols] = cols[:, None]
        else:
            m[self.cols] = cols[None, :]
        return m

    def cells_written(self, masks: list[Mask | None], ctx: OpContext) -> Mask:
        out = np.zeros((ctx.T, ctx.shape(self.out)[1]), bool)
        if masks[0] is not None:
            out |= _rowany(masks[0])[:, None]
        if masks[1] is not None:
            w = masks[1]
            out |= (w[:, self.cols].any(axis=1) if self.layout == "out_in" else w[self.cols].any(axis=0))[None, :]
        return out

    def params(self) -> dict[str, Any]:
        return {"head": self.head, "size": self.size, "layout": self.layout}

    def batched(self, V: Arrays) -> np.ndarray:
        return V[self.ins[0]] @ self._wt(V[self.ins[1]])  # [B, T, hs] @ [hs, C] -> [B, T, C]

    def vjp(self, V: Arrays, g: np.ndarray, G: Arrays) -> None:
        y, W = V[self.ins[0]], V[self.ins[1]]
        acc(G, V, self.ins[0], g @ self._wt(W).T, own=True)  # [B, T, C] @ [C, hs] -> [B, T, hs]
        g2, y2 = g.reshape(-1, g.shape[-1]), y.reshape(-1, y.shape[-1])  # [B·T, C], [B·T, hs]
        gW = np.zeros(W.shape, np.result_type(g, W))
        if self.layout == "out_in":
            gW[:, self.cols] = g2.T @ y2  # [C, B·T] @ [B·T, hs]
        else:
            gW[self.cols] = y2.T @ g2  # [hs, B·T] @ [B·T, C]
        acc(G, V, self.ins[1], gW, own=True)

    def _w(self, c: int, d: int) -> tuple[int, int]:
        j = self.head * self.size + d
        return (c, j) if self.layout == "out_in" else (j, c)

    def text(self, view: SheetView, idx: tuple[int, ...]) -> str:
        t, c = idx
        y, w, off = self.ins[0], self.ins[1], self.head * self.size
        wd = f"{w}[{c}][{off}+d]" if self.layout == "out_in" else f"{w}[{off}+d][{c}]"
        return f"Σ_{{d=0..{self.size - 1}}} {y}[{t}][d] · {wd}"

    def sym_reads(self, view: SheetView, idx: tuple[int, ...], keep_shift: bool) -> list[Key]:
        t, c = idx
        return [k for d in range(self.size) for k in ((self.ins[0], (t, d)), (self.ins[1], self._w(c, d)))]

    def sym_compose(self, vals: list[Any], keep_shift: bool) -> Any:
        return folding.fsum_([folding.mul(vals[2 * i], vals[2 * i + 1]) for i in range(len(vals) // 2)])

    def sheet_formulas(self, shape: Shape, R: Ref, S: Span) -> Iterator[Formula]:
        y, w = self.ins
        T, C = shape(self.out)
        hs = self.size
        for t in range(T):
            row = S(y, (t, 0), (t, hs - 1))
            for c in range(C):
                a, b = self._w(c, 0), self._w(c, hs - 1)
                f = "SUMPRODUCT" if self.layout == "out_in" else "MMULT"
                yield (t, c), f"{f}({row},{S(w, a, b)})"

    def label(self) -> str:
        return self.kind.value
