"""The switched edge sum: one destination's input, each upstream source's own contribution or its patch.

out[t][c] = Σ_i ((1 − switch[i]) · src_i[t][c] + switch[i] · patch_i[t][c]) + Σ_j b_j[c]

Inputs, in order: the destination's own edge switches (one cell per source: a switch
written recomputes this destination alone), the sources' own contributions ([T, C] each),
their patch values (parameters [T, C], one per source, shared by every destination) and
the constant sources (biases [C]). A switch of 0 takes the run's own contribution, 1 the patch,
anything between mixes them (EAP's gradient is ∂out/∂switch at 0).

>>> op = EdgeSum("x.in", ("x.switch", "emb", "emb.patch"), sources=1)
>>> op.sym_compose([0.0, 2.0, 5.0], keep_shift=True), op.sym_compose([1.0, 2.0, 5.0], keep_shift=True)
(2.0, 5.0)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import product
from typing import Any, ClassVar

import numpy as np

from . import folding
from .base import Kernel, Mask, Op, Reads
from .context import Key, OpContext, SheetView
from .grads import Arrays, acc, param_sum
from .kind import OpKind
from .registry import register
from .spreadsheet import Formula, Ref, Shape, Span

__all__ = ["EdgeSum"]


@register
@dataclass(frozen=True)
class EdgeSum(Op):
    """out[t][c] = Σ_i ((1 − switch[i]) · src_i[t][c] + switch[i] · patch_i[t][c]) + Σ_j b_j[c]."""

    sources: int = 0  # how many sources it sums (then as many patches, then the biases)
    kind: ClassVar[OpKind] = OpKind.EDGE_SUM
    resident: ClassVar[bool] = True  # a destination's residual stream: its cone starts here

    @property
    def row_reads(self) -> tuple[Reads, ...]:  # type: ignore[override]
        n = self.sources
        return ("whole",) + ("row",) * n + ("whole",) * (len(self.ins) - 1 - n)

    @property
    def own(self) -> tuple[str, ...]:
        return self.ins[1 : 1 + self.sources]

    @property
    def patches(self) -> tuple[str, ...]:
        return self.ins[1 + self.sources : 1 + 2 * self.sources]

    @property
    def biases(self) -> tuple[str, ...]:
        return self.ins[1 + 2 * self.sources :]

    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        sw, out, n = self.ins[0], self.out, self.sources
        own, patches, biases = self.own, self.patches, self.biases

        def run(vals: dict[str, np.ndarray]) -> None:
            s = vals[sw]
            total: np.ndarray | None = None
            for i in range(n):  # sources in order, the sum row-wise: a row's bits never depend on its batch
                si = s[i]
                if si == 0:  # 1·src + 0·patch is src for every finite patch: skip the products
                    term = vals[own[i]][sel]
                elif si == 1:
                    term = vals[patches[i]][sel]
                else:
                    term = (1 - si) * vals[own[i]][sel] + si * vals[patches[i]][sel]  # [R, C]
                if total is None:
                    total = np.array(term)
                else:
                    total += term
            for b in biases:
                total += vals[b]  # type: ignore[operator]
            vals[out][sel] = total

        return run

    def cells_read(self, k: int, out_mask: Mask, ctx: OpContext) -> Mask | None:
        n = self.sources
        if k == 0:
            return np.full(ctx.shape(self.ins[0]), bool(out_mask.any()))
        if k <= n:
            return out_mask.copy()
        if k <= 2 * n:
            m = np.zeros(ctx.shape(self.ins[k]), bool)
            m[: out_mask.shape[0]] = out_mask
            return m
        return out_mask.any(axis=0)

    def cells_written(self, masks: list[Mask | None], ctx: OpContext) -> Mask:
        T, n = ctx.T, self.sources
        out = np.zeros((T, ctx.shape(self.out)[1]), bool)
        for k, m in enumerate(masks):
            if m is None:
                continue
            if k == 0:
                if m.any():
                    out[...] = True
            elif k <= n:
                out |= m
            elif k <= 2 * n:
                out |= m[:T]
            else:
                out |= m[None, :]
        return out

    def params(self) -> dict[str, Any]:
        return {"sources": self.sources}

    # -- the autodiff: switches, patches and biases are parameters (unbatched) ---------------------
    def batched(self, V: Arrays) -> np.ndarray:
        s = V[self.ins[0]]
        total = None
        for i, (o, p) in enumerate(zip(self.own, self.patches)):
            x = V[o]  # [B, T, C]
            term = (1 - s[i]) * x + s[i] * V[p][: x.shape[1]]
            total = term if total is None else total + term
        for b in self.biases:
            total = total + V[b]
        return total  # type: ignore[return-value]

    def vjp(self, V: Arrays, g: np.ndarray, G: Arrays) -> None:
        s, T = V[self.ins[0]], g.shape[1]
        gs = np.zeros(s.shape, np.result_type(g, s))
        gsum = g.sum(axis=0)  # [B, T, C] -> [T, C]: a patch is one for the batch
        for i, (o, p) in enumerate(zip(self.own, self.patches)):
            si = s[i]
            acc(G, V, o, g if si == 0 else (1 - si) * g)
            if si != 0:  # a switch at 0 passes no gradient to its patch
                gp = np.zeros(V[p].shape, gs.dtype)
                gp[:T] = si * gsum
                acc(G, V, p, gp, own=True)
            gs[i] = np.vdot(V[p][:T] - V[o], g) if g.shape[0] == 1 else np.sum((V[p][:T] - V[o]) * g)
            # ∂out/∂switch: the patch minus the run's own, times the gradient
        acc(G, V, self.ins[0], gs, own=True)
        for b in self.biases:
            acc(G, V, b, param_sum(g, 1))

    # -- formulas ----------------------------------------------------------------------------------
    def text(self, view: SheetView, idx: tuple[int, ...]) -> str:
        t, c = idx
        sw = self.ins[0]
        terms = [f"(1 − {sw}[{i}]) · {o}[{t}][{c}] + {sw}[{i}] · {p}[{t}][{c}]"
                 for i, (o, p) in enumerate(zip(self.own, self.patches))]
        if len(terms) > 4:  # a late destination sums every earlier source: the first two, the last
            terms = [*terms[:2], f"… ({len(terms) - 3} more)", terms[-1]]
        return " + ".join(terms + [f"{b}[{c}]" for b in self.biases])

    def sym_reads(self, view: SheetView, idx: tuple[int, ...], keep_shift: bool) -> list[Key]:
        t, c = idx
        out: list[Key] = []
        for i, (o, p) in enumerate(zip(self.own, self.patches)):
            out += [(self.ins[0], (i,)), (o, (t, c)), (p, (t, c))]
        return out + [(b, (c,)) for b in self.biases]

    def sym_compose(self, vals: list[Any], keep_shift: bool) -> Any:
        n = self.sources
        terms = []
        for i in range(n):
            s, x, p = vals[3 * i : 3 * i + 3]
            terms += [folding.mul(1 - s, x) if folding.is_num(s) else (1 - s) * x, folding.mul(s, p)]
        return folding.fsum_(terms + vals[3 * n :])

    def sheet_formulas(self, shape: Shape, R: Ref, S: Span) -> Iterator[Formula]:
        T, C = shape(self.out)
        sw = self.ins[0]
        for t, c in product(range(T), range(C)):
            terms = [f"(1-{R(sw, (i,))})*{R(o, (t, c))}+{R(sw, (i,))}*{R(p, (t, c))}"
                     for i, (o, p) in enumerate(zip(self.own, self.patches))]
            yield (t, c), "+".join(terms + [R(b, (c,)) for b in self.biases])

    def label(self) -> str:
        return self.kind.value
