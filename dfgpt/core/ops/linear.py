"""Linear layers: `x @ W (+ b)`, in either weight layout; `LinearHeads`, q, k and v in one call."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from . import folding
from .base import Kernel, Mask, Op, Reads
from .context import Key, OpContext, RowContext, SheetView
from .grads import Arrays, acc, new_slot
from .kind import OpKind
from .masks import _rowany
from .matmul import _mm
from .registry import register
from .selection import _n_rows
from .spreadsheet import Formula, Ref, Shape, Span

_NARROW = 8192  # outputs at most this wide take the W @ xᵀ product in fast mode (see Linear.kernel)

__all__ = ['Linear', 'LinearHeads']


@functools.lru_cache(maxsize=32)
def _every_cell(shape: tuple[int, ...]) -> Mask:
    """A mask of every cell of a weight, shared and read-only: the blocks' weights repeat a few shapes."""
    m = np.ones(shape, bool)
    m.flags.writeable = False
    return m


@register
@dataclass(frozen=True)
class Linear(Op):
    """out[t][o] = Σ_i x[t][i] · W[off+o][i] + b[off+o]; heads split o into (head, dim).

    `layout` is how W is stored: "out_in" (W[o][i]) or "in_out" (W[i][o]). With `heads`,
    the output is [H, T, n/H]: q, k and v are three Linears over slices of c_attn. With a
    `stride`, head h reads W rows offset + h·stride + d instead (a fused QKV laid out per head,
    as GPT-NeoX's query_key_value: q, k and v of a head side by side).

    >>> Linear("q", ("x", "w"), n_out=4, offset=2, heads=2, stride=6).weight_row((1, 0, 1))
    (0, 9)
    """

    n_out: int = 0
    offset: int = 0
    layout: str = "out_in"
    heads: int = 0
    stride: int = 0
    kind: ClassVar[OpKind] = OpKind.LINEAR
    resident: ClassVar[bool] = False
    paired: ClassVar[bool] = True

    @property
    def row_reads(self) -> tuple[Reads, ...]:  # type: ignore[override]
        return ("row",) + ("whole",) * (len(self.ins) - 1)

    def weight_row(self, idx: tuple[int, ...]) -> tuple[int, int]:
        """(position t, weight output o) of one output cell: q[h][t][d] reads W row offset + h·hs + d."""
        if self.heads:
            h, t, d = idx
            return t, self.offset + h * (self.stride or self.n_out // self.heads) + d
        t, o = idx
        return t, self.offset + o

    def cols(self) -> Any:
        """The weight rows (out_in) or columns (in_out) this Linear reads, in output order: a slice,
        or with a stride the index array of each head's rows."""
        if not self.stride:
            return slice(self.offset, self.offset + self.n_out)
        hs = self.n_out // self.heads
        return (self.offset + np.arange(self.heads)[:, None] * self.stride + np.arange(hs)[None, :]).ravel()

    def weight_t(self, ctx: RowContext) -> np.ndarray:
        """The slice of W as [K, n_out]."""
        W = ctx.values[self.ins[1]]
        sl = self.cols()
        return W[sl].T if self.layout == "out_in" else W[:, sl]

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        if self.heads:
            return LinearHeads((self,)).kernel(sel, cap, exact)
        x_name, w_name, out_name = self.ins[0], self.ins[1], self.out
        b_name = self.ins[2] if len(self.ins) > 2 else None
        cols = self.cols()
        out_in = self.layout == "out_in"
        if not exact and isinstance(sel, slice):  # a block of rows, batched
            # OpenBLAS's W @ xᵀ (its weight read row by row) runs 10-17% faster than x @ Wᵀ at block widths
            # (576-3072 wide, 64 rows: measured), the transposed copy back costing little; a vocabulary-wide
            # product lands in place instead (no 50k-wide temporary, and no gain there).
            narrow = out_in and self.n_out <= _NARROW

            def batched(vals: dict[str, np.ndarray]) -> None:
                W = vals[w_name]  # looked up per call: an edit may have copied it
                dst = vals[out_name][sel]  # [R, n]
                if narrow:
                    dst[...] = np.matmul(W[cols], vals[x_name][sel].T).T  # [n, K] @ [K, R] -> [R, n]
                else:
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

    def cells_read(self, k: int, out_mask: Mask, ctx: OpContext) -> Mask | None:
        m2 = self._flat(out_mask)  # [T, n]
        if k == 0:
            return np.repeat(_rowany(m2)[:, None], ctx.shape(self.ins[0])[1], axis=1)
        cols = m2.any(axis=0)  # [n]
        shape = ctx.shape(self.ins[k])
        if k == 1 and cols.all() and self.n_out == (shape[0] if self.layout == "out_in" else shape[1]):
            return _every_cell(shape)  # a cone through every output reads the whole weight (GPT-2: 85M cells)
        m = np.zeros(shape, bool)
        sl = self.cols()
        if k == 2:
            m[sl] = cols
        elif self.layout == "out_in":  # the rows read only: the rest of a 38.6M-cell lm_head mask stays untouched
            picked = np.flatnonzero(cols)
            m[sl.start + picked if isinstance(sl, slice) else sl[picked]] = True
        else:
            m[:, sl] = cols[None, :]
        return m

    def cells_written(self, masks: list[Mask | None], ctx: OpContext) -> Mask:
        out = np.zeros((ctx.T, self.n_out), bool)
        sl = self.cols()
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
        got = {"n_out": self.n_out, "offset": self.offset, "layout": self.layout, "heads": self.heads}
        return got | ({"stride": self.stride} if self.stride else {})

    # -- the autodiff ------------------------------------------------------------------------------
    def _wt(self, W: np.ndarray) -> np.ndarray:
        """The slice of W that this Linear reads, as [K, n_out]."""
        sl = self.cols()
        return W[sl].T if self.layout == "out_in" else W[:, sl]

    def _bias_heads(self, V: Arrays, y: np.ndarray) -> np.ndarray:
        """The product y [B, T, n] plus the bias, split into heads when it has them."""
        if len(self.ins) > 2:
            y = y + V[self.ins[2]][self.cols()]
        H = self.heads
        return y.reshape(*y.shape[:2], H, -1).transpose(0, 2, 1, 3) if H else y  # -> [B, H, T, n/H]

    def batched(self, V: Arrays) -> np.ndarray:
        x = V[self.ins[0]]  # [B, T, K] @ [K, n] -> [B, T, n] (or [B, H, T, n/H] with heads)
        return self._bias_heads(V, x @ self._wt(V[self.ins[1]]))

    def batched_rows(self, V: Arrays) -> np.ndarray:
        """`batched` as one [B·T, K] @ [K, n] product instead of B small ones (matmul loops a 3-D
        operand's batch): twice as fast on 729 one-row sequences, but its sums may round apart
        from `batched`'s, so training (bit for bit on its recorded machine) keeps `batched`."""
        x, Wt = V[self.ins[0]], self._wt(V[self.ins[1]])
        return self._bias_heads(V, (x.reshape(-1, x.shape[-1]) @ Wt).reshape(*x.shape[:-1], Wt.shape[1]))

    def vjp(self, V: Arrays, g: np.ndarray, G: Arrays) -> None:
        ins = self.ins
        x, W = V[ins[0]], V[ins[1]]
        if self.heads:
            g = g.transpose(0, 2, 1, 3).reshape(g.shape[0], g.shape[2], -1)  # [B, H, T, hs] -> [B, T, n]
        Wt = self._wt(W)
        g2, x2 = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])  # [B·T, n], [B·T, K]
        live = np.flatnonzero(g2.any(axis=1))
        out_in = self.layout == "out_in"
        if live.size * 2 < g2.shape[0]:  # one logit's gradient is one row: skip the rows of zeros
            gx = np.zeros((g2.shape[0], Wt.shape[0]), np.result_type(g2, Wt))
            gx[live] = g2[live] @ Wt.T  # [R, n] @ [n, K] -> [R, K]
            acc(G, V, ins[0], gx.reshape(*g.shape[:-1], -1), own=True)
            g2, x2 = g2[live], x2[live]
        else:
            acc(G, V, ins[0], g @ Wt.T, own=True)  # [B, T, n] @ [n, K] -> [B, T, K]
        # The weight's own layout straight from the product, C order: reductions over G (the
        # training's gradient norm) follow memory order, so no transposed view may stand in for it.
        a, b = (g2.T, x2) if out_in else (x2.T, g2)  # [n, R] @ [R, K] -> [n, K], or [K, R] @ [R, n] -> [K, n]
        sl = self.cols()
        dtype = np.result_type(a, b, W)
        if self.offset == 0 and not self.stride and self.n_out == (W.shape[0] if out_in else W.shape[1]):
            slot = new_slot(G, ins[1], W.shape, dtype) if np.result_type(a, b) == dtype else None
            if slot is not None:
                G[ins[1]] = np.matmul(a, b, out=slot)
            else:
                acc(G, V, ins[1], a @ b, own=True)
        else:  # q, k, v: one slice each of c_attn, added into that slice alone
            gWs = a @ b
            gW = G.get(ins[1])
            if gW is None:
                gW = new_slot(G, ins[1], W.shape, dtype)
                if gW is None:
                    gW = np.zeros(W.shape, dtype)
                else:
                    gW.fill(0)
                G[ins[1]] = gW
            elif gW.dtype != dtype:
                gW = G[ins[1]] = gW.astype(np.result_type(gW, dtype))
            if out_in:
                gW[sl] += gWs
            else:
                gW[:, sl] += gWs
        if len(ins) > 2:
            gb = np.zeros_like(V[ins[2]])
            gb[sl] = g.reshape(-1, g.shape[-1]).sum(axis=0)
            acc(G, V, ins[2], gb)

    # -- formulas ----------------------------------------------------------------------------------
    def text(self, view: SheetView, idx: tuple[int, ...]) -> str:
        ins, n = self.ins, view.name
        t, o = self.weight_row(idx)
        K = view.dims(ins[0])[1]
        w = n(ins[1], (o, 0))[: -len("[0]")] + "[i]" if self.layout == "out_in" else f"{ins[1]}[i][{o}]"
        s = f"Σ_{{i=0..{K - 1}}} {ins[0]}[{t}][i] · {w}"
        return s + (f" + {ins[2]}[{o}]" if len(ins) > 2 else "")

    def sym_reads(self, view: SheetView, idx: tuple[int, ...], keep_shift: bool) -> list[Key]:
        ins = self.ins
        t, o = self.weight_row(idx)
        K = view.dims(ins[0])[1]
        w = [(ins[1], (o, i) if self.layout == "out_in" else (i, o)) for i in range(K)]
        out = [k for i in range(K) for k in ((ins[0], (t, i)), w[i])]
        return out + ([(ins[2], (o,))] if len(ins) > 2 else [])

    def sym_compose(self, vals: list[Any], keep_shift: bool) -> Any:
        n = len(vals) // 2
        terms = [folding.mul(vals[2 * i], vals[2 * i + 1]) for i in range(n)]
        return folding.fsum_(terms + vals[2 * n :])

    def sheet_formulas(self, shape: Shape, R: Ref, S: Span) -> Iterator[Formula]:
        x, w = self.ins[:2]
        b = self.ins[2] if len(self.ins) > 2 else None
        T, K = shape(x)
        n, heads = self.n_out, self.heads
        hs = n // heads if heads else n
        sl = self.cols()
        rows = list(range(sl.start, sl.stop)) if isinstance(sl, slice) else sl.tolist()
        for t in range(T):
            row = S(x, (t, 0), (t, K - 1))
            for o in range(n):
                j = rows[o]
                if self.layout == "out_in":
                    f = f"SUMPRODUCT({row},{S(w, (j, 0), (j, K - 1))})"
                else:
                    f = f"MMULT({row},{S(w, (0, j), (K - 1, j))})"
                if b is not None:
                    f += f"+{R(b, (j,))}"
                yield ((o // hs, t, o % hs) if heads else (t, o)), f

    def label(self) -> str:
        return self.kind.value


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
        return all(isinstance(op, Linear) and op.ins == first.ins and op.heads == first.heads and not op.stride
                   and op.layout == first.layout and op.n_out == first.n_out
                   and op.offset == first.offset + i * first.n_out for i, op in enumerate(ops))

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        first = self.linears[0]
        x_name, w_name = first.ins[0], first.ins[1]
        b_name = first.ins[2] if len(first.ins) > 2 else None
        m, n, heads = len(self.linears), first.n_out, first.heads
        cols = slice(first.offset, first.offset + m * n) if not first.stride else first.cols()  # strided: one alone
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
