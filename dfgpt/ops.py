"""The ops of a GPT: each computes rows of one named tensor and knows exactly which cells it reads.

Every op gives three things the engine builds on:

- `forward(ctx, rows)`: compute the given position rows of its output in place;
- `row_reads`: per input, whether an output row reads the same row (`"row"`), every
  earlier row too (`"prefix"`, attention over keys) or the whole tensor (`"whole"`,
  parameters);
- `cells_read(k, out_mask)` / `cells_written(in_masks)`: exact cell-level index maps as
  boolean masks, propagated backward (precedents) and forward (dependents) without a
  single per-cell object. The causal mask is structural: `att[h][t][s]` for `s > t` reads
  nothing and is read by nothing.

In `exact` mode every row is computed with shapes that do not depend on which other rows
are computed together (stacked 1-row matmuls, reductions over the full capacity), so an
incremental recompute is bit-for-bit the from-scratch value. Fast mode batches rows
into one BLAS call and agrees to rounding.

>>> from dfgpt.ops import Add
>>> Add("h[0].out", ("h[0].mid", "h[0].mlp.out")).row_reads
('row', 'row')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "Add",
    "Embed",
    "Gelu",
    "LNMean",
    "LNOut",
    "LNVar",
    "Linear",
    "Op",
    "Score",
    "Softmax",
    "SoftmaxMax",
    "SoftmaxSum",
    "Weighted",
]

# numpy bool arrays; numpy's stubs type `.any(axis=...)` as `bool | ndarray`, so this stays loose.
Mask = Any
Reads = str  # "row", "prefix" or "whole"
GELU_C = float(np.sqrt(2.0 / np.pi))


def _mm(a: np.ndarray, b: np.ndarray, exact: bool) -> np.ndarray:
    """[..., R, K] @ [..., K, N] -> [..., R, N], row-canonical when exact."""
    if exact:
        return np.matmul(a[..., :, None, :], b[..., None, :, :])[..., 0, :]
    return np.matmul(a, b)


@dataclass(frozen=True)
class Op:
    """One named output tensor computed from named input tensors."""

    out: str
    ins: tuple[str, ...]
    kind: ClassVar[str] = "op"
    row_reads: ClassVar[tuple[Reads, ...]] = ()

    def forward(self, ctx: Any, rows: np.ndarray) -> None:
        raise NotImplementedError

    def cells_read(self, k: int, out_mask: Mask, ctx: Any) -> Mask | None:
        """Cells of input `k` read by the cells of `out_mask` (None: none)."""
        raise NotImplementedError

    def cells_written(self, masks: list[Mask | None], ctx: Any) -> Mask:
        """Cells of the output that read any cell of the input masks."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return {}


def _rowany(m: Mask) -> np.ndarray:
    """[T, ...] -> [T]: does any cell of each row appear?"""
    return m.reshape(m.shape[0], -1).any(axis=1)


@dataclass(frozen=True)
class Embed(Op):
    """emb[t][c] = wte[tokens[t]][c] + wpe[t][c]."""

    kind: ClassVar[str] = "embed"
    row_reads: ClassVar[tuple[Reads, ...]] = ("row", "whole", "whole")

    def forward(self, ctx: Any, rows: np.ndarray) -> None:
        tok, wte, wpe = (ctx.values[n] for n in self.ins)
        ctx.values[self.out][rows] = wte[tok[rows]] + wpe[rows]  # [R] -> [R, C]

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


