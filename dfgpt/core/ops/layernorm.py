"""LayerNorm as three ops: the mean, the (biased) variance and the normalised, scaled output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import Kernel, Mask, Op, Reads, _rowany

__all__ = ['LNMean', 'LNOut', 'LNVar', 'LayerNormRows']


@dataclass(frozen=True)
class LNMean(Op):
    """mean[t] = Σ_c x[t][c] / C."""

    kind: ClassVar[str] = "ln_mean"
    row_reads: ClassVar[tuple[Reads, ...]] = ("row",)

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        x_name, out = self.ins[0], self.out

        def run(vals: dict[str, np.ndarray]) -> None:
            x = vals[x_name][sel]  # [R, C] -> [R]
            vals[out][sel] = np.add.reduce(x, axis=-1) / x.shape[-1]

        return run

    def cells_read(self, k: int, out_mask: Mask, ctx: Any) -> Mask | None:
        return np.repeat(out_mask[:, None], ctx.shape(self.ins[0])[1], axis=1)

    def cells_written(self, masks: list[Mask | None], ctx: Any) -> Mask:
        return _rowany(masks[0]) if masks[0] is not None else np.zeros(ctx.T, bool)


@dataclass(frozen=True)
class LNVar(Op):
    """var[t] = Σ_c (x[t][c] - mean[t])² / C (the biased, population variance)."""

    kind: ClassVar[str] = "ln_var"
    row_reads: ClassVar[tuple[Reads, ...]] = ("row", "row")

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        (x_name, mean_name), out = self.ins, self.out

        def run(vals: dict[str, np.ndarray]) -> None:
            x, mean = vals[x_name][sel], vals[mean_name][sel]  # [R, C], [R] -> [R]
            d = x - mean[:, None]
            np.multiply(d, d, out=d)
            vals[out][sel] = np.add.reduce(d, axis=-1) / x.shape[-1]

        return run

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

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        x_name, mean_name, var_name, g_name = self.ins[:4]
        b_name = self.ins[4] if len(self.ins) > 4 else None
        out, eps, in_place = self.out, self.eps, isinstance(sel, slice)

        def run(vals: dict[str, np.ndarray]) -> None:
            x, mean, var = vals[x_name][sel], vals[mean_name][sel], vals[var_name][sel]  # [R, C], [R], [R]
            # In place, the same operations in the same order: (x - mean) / √(var + eps) · g + b.
            y = vals[out][sel] if in_place else np.empty_like(x)
            np.subtract(x, mean[:, None], out=y)
            y /= np.sqrt(var + eps)[:, None]
            y *= vals[g_name]
            if b_name is not None:
                y += vals[b_name]
            if not in_place:
                vals[out][sel] = y  # -> [R, C]

        return run

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

    @property
    def parts(self) -> tuple[Op, ...]:
        """The ops this runs, each of which gives the same bits alone."""
        return (self.mean, self.var, self.out)

    @staticmethod
    def fits(ops: list[Any]) -> bool:
        m, v, o = ops
        return (isinstance(m, LNMean) and isinstance(v, LNVar) and isinstance(o, LNOut)
                and v.ins == (m.ins[0], m.out) and o.ins[:3] == (m.ins[0], m.out, v.out))

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        x_name, mean_out, var_out = self.mean.ins[0], self.mean.out, self.var.out
        o = self.out
        g_name, b_name = o.ins[3], (o.ins[4] if len(o.ins) > 4 else None)
        out, eps, in_place = o.out, o.eps, isinstance(sel, slice)

        def run(vals: dict[str, np.ndarray]) -> None:
            x = vals[x_name][sel]  # [R, C]
            C = x.shape[-1]
            if in_place:  # each quotient straight into its rows: the same division, no copy
                mean = np.divide(np.add.reduce(x, axis=-1), C, out=vals[mean_out][sel])
            else:
                mean = np.add.reduce(x, axis=-1) / C
                vals[mean_out][sel] = mean
            # x - mean straight into the output rows (LNOut's in-place steps, in its order)
            d = vals[out][sel] if in_place else np.empty_like(x)
            np.subtract(x, mean[:, None], out=d)
            if in_place:
                var = np.divide(np.add.reduce(d * d, axis=-1), C, out=vals[var_out][sel])
            else:
                var = np.add.reduce(d * d, axis=-1) / C
                vals[var_out][sel] = var
            sd = var + eps
            d /= np.sqrt(sd, out=sd)[:, None]
            d *= vals[g_name]
            if b_name is not None:
                d += vals[b_name]
            if not in_place:
                vals[out][sel] = d

        return run
