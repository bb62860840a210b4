"""LayerNorm's output: out[t][c] = (x[t][c] - mean[t]) / √(var[t] + eps) · g[c] + b[c]."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from . import folding
from .base import Kernel, Mask, Op, Reads
from .context import Key, OpContext, SheetView
from .grads import Arrays, acc, param_sum
from .kind import OpKind
from .masks import _rowany
from .registry import register
from .spreadsheet import Formula, Ref, Shape, Span, num_text

__all__ = ["LNOut"]


@register
@dataclass(frozen=True)
class LNOut(Op):
    """out[t][c] = (x[t][c] - mean[t]) / √(var[t] + eps) · g[c] + b[c].

    >>> LNOut("y", ("x", "m", "v", "g", "b")).row_reads
    ('row', 'row', 'row', 'whole', 'whole')
    """

    eps: float = 1e-5
    kind: ClassVar[OpKind] = OpKind.LN_OUT
    resident: ClassVar[bool] = False

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

    def cells_read(self, k: int, out_mask: Mask, ctx: OpContext) -> Mask | None:
        if k == 0:
            return out_mask.copy()
        if k in (1, 2):
            return _rowany(out_mask)
        return out_mask.any(axis=0)

    def cells_written(self, masks: list[Mask | None], ctx: OpContext) -> Mask:
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

    def batched(self, V: Arrays) -> np.ndarray:
        x, m, var = (V[n] for n in self.ins[:3])  # -> [B, T, C]
        y = (x - m[..., None]) / np.sqrt(var + self.eps)[..., None] * V[self.ins[3]]
        return y + V[self.ins[4]] if len(self.ins) > 4 else y

    def vjp(self, V: Arrays, g: np.ndarray, G: Arrays) -> None:
        ins = self.ins
        x, m, var, gam = (V[n] for n in ins[:4])
        r = 1.0 / np.sqrt(var + self.eps)
        d = x - m[..., None]
        gg = g * gam
        acc(G, V, ins[0], gg * r[..., None])
        acc(G, V, ins[1], -(gg.sum(axis=-1)) * r)
        acc(G, V, ins[2], (gg * d).sum(axis=-1) * (-0.5 * r * r * r))
        acc(G, V, ins[3], param_sum(g * d * r[..., None], 1))
        if len(ins) > 4:
            acc(G, V, ins[4], param_sum(g, 1))

    def text(self, view: SheetView, idx: tuple[int, ...]) -> str:
        t, c = idx
        ins = self.ins
        s = f"({ins[0]}[{t}][{c}] − {ins[1]}[{t}]) / √({ins[2]}[{t}] + {self.eps:g}) · {ins[3]}[{c}]"
        return s + (f" + {ins[4]}[{c}]" if len(ins) > 4 else "")

    def sym_reads(self, view: SheetView, idx: tuple[int, ...], keep_shift: bool) -> list[Key]:
        t, c = idx
        ins = self.ins
        return [(ins[0], (t, c)), (ins[1], (t,)), (ins[2], (t,)), *[(p, (c,)) for p in ins[3:]]]

    def sym_compose(self, vals: list[Any], keep_shift: bool) -> Any:
        y = (vals[0] - vals[1]) / folding.sqrt(vals[2] + self.eps) * vals[3]
        return y + vals[4] if len(vals) > 4 else y

    def sheet_formulas(self, shape: Shape, R: Ref, S: Span) -> Iterator[Formula]:
        x = self.ins[0]
        T, C = shape(x)
        eps = num_text(self.eps)
        for t in range(T):
            m, v = R(self.ins[1], (t,)), R(self.ins[2], (t,))
            for c in range(C):
                f = f"({R(x, (t, c))}-{m})/SQRT({v}+{eps})*{R(self.ins[3], (c,))}"
                if len(self.ins) > 4:
                    f += f"+{R(self.ins[4], (c,))}"
                yield (t, c), f

    def label(self) -> str:
        return self.kind.value
