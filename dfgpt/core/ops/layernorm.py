"""LayerNorm as three ops: the mean, the (biased) variance and the normalised, scaled output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import Mask, Op, Reads, _rowany

__all__ = ['LNMean', 'LNOut', 'LNVar']


@dataclass(frozen=True)
class LNMean(Op):
    """mean[t] = Σ_c x[t][c] / C."""

    kind: ClassVar[str] = "ln_mean"
    row_reads: ClassVar[tuple[Reads, ...]] = ("row",)

    def forward(self, ctx: Any, rows: np.ndarray) -> None:
        x = ctx.values[self.ins[0]][rows]  # [R, C] -> [R]
        ctx.values[self.out][rows] = x.sum(axis=-1) / x.shape[-1]

    def cells_read(self, k: int, out_mask: Mask, ctx: Any) -> Mask | None:
        return np.repeat(out_mask[:, None], ctx.shape(self.ins[0])[1], axis=1)

    def cells_written(self, masks: list[Mask | None], ctx: Any) -> Mask:
        return _rowany(masks[0]) if masks[0] is not None else np.zeros(ctx.T, bool)


@dataclass(frozen=True)
class LNVar(Op):
    """var[t] = Σ_c (x[t][c] - mean[t])² / C (the biased, population variance)."""

    kind: ClassVar[str] = "ln_var"
    row_reads: ClassVar[tuple[Reads, ...]] = ("row", "row")

    def forward(self, ctx: Any, rows: np.ndarray) -> None:
        x, mean = (ctx.values[n][rows] for n in self.ins)  # [R, C], [R] -> [R]
        d = x - mean[:, None]
        ctx.values[self.out][rows] = (d * d).sum(axis=-1) / x.shape[-1]

    def cells_read(self, k: int, out_mask: Mask, ctx: Any) -> Mask | None:
        if k == 1:
            return out_mask.copy()
        return np.repeat(out_mask[:, None], ctx.shape(self.ins[0])[1], axis=1)

    def cells_written(self, masks: list[Mask | None], ctx: Any) -> Mask:
        out = np.zeros(ctx.T, bool)
        if masks[0] is not None:
            out |= _rowany(masks[0])
        if masks[1] is not None:
            out |= masks[1]
        return out


@dataclass(frozen=True)
class LNOut(Op):
    """out[t][c] = (x[t][c] - mean[t]) / √(var[t] + eps) · g[c] + b[c]."""

    eps: float = 1e-5
    kind: ClassVar[str] = "ln_out"

    @property
    def row_reads(self) -> tuple[Reads, ...]:  # type: ignore[override]
        return ("row", "row", "row") + ("whole",) * (len(self.ins) - 3)

    def forward(self, ctx: Any, rows: np.ndarray) -> None:
        x, mean, var = (ctx.values[n][rows] for n in self.ins[:3])  # [R, C], [R], [R]
        y = (x - mean[:, None]) / np.sqrt(var + self.eps)[:, None]
        y = y * ctx.values[self.ins[3]]
        if len(self.ins) > 4:
            y = y + ctx.values[self.ins[4]]
        ctx.values[self.out][rows] = y  # -> [R, C]

    def cells_read(self, k: int, out_mask: Mask, ctx: Any) -> Mask | None:
        if k == 0:
            return out_mask.copy()
        if k in (1, 2):
            return _rowany(out_mask)
        return out_mask.any(axis=0)

    def cells_written(self, masks: list[Mask | None], ctx: Any) -> Mask:
        out = np.zeros((ctx.T, ctx.shape(self.out)[1]), bool)
        for k, m in enumerate(masks):
            if m is None:
                continue
            if k == 0:
                out |= m
            elif k in (1, 2):
                out |= m[:, None]
            else:
                out |= m[None, :]
        return out

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps}
