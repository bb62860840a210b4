"""Linear layers: `x @ W (+ b)`, in either weight layout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import Mask, Op, Reads, _mm, _rowany, _sel

__all__ = ['Linear']


@dataclass(frozen=True)
class Linear(Op):
    """out[t][o] = Σ_i x[t][i] · W[off+o][i] + b[off+o]; heads split o into (head, dim).

    `layout` is how W is stored: "out_in" (W[o][i]) or "in_out" (W[i][o]). With `heads`,
    the output is [H, T, n/H]: q, k and v are three Linears over slices of c_attn.
    """

    n_out: int = 0
    offset: int = 0
    layout: str = "out_in"
    heads: int = 0
    kind: ClassVar[str] = "linear"

    @property
    def row_reads(self) -> tuple[Reads, ...]:  # type: ignore[override]
        return ("row",) + ("whole",) * (len(self.ins) - 1)

    def weight_row(self, idx: tuple[int, ...]) -> tuple[int, int]:
        """(position t, weight output o) of one output cell: q[h][t][d] reads W row offset + h·hs + d."""
        if self.heads:
            h, t, d = idx
            return t, self.offset + h * (self.n_out // self.heads) + d
        t, o = idx
        return t, self.offset + o

    def weight_t(self, ctx: Any) -> np.ndarray:
        """The slice of W as [K, n_out]."""
        W = ctx.values[self.ins[1]]
        sl = slice(self.offset, self.offset + self.n_out)
        return W[sl].T if self.layout == "out_in" else W[:, sl]

    def forward(self, ctx: Any, rows: np.ndarray) -> None:
        vals = ctx.values
        out = vals[self.out]
        sel = _sel(rows)
        W = vals[self.ins[1]]
        off = self.offset
        wt = W[off : off + self.n_out].T if self.layout == "out_in" else W[:, off : off + self.n_out]  # [K, n]
        if not ctx.exact and not self.heads and isinstance(sel, slice):  # a block of rows, batched
            dst = out[sel]  # [R, n]: the product lands in place, no [R, n] temporaries (a 50k-wide logit)
            np.matmul(vals[self.ins[0]][sel], wt, out=dst)  # [R, K] @ [K, n]
            if len(self.ins) > 2:
                dst += vals[self.ins[2]][off : off + self.n_out]
            return
        y = _mm(vals[self.ins[0]][sel], wt, ctx.exact)  # [R, K] @ [K, n] -> [R, n]
        if len(self.ins) > 2:
            y += vals[self.ins[2]][off : off + self.n_out]
        if self.heads:
            out[:, sel, :] = y.reshape(len(rows), self.heads, -1).transpose(1, 0, 2)
        else:
            out[sel] = y

    def _flat(self, m: Mask) -> Mask:
        """[H, T, hs] -> [T, n] for head outputs."""
        return m.transpose(1, 0, 2).reshape(m.shape[1], -1) if self.heads else m

    def _unflat(self, m: Mask) -> Mask:
        return m.reshape(m.shape[0], self.heads, -1).transpose(1, 0, 2) if self.heads else m

    def cells_read(self, k: int, out_mask: Mask, ctx: Any) -> Mask | None:
        m2 = self._flat(out_mask)  # [T, n]
        if k == 0:
            return np.repeat(_rowany(m2)[:, None], ctx.shape(self.ins[0])[1], axis=1)
        cols = m2.any(axis=0)  # [n]
        shape = ctx.shape(self.ins[k])
        m = np.zeros(shape, bool)
        sl = slice(self.offset, self.offset + self.n_out)
        if k == 2:
            m[sl] = cols
        elif self.layout == "out_in":
            m[sl] = cols[:, None]
        else:
            m[:, sl] = cols[None, :]
        return m

    def cells_written(self, masks: list[Mask | None], ctx: Any) -> Mask:
        out = np.zeros((ctx.T, self.n_out), bool)
        sl = slice(self.offset, self.offset + self.n_out)
        for k, m in enumerate(masks):
            if m is None:
                continue
            if k == 0:
                out |= _rowany(m)[:, None]
            elif k == 2:
                out |= m[sl][None, :]
            elif self.layout == "out_in":
                out |= m[sl].any(axis=1)[None, :]
            else:
                out |= m[:, sl].any(axis=0)[None, :]
        return self._unflat(out)

    def params(self) -> dict[str, Any]:
        return {"n_out": self.n_out, "offset": self.offset, "layout": self.layout, "heads": self.heads}
