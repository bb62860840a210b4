"""The one colour map of every dfgpt picture, and the labels and files that pictures share.

Parameters are purple, values from the input green, intermediates orange (the spreadsheet
convention); edit states and the provenance cone have their own colours. Every drawing
(architecture, block, head, cell, cone, receipt, attention map) reads `COLORS`, so a
colour means the same thing everywhere.

>>> COLORS["parameter"], COLORS["input"], COLORS["computed"]
('#d9c3f0', '#c6efce', '#fcd5b4')
>>> heat(0.0), heat(1.0)
('#ffffff', '#08306b')
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import graphviz
import numpy as np
from graphviz.quoting import attr_list, quote

from ..errors import DfgptError

__all__ = [
    "COLORS",
    "FORMATS",
    "RenderError",
    "edge",
    "fmt",
    "heat",
    "new_digraph",
    "shape_text",
    "summary",
    "write",
]

COLORS: dict[str, str] = {
    # cell kinds (the spreadsheet convention)
    "parameter": "#d9c3f0",  # purple
    "input": "#c6efce",  # green: values that come from the input
    "computed": "#fcd5b4",  # orange: intermediates
    # edit states (receipts, sheet states)
    "stale": "#ff9f9f",
    "recomputed": "#ffd966",
    "reused": "#bdd7ee",
    "unchanged": "#eeeeee",
    "pinned": "#7fa7e0",
    "fresh": "#fcd5b4",
    "unset": "#ffffff",
    # provenance
    "cone": "#e0301e",  # outline / fill accent of a tensor in the cone
    "outside": "#f4f4f4",  # a tensor with no cell in the cone
    # furniture
    "external": "#ffffff",  # a tensor drawn only because a drawn op reads it
    "note": "#fff2a8",  # "summarised: N more cells" notes
    "edge": "#555555",
    "cluster": "#fafafa",
}

# Formats Debian's `dot` writes; "dot" and "gv" are the DOT source itself.
FORMATS: tuple[str, ...] = ("dot", "gv", "svg", "png", "pdf", "jpg", "jpeg", "gif", "ps", "eps", "json", "plain")

_HEAT_LO = np.array([0xFF, 0xFF, 0xFF], float)
_HEAT_HI = np.array([0x08, 0x30, 0x6B], float)


class RenderError(DfgptError):
    """A picture that cannot be written: unknown format, or Graphviz's `dot` missing."""


def heat(x: float) -> str:
    """White (0) to dark blue (1): the colour of an attention weight or an influence share."""
    x = float(min(1.0, max(0.0, x))) if np.isfinite(x) else 0.0
    rgb = np.rint(_HEAT_LO + (_HEAT_HI - _HEAT_LO) * x).astype(int)
    return "#" + "".join(f"{int(c):02x}" for c in rgb)


def fmt(x: float) -> str:
    """A value as drawn: 4 significant digits, the same on every machine."""
    return f"{float(x):.4g}"


def shape_text(shape: Sequence[int | str]) -> str:
    """(5, 48) -> '5×48'; () -> 'scalar'."""
    return "×".join(str(d) for d in shape) if len(shape) else "scalar"


def summary(values: np.ndarray) -> str:
    """min / max / mean of finite values (masked −inf scores are left out), one line."""
    v = np.asarray(values, float).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "no finite values"
    if v.size == 1:
        return f"= {fmt(v[0])}"
    return f"min {fmt(v.min())} max {fmt(v.max())} mean {fmt(v.mean())}"


def new_digraph(name: str, rankdir: str = "LR") -> graphviz.Digraph:
    """An empty Digraph with the house look (fonts, shapes), the same attributes every time."""
    dot = graphviz.Digraph(name=name)
    dot.attr("graph", rankdir=rankdir, fontname="Helvetica", fontsize="11", nodesep="0.25", ranksep="0.35")
    dot.attr("node", shape="box", style="rounded,filled", fontname="Helvetica", fontsize="10")
    dot.attr("edge", color=COLORS["edge"], arrowsize="0.6")
    return dot


def edge(dot: graphviz.Digraph, tail: str, head: str, **attrs: str) -> None:
    """An edge between node ids that may hold ':' (range names such as `out[5][0:48]`), which
    `Digraph.edge` would read as node:port."""
    dot.body.append(f"\t{quote(tail)} -> {quote(head)}{attr_list(kwargs=attrs)}\n")


def _dot_missing() -> RenderError:
    return RenderError(
        "Graphviz's `dot` program is not installed (or not on PATH), so the picture cannot be "
        "rendered; the DOT source still works (`-o file.dot`, or `.source`). Install Graphviz: "
        "`sudo apt-get install graphviz` (Debian/Ubuntu), `brew install graphviz` (macOS), "
        "or see https://graphviz.org/download/."
    )


def write(dot: graphviz.Digraph, path: str | Path) -> Path:
    """Write a drawing; the format is the file's suffix (.dot/.gv: the DOT source itself)."""
    path = Path(path)
    fmt_ = path.suffix.lower().lstrip(".")
    if fmt_ not in FORMATS:
        raise RenderError(
            f"cannot write {path.name!r}: unknown picture format {fmt_ or '(no suffix)'!r}; "
            f"use one of {', '.join('.' + f for f in FORMATS)}."
        )
    if fmt_ in ("dot", "gv"):
        path.write_text(dot.source, encoding="utf-8")
        return path
    if shutil.which("dot") is None:
        raise _dot_missing()
    try:
        data = dot.pipe(format=fmt_)
    except graphviz.ExecutableNotFound:
        raise _dot_missing() from None
    except graphviz.CalledProcessError as e:
        raise RenderError(f"Graphviz could not render {path.name!r}: {e}") from None
    path.write_bytes(data)
    return path
