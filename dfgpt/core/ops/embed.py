"""The embedding: a token's `wte` row plus its position's `wpe` row."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import product
from typing import Any, ClassVar

import numpy as np

from .base import Kernel, Mask, Op, Reads
from .context import Key, OpContext, SheetView
from .grads import Arrays, acc, new_slot
from .kind import OpKind
from .masks import _rowany
from .registry import register
from .spreadsheet import Formula, Ref, Shape, Span

__all__ = ['Embed']


@register
@dataclass(frozen=True)
class Embed(Op):
    """emb[t][c] = wte[tokens[t]][c] + wpe[t][c].

    >>> Embed("emb", ("tokens", "wte", "wpe")).row_reads
    ('row', 'whole', 'whole')
    """

    kind: ClassVar[OpKind] = OpKind.EMBED
    row_reads: ClassVar[tuple[Reads, ...]] = ("row", "whole", "whole")
    resident: ClassVar[bool] = True  # the residual stream's start

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        (tok, wte, wpe), out = self.ins, self.out

        def run(vals: dict[str, np.ndarray]) -> None:
            vals[out][sel] = vals[wte][vals[tok][sel]] + vals[wpe][sel]  # [R] -> [R, C]

        return run

    def cells_read(self, k: int, out_mask: Mask, ctx: OpContext) -> Mask | None:
        T = out_mask.shape[0]
        if k == 0:
            return _rowany(out_mask)
        if k == 1:
            m = np.zeros(ctx.shape(self.ins[1]), bool)
            tok = ctx.tokens
            for t in np.flatnonzero(_rowany(out_mask)):
                m[tok[t]] |= out_mask[t]
            return m
        m = np.zeros(ctx.shape(self.ins[2]), bool)
        m[:T] = out_mask
        return m

    def cells_written(self, masks: list[Mask | None], ctx: OpContext) -> Mask:
        T = ctx.T
        out = np.zeros((T, ctx.shape(self.out)[1]), bool)
        tm, wm, pm = masks
        if tm is not None:
            out |= tm[:, None]
        if wm is not None:
            out |= wm[ctx.tokens]
        if pm is not None:
            out |= pm[:T]
        return out

    def batched(self, V: Arrays) -> np.ndarray:
        tok, wte, wpe = (V[n] for n in self.ins)  # [B, T] -> [B, T, C]
        return wte[tok] + wpe[: tok.shape[1]]

    def vjp(self, V: Arrays, g: np.ndarray, G: Arrays) -> None:
        tok, wte, wpe = (V[n] for n in self.ins)
        # Only the rows of the tokens read get a gradient: sum them compactly, then add those rows
        # (the same additions as a full zero array plus add.at, without a vocab-sized temporary).
        rows, inverse = np.unique(tok.reshape(-1), return_inverse=True)
        gr = np.zeros((rows.size, wte.shape[1]), np.result_type(g, wte))
        np.add.at(gr, inverse.reshape(-1), g.reshape(-1, g.shape[-1]))
        have = G.get(self.ins[1])
        if have is not None and have.dtype == gr.dtype:
            have[rows] += gr
        else:
            gw = new_slot(G, self.ins[1], wte.shape, gr.dtype) if have is None else None
            if gw is None:
                gw = np.zeros(wte.shape, gr.dtype)
            else:
                gw.fill(0)
            gw[rows] = gr
            acc(G, V, self.ins[1], gw, own=True)
        gp = np.zeros_like(wpe)
        gp[: tok.shape[1]] = g.sum(axis=0)
        acc(G, V, self.ins[2], gp)

    def text(self, view: SheetView, idx: tuple[int, ...]) -> str:
        n = view.name
        t, c = idx
        tok = int(view.tokens[t])
        return f"{n('wte', (tok, c))} + {n('wpe', (t, c))}"

    def sym_reads(self, view: SheetView, idx: tuple[int, ...], keep_shift: bool) -> list[Key]:
        t, c = idx
        return [("wte", (int(view.tokens[t]), c)), ("wpe", (t, c))]

    def sym_compose(self, vals: list[Any], keep_shift: bool) -> Any:
        return vals[0] + vals[1]

    def sheet_formulas(self, shape: Shape, R: Ref, S: Span) -> Iterator[Formula]:
        tok, wte, wpe = self.ins
        V, C = shape(wte)
        table = S(wte, (0, 0), (V - 1, C - 1))
        for t, c in product(range(shape(self.out)[0]), range(C)):
            yield (t, c), f"INDEX({table},{R(tok, (t,))}+1,{c + 1})+{R(wpe, (t, c))}"

    def label(self) -> str:
        return self.kind.value
