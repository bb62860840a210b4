"""LayerNorm as three ops: the mean, the (biased) variance and the normalised, scaled output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import Mask, Op, Reads, _rowany, _sel

__all__ = ['LNMean', 'LNOut', 'LNVar', 'LayerNormRows']


@dataclass(frozen=True)
class LNMean(Op):
    """mean[t] = Σ_c x[t][c] / C."""

    kind: ClassVar[str] = "ln_mean"
    row_reads: ClassVar[tuple[Reads, ...]] = ("row",)

    def forward(self, ctx: Any, rows: np.ndarray) -> None:
        sel = _sel(rows)
        x = ctx.values[self.ins[0]][sel]  # [R, C] -> [R]
        ctx.values[self.out][sel] = np.add.reduce(x, axis=-1) / x.shape[-1]

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
        sel = _sel(rows)
        x, mean = (ctx.values[n][sel] for n in self.ins)  # [R, C], [R] -> [R]
        d = x - mean[:, None]
        np.multiply(d, d, out=d)
        ctx.values[self.out][sel] = np.add.reduce(d, axis=-1) / x.shape[-1]

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
        sel = _sel(rows)
        vals = ctx.values
        x, mean, var = (vals[n][sel] for n in self.ins[:3])  # [R, C], [R], [R]
        # In place, the same operations in the same order: (x - mean) / √(var + eps) · g + b.
        y = vals[self.out][sel] if isinstance(sel, slice) else np.empty_like(x)
        np.subtract(x, mean[:, None], out=y)
        y /= np.sqrt(var + self.eps)[:, None]
        y *= vals[self.ins[3]]
        if len(self.ins) > 4:
            y += vals[self.ins[4]]
        if not isinstance(sel, slice):
            vals[self.out][sel] = y  # -> [R, C]

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


@dataclass(frozen=True)
class LayerNormRows:
    """The three LayerNorm ops over the same rows in one call, for a read that runs all three
    on the same rows (the engine's clean reads, where no pin can land between them): the same
    operations in the same order as LNMean, LNVar and LNOut, so the same values bit for bit,
    with the row read once and `x - mean` computed once."""

    mean: LNMean
    var: LNVar
    out: LNOut

    @staticmethod
    def fits(ops: list[Any]) -> bool:
        m, v, o = ops
        return (isinstance(m, LNMean) and isinstance(v, LNVar) and isinstance(o, LNOut)
                and v.ins == (m.ins[0], m.out) and o.ins[:3] == (m.ins[0], m.out, v.out))

    def forward(self, ctx: Any, rows: np.ndarray) -> None:
        sel = _sel(rows)
        vals = ctx.values
        x = vals[self.mean.ins[0]][sel]  # [R, C]
        C = x.shape[-1]
        mean = np.add.reduce(x, axis=-1) / C
        vals[self.mean.out][sel] = mean
        d = x - mean[:, None]
        var = np.add.reduce(d * d, axis=-1) / C
        vals[self.var.out][sel] = var
        o = self.out
        d /= np.sqrt(var + o.eps)[:, None]
        d *= vals[o.ins[3]]
        if len(o.ins) > 4:
            d += vals[o.ins[4]]
        vals[o.out][sel] = d
