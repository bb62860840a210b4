"""Formula text of one cell, over the named cells it reads: `logit[5][A] = Σ_{i=0..47} ...`.

>>> import dfgpt
>>> dfgpt.load("sort-random").sheet("CAB").formula("h[0].ln_1.mean[1]")
'h[0].ln_1.mean[1] = Σ_{i=0..47} emb[1][i] / 48'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.ops import SheetView

if TYPE_CHECKING:
    from ..cells import Cells

__all__ = ["formula", "rhs", "sheet_view"]


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def sheet_view(sheet: Cells) -> SheetView:
    """A sheet as an op's formula text and SymPy reads see it: cell names, dimensions, tokens."""
    specs = sheet.graph.specs
    return SheetView(name=sheet.name, dims=lambda t: specs[t].dims, tokens=sheet.engine.tokens,
                     temperature=float(sheet.engine.values["temperature"]))


def rhs(sheet: Cells, tensor: str, idx: tuple[int, ...]) -> str:
    """The right-hand side of a cell's formula: a parameter's or an input's value, a pin, or the op's own text."""
    g = sheet.graph
    spec = g.specs[tensor]
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
    return g.ops[tensor].text(sheet_view(sheet), idx)


def formula(sheet: Cells, tensor: str, idx: tuple[int, ...]) -> str:
    """`name = rhs` for one cell."""
    return f"{sheet.name(tensor, idx)} = {rhs(sheet, tensor, idx)}"
