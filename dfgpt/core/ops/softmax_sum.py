"""A softmax's denominator: exp_sum[h][t] = Σ_{s ≤ t} exp((score[h][t][s] - score_max[h][t]) / τ)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import product
from typing import Any, ClassVar

import numpy as np

from . import folding
from .base import Kernel, Mask, Op, Reads
from .causal import _later_of, _read_row_keys
from .context import Key, OpContext, SheetView
from .grads import Arrays, acc, acc_temperature
from .kind import OpKind
from .registry import register
from .shifted_exp import _shifted_exp, greedy, temperature_of
from .spreadsheet import Formula, Ref, Shape, Span
from .window import seen

__all__ = ["SoftmaxSum"]


@register
@dataclass(frozen=True)
class SoftmaxSum(Op):
    """exp_sum[h][t] = Σ_{s ≤ t} exp((score[h][t][s] - score_max[h][t]) / τ).

    >>> SoftmaxSum("e", ("s", "m", "temperature")).row_reads
    ('row', 'row', 'whole')
    """

    window: int = 0  # an attention softmax under a sliding window: keys t - W < s ≤ t only (0: causal alone)

    kind: ClassVar[OpKind] = OpKind.SOFTMAX_SUM
    resident: ClassVar[bool] = True  # a few numbers a row that spare a replay its reductions
    shift: ClassVar[bool] = True

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

    def cells_read(self, k: int, out_mask: Mask, ctx: OpContext) -> Mask | None:
        if k == 2:
            return np.array(out_mask.any())
        if k == 1:
            return out_mask.copy()
        if out_mask.ndim == 2:
            if self.window:
                return out_mask[:, :, None] & seen(ctx.T, self.window)
            return _read_row_keys(out_mask, ctx.T)
        return np.repeat(out_mask[:, None], ctx.shape(self.ins[0])[1], axis=1)

    def cells_written(self, masks: list[Mask | None], ctx: OpContext) -> Mask:
        out = np.zeros(ctx.shape(self.out), bool)
        if masks[0] is not None:
            out |= masks[0].any(axis=-1)
        if masks[1] is not None:
            out |= masks[1]
        if len(masks) > 2 and masks[2] is not None and masks[2].any():
            out[...] = True
        return out

    def batched(self, V: Arrays) -> np.ndarray:
        s, m = V[self.ins[0]], V[self.ins[1]]  # [B, .., K], [B, ..] -> [B, ..]
        tau = temperature_of(self.ins, V, 2)
        return (greedy(s) if tau == 0 else np.exp((s - m[..., None]) / tau)).sum(axis=-1)

    def vjp(self, V: Arrays, g: np.ndarray, G: Arrays) -> None:
        ins = self.ins
        s, m = V[ins[0]], V[ins[1]]
        tau = temperature_of(ins, V, 2)
        if tau == 0:  # greedy: a step function of the logits, flat almost everywhere: nothing flows back
            return
        z = (s - m[..., None]) / tau
        e = np.exp(z)
        ge = g[..., None] * e / tau
        acc(G, V, ins[0], ge)
        acc(G, V, ins[1], -ge.sum(axis=-1))
        if len(ins) > 2:
            acc_temperature(G, ins[2], e, g[..., None] * e, z, tau)

    def text(self, view: SheetView, idx: tuple[int, ...]) -> str:
        ins = self.ins
        if len(idx) == 2:
            h, t = idx
            first = max(0, t - self.window + 1) if self.window else 0
            return f"Σ_{{s={first}..{t}}} exp({ins[0]}[{h}][{t}][s] − {ins[1]}[{h}][{t}])"
        (t,) = idx
        temp = " / temperature" if "temperature" in ins else ""
        if temp and view.temperature == 0:  # greedy: one logit's numerator is 1, every other 0
            return "1 (temperature 0: greedy, ties to the lowest id)"
        return f"Σ_{{v}} exp(({ins[0]}[{t}][v] − {ins[1]}[{t}]){temp})"

    def sym_reads(self, view: SheetView, idx: tuple[int, ...], keep_shift: bool) -> list[Key]:
        ins = self.ins
        shift = [(ins[1], idx)] if keep_shift else []
        temp = [("temperature", ())] if "temperature" in ins else []
        first = max(0, idx[1] - self.window + 1) if len(idx) == 2 and self.window else 0
        keys = range(first, idx[1] + 1) if len(idx) == 2 else range(view.dims(ins[0])[1])
        return [k for s in keys for k in ((ins[0], (*idx, s)), *shift)] + temp

    def sym_compose(self, vals: list[Any], keep_shift: bool) -> Any:
        has_temp = "temperature" in self.ins

        def scaled(z: Any) -> Any:
            return z / vals[-1] if has_temp else z

        body = vals[:-1] if has_temp else vals
        if keep_shift:
            return folding.fsum_([folding.exp(scaled(body[i] - body[i + 1])) for i in range(0, len(body), 2)])
        return folding.fsum_([folding.exp(scaled(v)) for v in body])

    def sheet_formulas(self, shape: Shape, R: Ref, S: Span) -> Iterator[Formula]:
        src, ins = self.ins[0], self.ins
        causal = len(shape(src)) == 3
        temp = R(ins[2], ()) if len(ins) > 2 else None  # the logits' softmax reads temperature
        for pre in product(*map(range, shape(src)[:-1])):  # (h, t) or (t,)
            last = pre[-1] if causal else shape(src)[-1] - 1  # keys s ≤ t, or the whole vocab row
            first = max(0, last - self.window + 1) if causal and self.window else 0
            row, mx = S(src, (*pre, first), (*pre, last)), R(ins[1], pre)
            z = f"({row}-{mx})/{temp}" if temp else f"{row}-{mx}"
            yield pre, f"SUMPRODUCT(EXP({z}))"

    def label(self) -> str:
        return self.kind.value
