"""Causal self-attention as ops: scores, the softmax's max and sum, the softmax, the weighted values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import Mask, Op, Reads, _mm

__all__ = ['Score', 'Softmax', 'SoftmaxMax', 'SoftmaxSum', 'Weighted']


def _causal(T: int) -> Mask:
    return np.tril(np.ones((T, T), bool))


@dataclass(frozen=True)
class Score(Op):
    """score[h][t][s] = Σ_d q[h][t][d] · k[h][s][d] / √hs for s ≤ t; -inf (masked) for s > t."""

    kind: ClassVar[str] = "score"
    masked: ClassVar[float] = -np.inf
    row_reads: ClassVar[tuple[Reads, ...]] = ("row", "prefix")

    def forward(self, ctx: Any, rows: np.ndarray) -> None:
        q, k = (ctx.values[n] for n in self.ins)  # [H, cap, hs]
        width = ctx.cap if ctx.exact else int(rows.max()) + 1
        s = _mm(q[:, rows], k[:, :width].transpose(0, 2, 1), ctx.exact)  # -> [H, R, width]
        s *= float(1.0 / np.sqrt(q.shape[-1]))  # a Python float: a float32 score stays float32
        s[:, np.arange(width)[None, :] > rows[:, None]] = -np.inf  # [R, width]: keys past each query
        out = ctx.values[self.out]
        out[:, rows, :width] = s
        out[:, rows, width:] = -np.inf

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


def _shifted_exp(ctx: Any, score: str, top: str, temp: str | None, rows: np.ndarray) -> np.ndarray:
    """exp((score - max) / τ) for the given rows: [H, R, cap] for attention, [R, V] for logits."""
    s, mx = ctx.values[score], ctx.values[top]
    visible: Any = True  # logits: every entry counts
    if s.ndim == 3:
        sr, mr = s[:, rows], mx[:, rows][..., None]
        visible = np.arange(s.shape[-1])[None, :] <= rows[:, None]  # [R, cap]: the causal mask
    else:
        sr, mr = s[rows], mx[rows][:, None]
    # The maximum is exp(0) even when it is infinite (inf - inf would be nan): a softmax over
    # one key stays 1 however large its score, as the cone's "cannot matter" claims.
    with np.errstate(invalid="ignore"):
        z = np.where(sr == mr, 0.0, sr - mr)
    z = np.where(visible, z, -np.inf)
    if temp is not None:
        z = z / ctx.values[temp]
    return np.exp(z)


def _read_row_keys(out_mask: Mask, T: int) -> Mask:
    """[H, T] rows -> [H, T, T] the unmasked keys of each selected row."""
    return out_mask[:, :, None] & _causal(T)


@dataclass(frozen=True)
class SoftmaxMax(Op):
    """score_max[h][t] = max_{s ≤ t} score[h][t][s]."""

    kind: ClassVar[str] = "softmax_max"
    row_reads: ClassVar[tuple[Reads, ...]] = ("row",)

    def forward(self, ctx: Any, rows: np.ndarray) -> None:
        s = ctx.values[self.ins[0]]  # [.., cap, cap] -> [.., R]
        if s.ndim == 3:
            # Mask by structure, not by the stored -inf: a pinned masked entry must stay unread.
            visible = np.arange(s.shape[-1])[None, :] <= rows[:, None]  # [R, cap]
            ctx.values[self.out][:, rows] = np.where(visible, s[:, rows], -np.inf).max(axis=-1)
        else:
            ctx.values[self.out][rows] = s[rows].max(axis=-1)

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

    def forward(self, ctx: Any, rows: np.ndarray) -> None:
        temp = self.ins[2] if len(self.ins) > 2 else None
        e = _shifted_exp(ctx, self.ins[0], self.ins[1], temp, rows).sum(axis=-1)
        if e.ndim == 2:
            ctx.values[self.out][:, rows] = e
        else:
            ctx.values[self.out][rows] = e

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

    def forward(self, ctx: Any, rows: np.ndarray) -> None:
        total = ctx.values[self.ins[2]]
        temp = self.ins[3] if len(self.ins) > 3 else None
        e = _shifted_exp(ctx, self.ins[0], self.ins[1], temp, rows)
        if e.ndim == 3:
            # A masked entry reads nothing, so it is 0 whatever the row's sum (even a pinned 0).
            visible = np.arange(e.shape[-1])[None, :] <= rows[:, None]  # [R, cap]
            with np.errstate(invalid="ignore", divide="ignore"):
                ctx.values[self.out][:, rows] = np.where(visible, e / total[:, rows][..., None], 0.0)
        else:
            ctx.values[self.out][rows] = e / total[rows][:, None]

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

    def forward(self, ctx: Any, rows: np.ndarray) -> None:
        att, v = (ctx.values[n] for n in self.ins)  # [H, cap, cap], [H, cap, hs]
        width = ctx.cap if ctx.exact else int(rows.max()) + 1
        vv = v[:, :width]
        if np.isfinite(vv).all():
            y = _mm(att[:, rows, :width], vv, ctx.exact)  # [H, R, width] @ [H, width, hs]
        else:
            # 0 · inf is nan: a later row's non-finite v (a pin) must not leak into earlier rows.
            keep = np.arange(width)[None, :] <= rows[:, None]  # [R, width]
            masked = np.where(keep[None, :, :, None], vv[:, None], 0.0)  # [H, R, width, hs]
            y = np.matmul(att[:, rows, None, :width], masked)[:, :, 0, :]  # -> [H, R, hs]
        ctx.values[self.out][rows] = y.transpose(1, 0, 2).reshape(len(rows), -1)  # -> [R, C]

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