@dataclass(frozen=True)
class Linear(Op):
    """out[t][o] = Σ_i x[t][i] · W[off+o][i] + b[off+o]; heads split o into (head, dim).

    `layout` is how W is stored: "out_in" (W[o][i]) or "in_out" (W[i][o]). With `heads`,
    the output is [H, T, n/H]: q, k and v are three Linears over slices of c_attn.
    """

    n_out: int = 0
    offset: int = 0
    layout: str = "out_in"
    heads: int = 0
    kind: ClassVar[str] = "linear"

    @property
    def row_reads(self) -> tuple[Reads, ...]:  # type: ignore[override]
        return ("row",) + ("whole",) * (len(self.ins) - 1)

    def weight_row(self, idx: tuple[int, ...]) -> tuple[int, int]:
        """(position t, weight output o) of one output cell: q[h][t][d] reads W row offset + h·hs + d."""
        if self.heads:
            h, t, d = idx
            return t, self.offset + h * (self.n_out // self.heads) + d
        t, o = idx
        return t, self.offset + o

    def weight_t(self, ctx: Any) -> np.ndarray:
        """The slice of W as [K, n_out]."""
        W = ctx.values[self.ins[1]]
        sl = slice(self.offset, self.offset + self.n_out)
        return W[sl].T if self.layout == "out_in" else W[:, sl]

    def forward(self, ctx: Any, rows: np.ndarray) -> None:
        x = ctx.values[self.ins[0]][rows]  # [R, K]
        y = _mm(x, self.weight_t(ctx), ctx.exact)  # [R, K] @ [K, n] -> [R, n]
        if len(self.ins) > 2:
            y = y + ctx.values[self.ins[2]][self.offset : self.offset + self.n_out]
        out = ctx.values[self.out]
        if self.heads:
            out[:, rows, :] = y.reshape(len(rows), self.heads, -1).transpose(1, 0, 2)
        else:
            out[rows] = y

    def _flat(self, m: Mask) -> Mask:
        """[H, T, hs] -> [T, n] for head outputs."""
        return m.transpose(1, 0, 2).reshape(m.shape[1], -1) if self.heads else m

    def _unflat(self, m: Mask) -> Mask:
        return m.reshape(m.shape[0], self.heads, -1).transpose(1, 0, 2) if self.heads else m

    def cells_read(self, k: int, out_mask: Mask, ctx: Any) -> Mask | None:
        m2 = self._flat(out_mask)  # [T, n]
        if k == 0:
            return np.repeat(_rowany(m2)[:, None], ctx.shape(self.ins[0])[1], axis=1)
        cols = m2.any(axis=0)  # [n]
        shape = ctx.shape(self.ins[k])
        m = np.zeros(shape, bool)
        sl = slice(self.offset, self.offset + self.n_out)
        if k == 2:
            m[sl] = cols
        elif self.layout == "out_in":
            m[sl] = cols[:, None]
        else:
            m[:, sl] = cols[None, :]
        return m

    def cells_written(self, masks: list[Mask | None], ctx: Any) -> Mask:
        out = np.zeros((ctx.T, self.n_out), bool)
        sl = slice(self.offset, self.offset + self.n_out)
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
        return {"n_out": self.n_out, "offset": self.offset, "layout": self.layout, "heads": self.heads}


def _causal(T: int) -> Mask:
    return np.tril(np.ones((T, T), bool))


@dataclass(frozen=True)
class Score(Op):
    """score[h][t][s] = Σ_d q[h][t][d] · k[h][s][d] / √hs for s ≤ t; -inf (masked) for s > t."""

    kind: ClassVar[str] = "score"
    row_reads: ClassVar[tuple[Reads, ...]] = ("row", "prefix")

    def forward(self, ctx: Any, rows: np.ndarray) -> None:
        q, k = (ctx.values[n] for n in self.ins)  # [H, cap, hs]
        width = ctx.cap if ctx.exact else int(rows.max()) + 1
        s = _mm(q[:, rows], k[:, :width].transpose(0, 2, 1), ctx.exact)  # -> [H, R, width]
        s = s * (1.0 / np.sqrt(q.shape[-1]))
        out = ctx.values[self.out]
        out[:, rows, :width] = np.where(np.arange(width)[None, :] <= rows[:, None], s, -np.inf)
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
    if s.ndim == 3:
        z = s[:, rows] - mx[:, rows][..., None]
        visible = np.arange(s.shape[-1])[None, :] <= rows[:, None]  # [R, cap]: the causal mask
        z = np.where(visible, z, -np.inf)
    else:
        z = s[rows] - mx[rows][:, None]
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
            ctx.values[self.out][:, rows] = e / total[:, rows][..., None]
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


@dataclass(frozen=True)
class Add(Op):
    """out[t][c] = a[t][c] + b[t][c]: the residual stream."""

    kind: ClassVar[str] = "add"
    row_reads: ClassVar[tuple[Reads, ...]] = ("row", "row")

    def forward(self, ctx: Any, rows: np.ndarray) -> None:
        a, b = (ctx.values[n] for n in self.ins)
        ctx.values[self.out][rows] = a[rows] + b[rows]

    def cells_read(self, k: int, out_mask: Mask, ctx: Any) -> Mask | None:
        return out_mask.copy()

    def cells_written(self, masks: list[Mask | None], ctx: Any) -> Mask:
        out = np.zeros(ctx.shape(self.out), bool)
        for m in masks:
            if m is not None:
                out |= m
        return out


@dataclass(frozen=True)
class Gelu(Op):
    """gelu[t][j] = ½ x (1 + tanh(√(2/π)(x + 0.044715 x³))), or ½ x (1 + erf(x/√2))."""

    approx: str = "tanh"
    kind: ClassVar[str] = "gelu"
    row_reads: ClassVar[tuple[Reads, ...]] = ("row",)

    def forward(self, ctx: Any, rows: np.ndarray) -> None:
        x = ctx.values[self.ins[0]][rows]
        ctx.values[self.out][rows] = gelu(x, self.approx)

    def cells_read(self, k: int, out_mask: Mask, ctx: Any) -> Mask | None:
        return out_mask.copy()

    def cells_written(self, masks: list[Mask | None], ctx: Any) -> Mask:
        m = masks[0]
        return m.copy() if m is not None else np.zeros(ctx.shape(self.out), bool)

    def params(self) -> dict[str, Any]:
        return {"approx": self.approx}


def gelu(x: np.ndarray, approx: str) -> np.ndarray:
    """GELU, elementwise (shape kept)."""
    if approx == "tanh":
        return 0.5 * x * (1.0 + np.tanh(GELU_C * (x + 0.044715 * (x * x * x))))
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))
