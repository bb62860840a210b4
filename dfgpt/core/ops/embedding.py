"""The embedding: a token's `wte` row plus its position's `wpe` row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import Kernel, Mask, Op, Reads, _rowany

__all__ = ['Embed']


@dataclass(frozen=True)
class Embed(Op):
    """emb[t][c] = wte[tokens[t]][c] + wpe[t][c]."""

    kind: ClassVar[str] = "embed"
    row_reads: ClassVar[tuple[Reads, ...]] = ("row", "whole", "whole")

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        (tok, wte, wpe), out = self.ins, self.out

        def run(vals: dict[str, np.ndarray]) -> None:
            vals[out][sel] = vals[wte][vals[tok][sel]] + vals[wpe][sel]  # [R] -> [R, C]

        return run

    def cells_read(self, k: int, out_mask: Mask, ctx: Any) -> Mask | None:
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

    def cells_written(self, masks: list[Mask | None], ctx: Any) -> Mask:
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
