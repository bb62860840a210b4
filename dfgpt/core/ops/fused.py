"""Fused runs: an op group computed in one call over the same rows, bit for bit each op alone.

A clean read runs LayerNorm's three ops and an attention softmax's three ops on the same rows
with no pin landing between them, so each group shares its row reads and temporaries: the same
operations in the same order as the ops alone, so the same values. (q, k and v, three Linears
over one weight, run as `dfgpt.core.ops.linear.LinearHeads`.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import Kernel, Op
from .causal import _later_of, _mask_later, _visible
from .ln_mean import LNMean
from .ln_out import LNOut
from .ln_var import LNVar
from .softmax import Softmax
from .softmax_max import SoftmaxMax
from .softmax_sum import SoftmaxSum

__all__ = ["LayerNormRows", "SoftmaxRows"]


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


@dataclass(frozen=True)
class SoftmaxRows:
    """An attention softmax's max, sum and output over the same rows in one call, for a read
    that runs all three on the same rows (the engine's clean reads, where no pin can land
    between them): the same operations in the same order as SoftmaxMax, SoftmaxSum and
    Softmax, so the same values bit for bit, with the score row read and exponentiated once."""

    top: SoftmaxMax
    total: SoftmaxSum
    soft: Softmax

    @property
    def parts(self) -> tuple[Op, ...]:
        """The ops this runs, each of which gives the same bits alone."""
        return (self.top, self.total, self.soft)

    @staticmethod
    def fits(ops: list[Any]) -> bool:
        m, s, p = ops
        return (isinstance(m, SoftmaxMax) and isinstance(s, SoftmaxSum) and isinstance(p, Softmax)
                and s.ins[:2] == (m.ins[0], m.out) and p.ins[:3] == (m.ins[0], m.out, s.out)
                and s.ins[2:] == p.ins[3:])

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        parts = [op.kernel(sel, cap, exact) for op in (self.top, self.total, self.soft)]
        s_name, top, total, soft = self.top.ins[0], self.top.out, self.total.out, self.soft.out
        temp = self.total.ins[2] if len(self.total.ins) > 2 else None
        visible, later = _visible(cap)[sel], _later_of(sel, cap)

        def run(vals: dict[str, np.ndarray]) -> None:
            s = vals[s_name]
            if s.ndim != 3:  # the logits' softmax: nothing to share worth a second path
                for part in parts:
                    part(vals)
                return
            sr = s[:, sel]  # [H, R, cap]
            mx = np.maximum.reduce(np.where(visible, sr, -np.inf), axis=-1)  # [H, R]
            vals[top][:, sel] = mx
            mr = mx[..., None]
            z = sr - mr
            np.copyto(z, 0.0, where=sr == mr)  # as _shifted_exp (a masked copy: cheaper than a boolean setitem)
            _mask_later(z, later, -np.inf)
            if temp is not None:
                t = vals[temp]
                if t != 1:
                    z /= t
            np.exp(z, out=z)
            e = np.add.reduce(z, axis=-1)
            vals[total][:, sel] = e
            z /= e[..., None]
            _mask_later(z, later, 0.0)
            vals[soft][:, sel] = z

        return run
