"""Formula text of one cell, over the named cells it reads: `logit[5][A] = Σ_{i=0..47} ...`.

>>> import dfgpt
>>> dfgpt.load("sort-random").sheet("CAB").formula("h[0].ln_1.mean[1]")
'h[0].ln_1.mean[1] = Σ_{i=0..47} emb[1][i] / 48'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..cells import Cells

__all__ = ["formula", "rhs"]


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def rhs(sheet: Cells, tensor: str, idx: tuple[int, ...]) -> str:
    """The right-hand side of a cell's formula."""
    g = sheet.graph
    spec = g.specs[tensor]
    n = sheet.name
    if spec.kind == "parameter":
        return f"{_fmt(float(sheet.engine.values[tensor][idx]))} (parameter)"
    if tensor == "tokens":
        tok = int(sheet.engine.values["tokens"][idx])
        return f"{sheet._token_label(tok)} (input, id {tok})"
    if tensor == "temperature":
        return f"{_fmt(float(sheet.engine.values['temperature']))} (input)"
    pin = sheet.engine.pins.get(tensor, {}).get(idx)
    if pin is not None:
        return f"{_fmt(pin)} (pinned)"
    op = g.ops[tensor]
    ins = op.ins
    kind = op.kind
    if kind == "embed":
        t, c = idx
        tok = int(sheet.engine.values["tokens"][t])
        return f"{n('wte', (tok, c))} + {n('wpe', (t, c))}"
    if kind == "ln_mean":
        (t,) = idx
        C = g.specs[ins[0]].dims[1]
        return f"Σ_{{i=0..{C - 1}}} {ins[0]}[{t}][i] / {C}"
    if kind == "ln_var":
        (t,) = idx
        C = g.specs[ins[0]].dims[1]
        return f"Σ_{{i=0..{C - 1}}} ({ins[0]}[{t}][i] − {ins[1]}[{t}])² / {C}"
    if kind == "ln_out":
        t, c = idx
        eps = op.params()["eps"]
        s = f"({ins[0]}[{t}][{c}] − {ins[1]}[{t}]) / √({ins[2]}[{t}] + {eps:g}) · {ins[3]}[{c}]"
        return s + (f" + {ins[4]}[{c}]" if len(ins) > 4 else "")
    if kind == "linear":
        p = op.params()
        t, o = op.weight_row(idx)  # type: ignore[attr-defined]
        K = g.specs[ins[0]].dims[1]
        w = n(ins[1], (o, 0))[: -len("[0]")] + "[i]" if p["layout"] == "out_in" else f"{ins[1]}[i][{o}]"
        s = f"Σ_{{i=0..{K - 1}}} {ins[0]}[{t}][i] · {w}"
        return s + (f" + {ins[2]}[{o}]" if len(ins) > 2 else "")
    if kind in ("score", "softmax") and len(idx) == 3 and idx[2] > idx[1]:
        h, t, s_ = idx
        fill = "−∞" if kind == "score" else "0"
        return f"{fill} (causal mask: position {t} cannot see position {s_})"
    if kind == "score":
        h, t, s_ = idx
        hs = g.specs[ins[0]].dims[2]
        return f"Σ_{{d=0..{hs - 1}}} {ins[0]}[{h}][{t}][d] · {ins[1]}[{h}][{s_}][d] / √{hs}"
    temp = " / temperature" if "temperature" in ins else ""
    if temp and float(sheet.engine.values["temperature"]) == 0 and kind in ("softmax_sum", "softmax"):
        row = idx[0]  # temperature 0 is greedy: the numerator is 1 on the first largest logit only
        hot = f"[{n(ins[0], (row, idx[1]))} is the first largest of {ins[0]}[{row}]]" if len(idx) > 1 else "1"
        total = "" if kind == "softmax_sum" else f" / {ins[2]}[{row}]"
        return f"{hot}{total} (temperature 0: greedy, ties to the lowest id)"
    if kind == "softmax_max":
        if len(idx) == 2:
            h, t = idx
            return f"max_{{s=0..{t}}} {ins[0]}[{h}][{t}][s]"
        (t,) = idx
        return f"max_{{v}} {ins[0]}[{t}][v]"
    if kind == "softmax_sum":
        if len(idx) == 2:
            h, t = idx
            return f"Σ_{{s=0..{t}}} exp({ins[0]}[{h}][{t}][s] − {ins[1]}[{h}][{t}])"
        (t,) = idx
        return f"Σ_{{v}} exp(({ins[0]}[{t}][v] − {ins[1]}[{t}]){temp})"
    if kind == "softmax":
        if len(idx) == 3:
            h, t, s_ = idx
            return f"exp({ins[0]}[{h}][{t}][{s_}] − {ins[1]}[{h}][{t}]) / {ins[2]}[{h}][{t}]"
        t, v = idx
        return f"exp(({n(ins[0], (t, v))} − {ins[1]}[{t}]){temp}) / {ins[2]}[{t}]"
    if kind == "weighted":
        t, c = idx
        hs = g.specs[ins[1]].dims[2]
        h, d = divmod(c, hs)
        return f"Σ_{{s=0..{t}}} {ins[0]}[{h}][{t}][s] · {ins[1]}[{h}][s][{d}]"
    if kind == "add":
        return f"{n(ins[0], idx)} + {n(ins[1], idx)}"
    if kind == "gelu":
        x = n(ins[0], idx)
        if op.params()["approx"] == "tanh":
            return f"½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) where x = {x}"
        return f"½·x·(1 + erf(x/√2)) where x = {x}"
    raise NotImplementedError(kind)


def formula(sheet: Cells, tensor: str, idx: tuple[int, ...]) -> str:
    """`name = rhs` for one cell."""
    return f"{sheet.name(tensor, idx)} = {rhs(sheet, tensor, idx)}"
