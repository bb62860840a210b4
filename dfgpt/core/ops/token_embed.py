"""The token embedding alone (rotary families have no position table): emb[t][c] = E[tokens[t]][c] · scale."""

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
from .spreadsheet import Formula, Ref, Shape, Span, num_text

__all__ = ["TokenEmbed"]


@register
@dataclass(frozen=True)
class TokenEmbed(Op):
    """emb[t][c] = E[tokens[t]][c] · scale (scale 1, or Gemma's √n_embd in the checkpoint's dtype).

    >>> TokenEmbed("emb", ("tokens", "embed_tokens"), scale=2.0).sym_compose([1.5], keep_shift=False)
    3.0
    """

    scale: float = 1.0
    kind: ClassVar[OpKind] = OpKind.TOKEN_EMBED
    row_reads: ClassVar[tuple[Reads, ...]] = ("row", "whole")
    resident: ClassVar[bool] = True  # the residual stream's start

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        (tok, table), out, scale = self.ins, self.out, self.scale

        def run(vals: dict[str, np.ndarray]) -> None:
            e = vals[table][vals[tok][sel]]  # [R] -> [R, C]
            if scale != 1.0:
                e *= scale  # transformers multiplies by the factor cast to the weights' dtype
            vals[out][sel] = e

        return run

    def cells_read(self, k: int, out_mask: Mask, ctx: OpContext) -> Mask | None:
        if k == 0:
            return _rowany(out_mask)
        m = np.zeros(ctx.shape(self.ins[1]), bool)
        tok = ctx.tokens
        for t in np.flatnonzero(_rowany(out_mask)):
            m[tok[t]] |= out_mask[t]
        return m

    def cells_written(self, masks: list[Mask | None], ctx: OpContext) -> Mask:
        out = np.zeros((ctx.T, ctx.shape(self.out)[1]), bool)
        tm, wm = masks
        if tm is not None:
            out |= tm[:, None]
        if wm is not None:
            out |= wm[ctx.tokens]
        return out

    def params(self) -> dict[str, Any]:
        return {"scale": self.scale}

    def batched(self, V: Arrays) -> np.ndarray:
        tok, table = V[self.ins[0]], V[self.ins[1]]  # [B, T] -> [B, T, C]
        e = table[tok]
        return e * self.scale if self.scale != 1.0 else e

    def vjp(self, V: Arrays, g: np.ndarray, G: Arrays) -> None:
        tok, table = V[self.ins[0]], V[self.ins[1]]
        # Only the rows of the tokens read get a gradient: summed compactly, then added into those rows
        # of one slot (as Embed does: no vocabulary-sized temporary per backward).
        rows, inverse = np.unique(tok.reshape(-1), return_inverse=True)
        gr = np.zeros((rows.size, table.shape[1]), np.result_type(g, table))
        np.add.at(gr, inverse.reshape(-1), g.reshape(-1, g.shape[-1]))
        if self.scale != 1.0:
            gr *= self.scale
        have = G.get(self.ins[1])
        if have is not None and have.dtype == gr.dtype:
            have[rows] += gr
            return
        gt = new_slot(G, self.ins[1], table.shape, gr.dtype) if have is None else None
        if gt is None:
            gt = np.zeros(table.shape, gr.dtype)
        else:
            gt.fill(0)
        gt[rows] = gr
        acc(G, V, self.ins[1], gt, own=True)

    def text(self, view: SheetView, idx: tuple[int, ...]) -> str:
        t, c = idx
        cell = view.name(self.ins[1], (int(view.tokens[t]), c))
        return cell if self.scale == 1.0 else f"{cell} · {self.scale!r}"

    def sym_reads(self, view: SheetView, idx: tuple[int, ...], keep_shift: bool) -> list[Key]:
        t, c = idx
        return [(self.ins[1], (int(view.tokens[t]), c))]

    def sym_compose(self, vals: list[Any], keep_shift: bool) -> Any:
        return vals[0] * self.scale if self.scale != 1.0 else vals[0]

    def sheet_formulas(self, shape: Shape, R: Ref, S: Span) -> Iterator[Formula]:
        tok, table = self.ins
        V, C = shape(table)
        whole = S(table, (0, 0), (V - 1, C - 1))
        scale = "" if self.scale == 1.0 else f"*{num_text(self.scale)}"
        for t, c in product(range(shape(self.out)[0]), range(C)):
            yield (t, c), f"INDEX({whole},{R(tok, (t,))}+1,{c + 1}){scale}"

    def label(self) -> str:
        return self.kind.value
