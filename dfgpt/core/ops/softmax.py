"""The softmax: att[h][t][s] = exp((score[h][t][s] - score_max[h][t]) / τ) / exp_sum[h][t]; 0 for s > t."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import product
from typing import Any, ClassVar

import numpy as np
import sympy

from . import folding
from .base import Kernel, Mask, Op, Reads
from .causal import _later_of, _mask_later
from .context import Key, OpContext, SheetView
from .grads import Arrays, acc, acc_temperature
from .kind import OpKind
from .registry import register
from .shifted_exp import _shifted_exp, greedy, temperature_of
from .spreadsheet import Formula, Ref, Shape, Span
from .window import seen

__all__ = ["Softmax"]


@register
@dataclass(frozen=True)
class Softmax(Op):
    """att[h][t][s] = exp((score[h][t][s] - score_max[h][t]) / τ) / exp_sum[h][t]; 0 for s > t.

    >>> Softmax("att", ("s", "m", "e")).sym_compose([], keep_shift=True)
    0
    """

    window: int = 0  # an attention softmax under a sliding window: keys t - W < s ≤ t only (0: causal alone)

    kind: ClassVar[OpKind] = OpKind.SOFTMAX
    resident: ClassVar[bool] = False

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

    def cells_read(self, k: int, out_mask: Mask, ctx: OpContext) -> Mask | None:
        m = out_mask & seen(ctx.T, self.window) if out_mask.ndim == 3 else out_mask
        if k == 0:
            return m.copy()
        if k in (1, 2):
            return m.any(axis=-1)
        return np.array(m.any())

    def cells_written(self, masks: list[Mask | None], ctx: OpContext) -> Mask:
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
            out &= seen(shape[1], self.window)
        return out

    def batched(self, V: Arrays) -> np.ndarray:
        s, m, S = (V[n] for n in self.ins[:3])  # [B, .., K], [B, ..], [B, ..] -> [B, .., K]
        tau = temperature_of(self.ins, V, 3)
        return (greedy(s) if tau == 0 else np.exp((s - m[..., None]) / tau)) / S[..., None]

    def vjp(self, V: Arrays, g: np.ndarray, G: Arrays) -> None:
        ins = self.ins
        s, m, S = (V[n] for n in ins[:3])
        tau = temperature_of(ins, V, 3)
        if tau == 0:  # greedy, as SoftmaxSum.vjp
            return
        z = (s - m[..., None]) / tau
        a = np.exp(z) / S[..., None]
        ga = g * a
        acc(G, V, ins[0], ga / tau)
        acc(G, V, ins[1], -ga.sum(axis=-1) / tau)
        acc(G, V, ins[2], -ga.sum(axis=-1) / S)
        if len(ins) > 3:  # the sum is its own cell: only exp(z) in the numerator moves with τ here
            acc_temperature(G, ins[3], a, ga, z, tau)

    def text(self, view: SheetView, idx: tuple[int, ...]) -> str:
        ins = self.ins
        if len(idx) == 3:
            h, t, s_ = idx
            if s_ > t:
                return f"0 (causal mask: position {t} cannot see position {s_})"
            if self.window and t - s_ >= self.window:
                return f"0 (sliding window: position {t} sees the {self.window} positions up to it, not {s_})"
            return f"exp({ins[0]}[{h}][{t}][{s_}] − {ins[1]}[{h}][{t}]) / {ins[2]}[{h}][{t}]"
        t, v = idx
        temp = " / temperature" if "temperature" in ins else ""
        if temp and view.temperature == 0:  # greedy: the numerator is 1 on the first largest logit only
            hot = f"[{view.name(ins[0], (t, v))} is the first largest of {ins[0]}[{t}]]"
            return f"{hot} / {ins[2]}[{t}] (temperature 0: greedy, ties to the lowest id)"
        return f"exp(({view.name(ins[0], (t, v))} − {ins[1]}[{t}]){temp}) / {ins[2]}[{t}]"

    def sym_reads(self, view: SheetView, idx: tuple[int, ...], keep_shift: bool) -> list[Key]:
        if len(idx) == 3 and (idx[2] > idx[1] or (self.window and idx[1] - idx[2] >= self.window)):
            return []  # the causal mask (or the window): a constant
        ins = self.ins
        shift = [(ins[1], idx[:-1])] if keep_shift else []
        temp = [("temperature", ())] if "temperature" in ins else []
        return [(ins[0], idx), *shift, (ins[2], idx[:-1]), *temp]

    def sym_compose(self, vals: list[Any], keep_shift: bool) -> Any:
        if not vals:
            return sympy.Integer(0)
        has_temp = "temperature" in self.ins
        z = vals[0] - vals[1] if keep_shift else vals[0]
        return folding.exp(z / vals[-1] if has_temp else z) / vals[-2 if has_temp else -1]

    def sheet_formulas(self, shape: Shape, R: Ref, S: Span) -> Iterator[Formula]:
        src, ins = self.ins[0], self.ins
        causal = len(shape(src)) == 3
        temp = R(ins[3], ()) if len(ins) > 3 else None  # the logits' softmax reads temperature
        for pre in product(*map(range, shape(src)[:-1])):  # (h, t) or (t,)
            last = pre[-1] if causal else shape(src)[-1] - 1  # keys s ≤ t, or the whole vocab row
            mx, total = R(ins[1], pre), R(ins[2], pre)
            for s in range(shape(src)[-1]):
                if causal and (s > last or (self.window and last - s >= self.window)):
                    yield (*pre, s), 0.0
                    continue
                cell = R(src, (*pre, s))
                z = f"({cell}-{mx})/{temp}" if temp else f"{cell}-{mx}"
                yield (*pre, s), f"EXP({z})/{total}"

    def label(self) -> str:
        return self.kind.value
