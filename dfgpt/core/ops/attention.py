"""Causal self-attention as ops: scores, the softmax's max and sum, the softmax, the weighted values."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import Kernel, Mask, Op, Reads, _last_row, _later_of, _mask_later, _mm, _visible

__all__ = ['Score', 'Softmax', 'SoftmaxMax', 'SoftmaxRows', 'SoftmaxSum', 'Weighted']


def _causal(T: int) -> Mask:
    return np.tril(np.ones((T, T), bool))


@dataclass(frozen=True)
class Score(Op):
    """score[h][t][s] = Σ_d q[h][t][d] · k[h][s][d] / √hs for s ≤ t; -inf (masked) for s > t."""

    kind: ClassVar[str] = "score"
    masked: ClassVar[float] = -np.inf
    row_reads: ClassVar[tuple[Reads, ...]] = ("row", "prefix")

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        (q_name, k_name), out_name = self.ins, self.out
        width = cap if exact else _last_row(sel) + 1
        later = _later_of(sel, width)  # [R, width]: keys past each query

        def run(vals: dict[str, np.ndarray]) -> None:
            q, k = vals[q_name], vals[k_name]  # [H, cap, hs]
            s = _mm(q[:, sel], k[:, :width].transpose(0, 2, 1), exact)  # -> [H, R, width]
            s *= 1.0 / math.sqrt(q.shape[-1])  # a Python float (as np.sqrt's, bit for bit): float32 stays float32
            _mask_later(s, later, -np.inf)
            out = vals[out_name]
            out[:, sel, :width] = s
            if width < out.shape[-1]:
                out[:, sel, width:] = -np.inf

        return run

    def cells_read(self, k: int, out_mask: Mask, ctx: Any) -> Mask | None:
        m = out_mask & _causal(ctx.T)
        hs = ctx.shape(self.ins[k])[2]
        axis = 2 if k == 0 else 1  # q reads rows t, k reads rows s
        return np.repeat(m.any(axis=axis)[:, :, None], hs, axis=2)

    def cells_written(self, masks: list[Mask | None], ctx: Any) -> Mask:
        H, T = ctx.shape(self.out)[:2]
        out = np.zeros((H, T, T), bool)
        if masks[0] is not None:
            out |= masks[0].any(axis=2)[:, :, None]
        if masks[1] is not None:
            out |= masks[1].any(axis=2)[:, None, :]
        return out & _causal(T)


def _shifted_exp(vals: dict[str, np.ndarray], score: str, top: str, temp: str | None, sel: Any,
                 later: Any) -> np.ndarray:
    """exp((score - max) / τ) for rows `sel`: [H, R, cap] for attention (`later` from `_later_of`),
    [R, V] for logits."""
    s, mx = vals[score], vals[top]
    if s.ndim == 3:
        sr, mr = s[:, sel], mx[:, sel][..., None]
    else:
        sr, mr = s[sel], mx[sel][:, None]
    # The maximum is exp(0) even when it is infinite (inf - inf would be nan): a softmax over
    # one key stays 1 however large its score, as the cone's "cannot matter" claims.
    z = sr - mr
    z[sr == mr] = 0.0
    if s.ndim == 3:
        _mask_later(z, later, -np.inf)  # the causal mask
    if temp is not None:
        t = vals[temp]
        if t == 0:  # greedy: exp gives one-hot on the first largest entry (ties to the lowest id)
            return greedy(z)
        if t != 1:  # x / 1 is x, bit for bit
            z /= t
    np.exp(z, out=z)
    return z


def greedy(z: np.ndarray) -> np.ndarray:
    """The temperature-0 softmax numerator: 1 at the first largest entry of each row, 0 elsewhere.

    The limit τ → 0+ of exp(z / τ) / Σ, except that a tie goes to the lowest index (the limit
    would split it), so a temperature-0 sheet's `prob` is exactly what greedy decoding picks.
    [..., V] -> [..., V]
    """
    out = np.zeros_like(z)
    np.put_along_axis(out, np.argmax(z, axis=-1)[..., None], 1.0, axis=-1)
    return out


def _read_row_keys(out_mask: Mask, T: int) -> Mask:
    """[H, T] rows -> [H, T, T] the unmasked keys of each selected row."""
    return out_mask[:, :, None] & _causal(T)


@dataclass(frozen=True)
class SoftmaxMax(Op):
    """score_max[h][t] = max_{s ≤ t} score[h][t][s]."""

    kind: ClassVar[str] = "softmax_max"
    row_reads: ClassVar[tuple[Reads, ...]] = ("row",)

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        s_name, out = self.ins[0], self.out
        visible = _visible(cap)[sel]  # [R, cap], for attention's [H, cap, cap] scores

        def run(vals: dict[str, np.ndarray]) -> None:
            s = vals[s_name]  # [.., cap, cap] -> [.., R]
            if s.ndim == 3:
                # Mask by structure, not by the stored -inf: a pinned masked entry must stay unread.
                vals[out][:, sel] = np.maximum.reduce(np.where(visible, s[:, sel], -np.inf), axis=-1)
            else:
                vals[out][sel] = s[sel].max(axis=-1)

        return run

    def cells_read(self, k: int, out_mask: Mask, ctx: Any) -> Mask | None:
        if out_mask.ndim == 2:
            return _read_row_keys(out_mask, ctx.T)
        return np.repeat(out_mask[:, None], ctx.shape(self.ins[0])[1], axis=1)

    def cells_written(self, masks: list[Mask | None], ctx: Any) -> Mask:
        m = masks[0]
        if m is None:
            return np.zeros(ctx.shape(self.out), bool)
        return m.any(axis=-1)


@dataclass(frozen=True)
class SoftmaxSum(Op):
    """exp_sum[h][t] = Σ_{s ≤ t} exp((score[h][t][s] - score_max[h][t]) / τ)."""

    kind: ClassVar[str] = "softmax_sum"

    @property
    def row_reads(self) -> tuple[Reads, ...]:  # type: ignore[override]
        return ("row", "row") + ("whole",) * (len(self.ins) - 2)

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        s_name, top, out = self.ins[0], self.ins[1], self.out
        temp = self.ins[2] if len(self.ins) > 2 else None
        later = _later_of(sel, cap)

        def run(vals: dict[str, np.ndarray]) -> None:
            e = np.add.reduce(_shifted_exp(vals, s_name, top, temp, sel, later), axis=-1)
            if e.ndim == 2:
                vals[out][:, sel] = e
            else:
                vals[out][sel] = e

        return run

    def cells_read(self, k: int, out_mask: Mask, ctx: Any) -> Mask | None:
        if k == 2:
            return np.array(out_mask.any())
        if k == 1:
            return out_mask.copy()
        if out_mask.ndim == 2:
            return _read_row_keys(out_mask, ctx.T)
        return np.repeat(out_mask[:, None], ctx.shape(self.ins[0])[1], axis=1)

    def cells_written(self, masks: list[Mask | None], ctx: Any) -> Mask:
        out = np.zeros(ctx.shape(self.out), bool)
        if masks[0] is not None:
            out |= masks[0].any(axis=-1)
        if masks[1] is not None:
            out |= masks[1]
        if len(masks) > 2 and masks[2] is not None and masks[2].any():
            out[...] = True
        return out


@dataclass(frozen=True)
class Softmax(Op):
    """att[h][t][s] = exp((score[h][t][s] - score_max[h][t]) / τ) / exp_sum[h][t]; 0 for s > t."""

    kind: ClassVar[str] = "softmax"

    @property
    def row_reads(self) -> tuple[Reads, ...]:  # type: ignore[override]
        return ("row", "row", "row") + ("whole",) * (len(self.ins) - 3)

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        s_name, top, total_name = self.ins[:3]
        temp = self.ins[3] if len(self.ins) > 3 else None
        out, later = self.out, _later_of(sel, cap)

        def run(vals: dict[str, np.ndarray]) -> None:
            total = vals[total_name]
            e = _shifted_exp(vals, s_name, top, temp, sel, later)
            if e.ndim == 3:
                # A masked entry reads nothing, so it is 0 whatever the row's sum (even a pinned 0).
                e /= total[:, sel][..., None]
                _mask_later(e, later, 0.0)
                vals[out][:, sel] = e
            else:
                vals[out][sel] = e / total[sel][:, None]

        return run

    def cells_read(self, k: int, out_mask: Mask, ctx: Any) -> Mask | None:
        causal = out_mask.ndim == 3
        m = out_mask & _causal(ctx.T) if causal else out_mask
        if k == 0:
            return m.copy()
        if k in (1, 2):
            return m.any(axis=-1)
        return np.array(m.any())

    def cells_written(self, masks: list[Mask | None], ctx: Any) -> Mask:
        shape = ctx.shape(self.out)
        out = np.zeros(shape, bool)
        for k, m in enumerate(masks):
            if m is None:
                continue
            if k == 0:
                out |= m
            elif k in (1, 2):
                out |= m[..., None]
            elif m.any():
                out[...] = True
        if len(shape) == 3:
            out &= _causal(shape[1])
        return out


@dataclass(frozen=True)
class Weighted(Op):
    """y[t][h·hs + d] = Σ_{s ≤ t} att[h][t][s] · v[h][s][d]: the heads' weighted values, concatenated."""

    kind: ClassVar[str] = "weighted"
    row_reads: ClassVar[tuple[Reads, ...]] = ("row", "prefix")

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        (att_name, v_name), out = self.ins, self.out
        width = cap if exact else _last_row(sel) + 1
        rows = np.arange(sel.start, sel.stop) if isinstance(sel, slice) else sel
        R, in_place = len(rows), isinstance(sel, slice)

        def run(vals: dict[str, np.ndarray]) -> None:
            att, v = vals[att_name], vals[v_name]  # [H, cap, cap], [H, cap, hs]
            vv = v[:, :width]
            if math.isfinite(np.add.reduce(vv, axis=None)):  # every v finite (a sum with an inf or nan is not)
                y = _mm(att[:, sel, :width], vv, exact)  # [H, R, width] @ [H, width, hs]
            else:
                # 0 · inf is nan: a later row's non-finite v (a pin) must not leak into earlier rows.
                keep = np.arange(width)[None, :] <= rows[:, None]  # [R, width]
                masked = np.where(keep[None, :, :, None], vv[:, None], 0.0)  # [H, R, width, hs]
                y = np.matmul(att[:, rows, None, :width], masked)[:, :, 0, :]  # -> [H, R, hs]
            if in_place:  # the output rows are a view: y lands in them in one copy
                vals[out][sel].reshape(R, y.shape[0], -1)[...] = y.transpose(1, 0, 2)  # [H, R, hs] -> [R, H, hs]
            else:
                vals[out][sel] = y.transpose(1, 0, 2).reshape(R, -1)  # -> [R, C]

        return run

    def cells_read(self, k: int, out_mask: Mask, ctx: Any) -> Mask | None:
        H, T, hs = ctx.shape(self.ins[1])
        m = out_mask.reshape(T, H, hs).transpose(1, 0, 2)  # [H, T, hs]
        if k == 0:
            return m.any(axis=2)[:, :, None] & _causal(T)
        # v[h][s][d] is read by y[t][h, d] for every t >= s.
        later = np.flip(np.logical_or.accumulate(np.flip(m, axis=1), axis=1), axis=1)
        return later

    def cells_written(self, masks: list[Mask | None], ctx: Any) -> Mask:
        H, T, hs = ctx.shape(self.ins[1])
        out = np.zeros((H, T, hs), bool)
        if masks[0] is not None:
            out |= (masks[0] & _causal(T)).any(axis=2)[:, :, None]
        if masks[1] is not None:
            # y[t][h, d] reads v[h][s][d] for all s <= t.
            out |= np.logical_or.accumulate(masks[1], axis=1)
        return out.transpose(1, 0, 2).reshape(T, H * hs)


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
