"""Linear layers: `x @ W (+ b)`, in either weight layout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import Kernel, Mask, Op, Reads, _mm, _n_rows, _rowany

__all__ = ['Linear', 'LinearHeads']


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

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        if self.heads:
            return LinearHeads((self,)).kernel(sel, cap, exact)
        x_name, w_name, out_name = self.ins[0], self.ins[1], self.out
        b_name = self.ins[2] if len(self.ins) > 2 else None
        cols = slice(self.offset, self.offset + self.n_out)
        out_in = self.layout == "out_in"
        if not exact and isinstance(sel, slice):  # a block of rows, batched

            def batched(vals: dict[str, np.ndarray]) -> None:
                W = vals[w_name]  # looked up per call: an edit may have copied it
                dst = vals[out_name][sel]  # [R, n]: the product lands in place, no temporary (a 50k-wide logit)
                np.matmul(vals[x_name][sel], W[cols].T if out_in else W[:, cols], out=dst)  # [R, K] @ [K, n]
                if b_name is not None:
                    dst += vals[b_name][cols]

            return batched

        in_place = isinstance(sel, slice)
        # The weight's [K, n] view and the bias slice, made again only when the array is another
        # one (an edit copies it): one tuple, swapped whole, so a reader never pairs them wrongly.
        # Inline rather than a helper object: a call per use costs 1% of a `sort` forward.
        memo: list[Any] = [(None, None), (None, None)]

        def run(vals: dict[str, np.ndarray]) -> None:
            W, wt = memo[0]
            if W is not vals[w_name]:
                W = vals[w_name]
                wt = W[cols].T if out_in else W[:, cols]
                memo[0] = (W, wt)
            y = _mm(vals[x_name][sel], wt, exact)  # [R, K] @ [K, n] -> [R, n]
            if b_name is None:
                vals[out_name][sel] = y
                return
            b, bc = memo[1]
            if b is not vals[b_name]:
                b = vals[b_name]
                bc = b[cols]
                memo[1] = (b, bc)
            if in_place:
                np.add(y, bc, out=vals[out_name][sel])  # the bias added on the way in
            else:
                y += bc
                vals[out_name][sel] = y

        return run

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


@dataclass(frozen=True)
class LinearHeads:
    """Head-split Linears that read the same rows of the same input through consecutive, equally
    wide slices of one weight (q, k and v of `c_attn`), as one numpy call: the slices stacked as
    [m, K, n] views with the strides each slice has alone, so numpy's matmul makes, per core, the
    very BLAS call each Linear makes alone, with the same operands (the same bits by construction).
    A clean read runs them so; alone, a Linear is a `LinearHeads` of one."""

    linears: tuple[Linear, ...]

    @property
    def parts(self) -> tuple[Op, ...]:
        """The ops this runs, each of which gives the same bits alone."""
        return self.linears

    @staticmethod
    def fits(ops: list[Any]) -> bool:
        first = ops[0]
        if not (isinstance(first, Linear) and first.heads):
            return False
        return all(isinstance(op, Linear) and op.ins == first.ins and op.heads == first.heads
                   and op.layout == first.layout and op.n_out == first.n_out
                   and op.offset == first.offset + i * first.n_out for i, op in enumerate(ops))

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        first = self.linears[0]
        x_name, w_name = first.ins[0], first.ins[1]
        b_name = first.ins[2] if len(first.ins) > 2 else None
        m, n, heads = len(self.linears), first.n_out, first.heads
        cols = slice(first.offset, first.offset + m * n)
        outs, out_in, R = [op.out for op in self.linears], first.layout == "out_in", _n_rows(sel)
        stacked = exact and R != 1  # as _mm: one [1, K] @ [K, n] core per row
        in_place = isinstance(sel, slice)

        # The weight as [m, K, n] (stacked: [m, 1, K, n]) and the bias as [m, H, 1, hs], made again
        # only when the array is another one (an edit copies it); one tuple each, swapped whole.
        memo: list[Any] = [(None, None), (None, None)]

        def run(vals: dict[str, np.ndarray]) -> None:
            W, wt = memo[0]
            if W is not vals[w_name]:
                W = vals[w_name]
                if out_in:  # W[off + j·n + o][i] -> [m, K, n], each [K, n] the view W[off:off+n].T
                    wt = W[cols].reshape(m, n, -1).transpose(0, 2, 1)
                else:  # W[i][off + j·n + o] -> [m, K, n], each the view W[:, off:off+n]
                    wt = W[:, cols].reshape(W.shape[0], m, n).transpose(1, 0, 2)
                if stacked:
                    wt = wt[:, None, :, :]
                memo[0] = (W, wt)
            x = vals[x_name][sel]  # [R, K]
            if stacked:
                y = np.matmul(x[None, :, None, :], wt)[:, :, 0, :]  # [1, R, 1, K] @ [m, 1, K, n] -> [m, R, n]
            else:
                y = np.matmul(x[None], wt)  # [1, R, K] @ [m, K, n] -> [m, R, n]
            yh = y.reshape(m, R, heads, -1).transpose(0, 2, 1, 3)  # -> [m, H, R, hs]
            if b_name is None:
                for j, out in enumerate(outs):
                    vals[out][:, sel, :] = yh[j]
                return
            b, bh = memo[1]
            if b is not vals[b_name]:
                b = vals[b_name]
                bh = b[cols].reshape(m, heads, 1, -1)  # [m, H, 1, hs]
                memo[1] = (b, bh)
            for j, out in enumerate(outs):  # the bias added on the way in: y + b, once per cell
                if in_place:
                    np.add(yh[j], bh[j], out=vals[out][:, sel, :])
                else:
                    vals[out][:, sel, :] = yh[j] + bh[j]

        return run
