"""Direct logit attribution: a logit split into what each head, MLP and embedding writes to it.

`direct_attribution` splits a logit into the direct contributions of the embeddings, every
attention head, every MLP and the biases through the residual stream, with the final
LayerNorm's mean and variance held at their actual values; the parts sum to the logit
exactly (centring is linear, so each part is centred by its own mean and the centring
terms cancel in the sum).

>>> import dfgpt
>>> s = dfgpt.load("sort-random").sheet("CABACA")
>>> parts = direct_attribution(s, "logit[5][A]")
>>> abs(parts.total - s.value("logit[5][A]")) < 1e-12
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, overload

import numpy as np

from ..core.ops import Linear
from ..errors import QueryError
from ..html import table
from .target import resolve

if TYPE_CHECKING:
    from ..cells import Cells

__all__ = ["Attribution", "Component", "direct_attribution"]


@dataclass(frozen=True)
class Component:
    """One direct contribution to a logit through the residual stream."""

    name: str
    kind: str  # embedding, head, attn_bias, mlp, mlp_bias, ln_f_bias
    layer: int | None
    head: int | None
    value: float


class Attribution(Sequence[Component]):
    """A logit split into direct contributions; `total` equals the logit up to rounding."""

    def __init__(self, target: str, logit: float, parts: list[Component]) -> None:
        self.target, self.logit, self.parts = target, logit, parts
        self.total = float(sum(p.value for p in parts))

    @overload
    def __getitem__(self, i: int) -> Component: ...
    @overload
    def __getitem__(self, i: slice) -> list[Component]: ...
    def __getitem__(self, i: int | slice) -> Component | list[Component]:
        return self.parts[i]

    def __len__(self) -> int:
        return len(self.parts)

    def by_head(self) -> dict[tuple[int, int], float]:
        """(layer, head) -> direct contribution of that head to the logit."""
        return {(p.layer, p.head): p.value for p in self.parts if p.kind == "head"}  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"Attribution({self.target!r} = {self.logit:+.6g}: {len(self.parts)} parts)"

    def _repr_html_(self) -> str:
        rows = [[p.name, f"{p.value:+.6g}"] for p in sorted(self.parts, key=lambda p: -abs(p.value))]
        return table(f"direct attribution of {self.target} = {self.logit:+.6g}", ["part", "contribution"],
                     [*rows, ["sum", f"{self.total:+.6g}"]])

    def table(self) -> str:
        lines = [f"direct attribution of {self.target} = {self.logit:+.6g} through the residual stream "
                 "(ln_f mean and variance held at their values; the parts sum to the logit):"]
        for p in sorted(self.parts, key=lambda p: -abs(p.value)):
            lines.append(f"  {p.name:<28} {p.value:>+12.6g}")
        lines.append(f"  {'sum':<28} {self.total:>+12.6g}")
        return "\n".join(lines)


def direct_attribution(sheet: Cells, target: str) -> Attribution:
    """Split logit[t][v] (or a logit difference `logit_diff:A,C`) into embeddings, each attention
    head, each MLP and the biases.

    With x the final residual stream row, logit = ((x − mean) / √(var + eps) · g + b) · W_U[v].
    x is a sum of parts (embeddings, heads through c_proj, c_proj biases, MLPs), each centred
    by its own mean, so part_i = (r_i − mean(r_i)) / √(var + eps) · g · W_U[v] and
    Σ part_i + b · W_U[v] = logit exactly (up to float rounding). A logit difference uses
    W_U[A] − W_U[C] in place of W_U[v]: its parts sum to logit[t][A] − logit[t][C].
    """
    tgt = resolve(sheet, target)
    rows, cols = np.nonzero(tgt.masks.get("logit", np.zeros((1, 1), bool)))
    if set(tgt.masks) != {"logit"} or len(set(rows.tolist())) != 1 or (len(cols) != 1 and not tgt.spec):
        raise QueryError(f"direct attribution splits a logit or a logit difference; give a cell like "
                         f"'logit[5][A]' or 'logit_diff:A,C', got {target!r}.")
    t, v = int(rows[0]), int(cols[0])
    coef = tgt.weights["logit"][t, cols]  # [k]: 1 for a logit; 1, -1 for a difference
    e, cfg, graph = sheet.engine, sheet.config, sheet.graph
    row = np.zeros(sheet.T, bool)
    row[t] = True
    e.ensure({"logit": row})
    head_op = graph.ops["logit"]
    if not isinstance(head_op, Linear):  # graph.build makes logit a Linear: a broken graph otherwise
        raise TypeError(f"logit is computed by {type(head_op).__name__}, expected a Linear")
    W_U = head_op.weight_t(e)  # [C, V]
    w = W_U[:, v] if len(cols) == 1 else W_U[:, cols] @ coef  # [C, k] @ [k] -> [C]
    bias_term = 0.0
    if cfg.layer_norm:
        scale = 1.0 / np.sqrt(float(e.view("ln_f.var")[t]) + cfg.ln_eps)
        u = e.values["ln_f.g"] * w * scale
        if "ln_f.b" in e.values:
            bias_term = float(e.values["ln_f.b"] @ w)
    else:
        u = w

    def part(r: np.ndarray) -> float:  # [C] -> the direct contribution of a residual part
        return float(((r - r.mean()) if cfg.layer_norm else r) @ u)

    tok = int(e.tokens[t])
    parts = [Component(sheet.name("wte", (tok, 0)).rsplit("[", 1)[0], "embedding", None, None,
                       part(e.values["wte"][tok])),
             Component(f"wpe[{t}]", "embedding", None, None, part(e.values["wpe"][t]))]
    hs = cfg.head_size
    for layer in range(cfg.n_layer):
        proj = graph.ops[f"h[{layer}].attn.out"]
        if not isinstance(proj, Linear):  # graph.build makes the projection a Linear
            raise TypeError(f"h[{layer}].attn.out is computed by {type(proj).__name__}, expected a Linear")
        W = proj.weight_t(e)  # [C, C] as [in, out]
        y = e.view(f"h[{layer}].attn.y")[t]
        for h in range(cfg.n_head):
            sl = slice(h * hs, (h + 1) * hs)
            parts.append(Component(f"h[{layer}].attn head {h}", "head", layer, h, part(y[sl] @ W[sl])))
        if len(proj.ins) > 2:
            parts.append(Component(f"h[{layer}].attn.c_proj.b", "attn_bias", layer, None,
                                   part(e.values[proj.ins[2]])))
        if cfg.mlp:
            mop = graph.ops[f"h[{layer}].mlp.out"]
            r = e.view(f"h[{layer}].mlp.out")[t]
            b = e.values[mop.ins[2]] if len(mop.ins) > 2 else np.zeros_like(r)
            parts.append(Component(f"h[{layer}].mlp", "mlp", layer, None, part(r - b)))
            if len(mop.ins) > 2:
                parts.append(Component(f"h[{layer}].mlp.c_proj.b", "mlp_bias", layer, None, part(b)))
    if bias_term:
        parts.append(Component("ln_f.b", "ln_f_bias", None, None, bias_term))
    row_v = e.view("logit")[t]
    logit = float(row_v[v]) if len(cols) == 1 else sum(float(row_v[c]) * float(k) for c, k in zip(cols, coef))
    return Attribution(target, logit, parts)
