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

import html
import shutil
from collections.abc import Sequence
from pathlib import Path

import graphviz
import numpy as np
from graphviz.quoting import attr_list, quote

from ..core.graph import Graph
from ..errors import DfgptError

__all__ = [
    "COLORS",
    "FORMATS",
    "Canvas",
    "RenderError",
    "Row",
    "block_table",
    "edge",
    "fmt",
    "heat",
    "kind_fill",
    "legend",
    "new_digraph",
    "op_kind",
    "shape_kind",
    "shape_text",
    "summary",
    "tensor_label",
    "tensor_shape",
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
    # signed values (the explorer's grid): negative to white to heat(1.0) for positive
    "negative": "#a50f15",
    # provenance
    "cone": "#e0301e",  # outline / fill accent of a tensor in the cone
    "outside": "#f4f4f4",  # a tensor with no cell in the cone
    # circuits (dfgpt.circuits.circuit draws with these; tests/test_explorer_circuit.py checks they agree)
    "circuit_head": "#dbe8f5",  # an attention head
    "circuit_mlp": "#e6f2dc",  # an MLP
    "circuit_node": "#f3f0e8",  # the embedding, the logits
    "edge_positive": "#2b6cb0",  # an edge (or the clean level) whose score is positive
    "edge_negative": "#c53030",  # negative (or the corrupted level)
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
    dot.attr("edge", color=COLORS["edge"], arrowsize="0.6", fontname="Helvetica", fontsize="9")
    return dot


LEGEND_TEXT: dict[str, str] = {
    "parameter": "parameter (weight)", "input": "from the input", "computed": "computed",
    "external": "read from outside", "outside": "not in the cone", "cone": "outline: in the cone / edited",
    "stale": "stale", "recomputed": "recomputed", "reused": "reused", "unchanged": "unchanged (cut off)",
    "pinned": "pinned", "note": "summarised", "heat": "attention weight 0 → 1", "masked": "masked (future key)",
    "untouched": "untouched",
}


def legend(dot: graphviz.Digraph, keys: Sequence[str]) -> None:
    """A `legend` node: one swatch per colour of `COLORS` the picture uses, in the order given."""
    rows = []
    for k in keys:
        if k == "heat":
            swatch = "".join(f'<TD BGCOLOR="{heat(x / 4)}" WIDTH="8"> </TD>' for x in range(5))
        else:
            colour = COLORS["outside"] if k in ("masked", "untouched") else COLORS[k]
            swatch = (f'<TD COLSPAN="5" COLOR="{colour}" BORDER="3"> </TD>' if k == "cone"
                      else f'<TD COLSPAN="5" BGCOLOR="{colour}"> </TD>')
        rows.append(f'<TR>{swatch}<TD ALIGN="LEFT">{LEGEND_TEXT[k]}</TD></TR>')
    label = ('<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="2">'
             '<TR><TD COLSPAN="6"><B>colours</B></TD></TR>' + "".join(rows) + "</TABLE>>")
    dot.node("legend", label=label, shape="plaintext", style="", fontsize="9")


# -- what tensor pictures share: labels, a canvas of nested clusters, a block as a table -----
Row = tuple[str, str, str, str, str]  # name in the block, shape · kind, note, fill, outline


def tensor_shape(graph: Graph, name: str, T: int | None) -> tuple[int | str, ...]:
    spec = graph.specs[name]
    return spec.shape(T) if T is not None else tuple(
        "T" if a in ("pos", "key") else d for a, d in zip(spec.axes, spec.dims)
    )


def op_kind(graph: Graph, name: str) -> str:
    """A tensor's label in pictures and listings: its op's own, or its kind (parameter, input)."""
    op = graph.ops.get(name)
    return op.label() if op is not None else graph.specs[name].kind



class Canvas:
    """Nodes grouped by nested cluster, edges deduplicated, emitted in insertion order."""

    def __init__(self, name: str, rankdir: str = "TB") -> None:
        self.dot = new_digraph(name, rankdir)
        self.nodes: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {}
        self.edges: dict[tuple[str, str], dict[str, str]] = {}
        self.labels: dict[str, str] = {}

    def node(self, nid: str, clusters: tuple[str, ...] = (), **attrs: str) -> None:
        if nid not in self.nodes:
            self.nodes[nid] = (clusters, attrs)

    def edge(self, a: str, b: str, **attrs: str) -> None:
        if a != b and (a, b) not in self.edges:
            self.edges[(a, b)] = attrs

    def finish(self) -> graphviz.Digraph:
        subs: dict[tuple[str, ...], graphviz.Digraph] = {}
        for clusters, _ in self.nodes.values():
            for i in range(1, len(clusters) + 1):
                key = clusters[:i]
                if key not in subs:
                    sg = graphviz.Digraph(name=f"cluster_{key[-1]}")
                    sg.attr("graph", label=self.labels.get(key[-1], key[-1]), style="rounded,filled",
                            fillcolor=COLORS["cluster"], color="#999999")
                    subs[key] = sg
        for nid, (clusters, attrs) in self.nodes.items():
            (subs[clusters] if clusters else self.dot).node(nid, **attrs)
        # Deepest first, so a child's body is complete when its parent copies it.
        for key in sorted(subs, key=lambda k: (-len(k), list(subs).index(k))):
            (subs[key[:-1]] if len(key) > 1 else self.dot).subgraph(subs[key])
        for (a, b), attrs in self.edges.items():
            edge(self.dot, a, b, **attrs)
        return self.dot


def kind_fill(graph: Graph, name: str) -> str:
    return COLORS[graph.specs[name].kind]


def shape_kind(graph: Graph, name: str, T: int | None) -> str:
    shape = shape_text(tensor_shape(graph, name, T))
    kind = op_kind(graph, name)
    return f"{shape} · {kind}" if kind != graph.specs[name].kind else shape


def tensor_label(graph: Graph, name: str, nid: str, T: int | None, extra: str = "") -> str:
    return "\\n".join([nid, shape_kind(graph, name, T)] + ([extra] if extra else []))



def block_table(nid: str, first: int, last: int, rows: list[Row]) -> str:
    """One block (or a run of alike blocks) as an HTML table: a row per tensor, in graph order."""
    head = nid if first == last else f"{nid}  × {last - first + 1}, alike"
    wide = any(r[2] for r in rows)
    out = [f'<TR><TD COLSPAN="{3 if wide else 2}" BGCOLOR="{COLORS["cluster"]}"><B>{html.escape(head)}</B></TD></TR>']
    for sub, shape, note, fill, line in rows:
        tid = html.escape(f"{nid}.{sub}")  # nid: 'h[0]' for one block, 'h[0..2]' for a run
        ring = f' COLOR="{line}"' if line == COLORS["cone"] else ""
        cells = [sub, shape] + ([note.replace("\\n", " · ")] if wide else [])
        tds = [f'<TD ID="{tid}" BGCOLOR="{fill}" ALIGN="LEFT"{ring}>{html.escape(c)}</TD>' if i == 0 else
               f'<TD BGCOLOR="{fill}" ALIGN="LEFT"{ring}>{html.escape(c)}</TD>' for i, c in enumerate(cells)]
        out.append("<TR>" + "".join(tds) + "</TR>")
    return '<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="1">' + "".join(out) + "</TABLE>>"


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
        data = dot.source.encode("utf-8")
    else:
        if shutil.which("dot") is None:
            raise _dot_missing()
        try:
            data = dot.pipe(format=fmt_)
        except graphviz.ExecutableNotFound:
            raise _dot_missing() from None
        except graphviz.CalledProcessError as e:
            raise RenderError(f"Graphviz could not render {path.name!r}: {e}") from None
    try:
        path.write_bytes(data)
    except OSError as e:  # a parent that is a file, a missing folder, no permission, a name too long
        shown = str(path) if len(str(path)) <= 200 else str(path)[:120] + f"... ({len(str(path))} characters)"
        raise RenderError(
            f"cannot write the picture {shown!r}: {e.strerror or type(e).__name__}. Expected a file path "
            "in an existing folder (not below a file); create the folder or choose another path."
        ) from None
    return path
