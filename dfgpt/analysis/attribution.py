"""Direct logit attribution: a logit split into what each head, MLP and embedding writes to it.

`direct_attribution` splits a logit into the direct contributions of the embeddings, every
attention head, every MLP and the biases through the residual stream, with the final
norm's statistics held at their actual values (LayerNorm's mean and variance, RMSNorm's mean
square); the parts sum to the logit exactly (centring is linear, so each part is centred by
its own mean and the centring terms cancel in the sum).

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

from ..core.ops import Linear, LNOut, Op, RMSOut
from ..errors import QueryError
from ..html import table
from .target import resolve

if TYPE_CHECKING:
    from ..cells import Cells
    from ..core.evaluate import Engine
    from ..core.graph import Graph

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

    def __init__(self, target: str, logit: float, parts: list[Component],
                 held: str = "ln_f mean and variance held at their values") -> None:
        self.target, self.logit, self.parts, self.held = target, logit, parts, held
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
                 f"({self.held}; the parts sum to the logit):"]
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
    e, graph = sheet.engine, sheet.graph
    roles = graph.roles
    if roles is None:  # a graph assembled by hand, not by core.builder
        raise QueryError("direct attribution needs the model's roles (where the residual stream, heads and final "
                         "norm live), which this graph does not record; build the model with dfgpt.core.builder.")
    row = np.zeros(sheet.T, bool)
    row[t] = True
    e.ensure({"logit": row})
    W_U = _linear(graph, "logit").weight_t(e)  # [C, V]
    w = W_U[:, v] if len(cols) == 1 else W_U[:, cols] @ coef  # [C, k] @ [k] -> [C]
    u, centre, bias_term, bias_name = _final_norm(graph.ops.get(roles.final_norm), e, t, w)
    norm = roles.final_norm.rsplit(".", 1)[0]
    held = (f"{norm} mean and variance held at their values" if centre else
            f"{norm} mean square held at its value" if norm != roles.final_norm else "no final norm")

    def part(r: np.ndarray) -> float:  # [C] -> the direct contribution of a residual part
        return float(((r - r.mean()) if centre else r) @ u)

    tok = int(e.tokens[t])
    tok_name = sheet.name(roles.embed, (tok, 0)).rsplit("[", 1)[0]
    if roles.pos_embed is not None:
        parts = [Component(tok_name, "embedding", None, None, part(e.values[roles.embed][tok])),
                 Component(f"{roles.pos_embed}[{t}]", "embedding", None, None, part(e.values[roles.pos_embed][t]))]
    else:  # rotary families: the stream starts as the token's row (Gemma's scaled by √d)
        parts = [Component(tok_name, "embedding", None, None, part(e.view(roles.layers[0].resid_pre)[t]))]
    hs = roles.head_size
    for layer, lr in enumerate(roles.layers):
        proj = _linear(graph, lr.attn_out)
        W = proj.weight_t(e)  # [heads · hs, C] as [in, out]
        y = e.view(lr.z)[t]
        stage = lr.attn_out.rsplit(".", 1)[0]
        for h in range(roles.heads):
            sl = slice(h * hs, (h + 1) * hs)
            parts.append(Component(f"{stage} head {h}", "head", layer, h, part(y[sl] @ W[sl])))
        if len(proj.ins) > 2:
            parts.append(Component(proj.ins[2], "attn_bias", layer, None, part(e.values[proj.ins[2]])))
        if lr.mlp_out is not None:
            mop = graph.ops[lr.mlp_out]
            r = e.view(lr.mlp_out)[t]
            b = e.values[mop.ins[2]] if len(mop.ins) > 2 else np.zeros_like(r)
            parts.append(Component(lr.mlp_out.rsplit(".", 1)[0], "mlp", layer, None, part(r - b)))
            if len(mop.ins) > 2:
                parts.append(Component(mop.ins[2], "mlp_bias", layer, None, part(b)))
    if bias_term:
        parts.append(Component(bias_name, "ln_f_bias", None, None, bias_term))
    row_v = e.view("logit")[t]
    logit = float(row_v[v]) if len(cols) == 1 else sum(float(row_v[c]) * float(k) for c, k in zip(cols, coef))
    return Attribution(target, logit, parts, held)


def _linear(graph: Graph, name: str) -> Linear:
    """The Linear op computing name (the builder makes logits and projections Linears)."""
    op = graph.ops[name]
    if not isinstance(op, Linear):  # a broken graph otherwise
        raise TypeError(f"{name} is computed by {type(op).__name__}, expected a Linear")
    return op


def _final_norm(op: Op | None, e: Engine, t: int, w: np.ndarray) -> tuple[np.ndarray, bool, float, str]:
    """The final norm at row t folded into the unembedding direction w: [C] -> (u [C], centre, bias term, bias name).

    LayerNorm: u = g · w / √(var + eps), parts centred, plus b · w; RMSNorm: u = (offset + w_n) · w / √(ms + eps),
    nothing centred; no norm: u = w.
    """
    if isinstance(op, LNOut):
        _, _, var, g, *b = op.ins
        u = e.values[g] * w / np.sqrt(float(e.view(var)[t]) + op.eps)
        return u, True, float(e.values[b[0]] @ w) if b else 0.0, b[0] if b else ""
    if isinstance(op, RMSOut):
        _, ms, g = op.ins
        u = (e.values[g] + op.offset) * w / np.sqrt(float(e.view(ms)[t]) + op.eps)
        return u, False, 0.0, ""
    return w, False, 0.0, ""
