"""The cells behind one cell, drawn: name, value and formula per node, wide fan-in as one range node.

Precedents are expanded level by level (breadth first, iteratively) up to `depth`; the
cells one node reads from one tensor become individual nodes when there are few of them
and ONE range node (`h[0].ln_1.out[5][0:48]`) when there are many. The drawing never holds
more than `max_nodes` nodes: past the budget it stops, adds one note node that says how
much was left out, and sets `dot.truncated`.

>>> import dfgpt
>>> from dfgpt.views.cellgraph import draw_cells
>>> d = draw_cells(dfgpt.load("sort-random").sheet("CABACA"), "logit[5][A]", depth=1)
>>> '"ln_f.out[5][0:48]"' in d.source, d.truncated
(True, False)
"""

from __future__ import annotations

import textwrap

import graphviz
import numpy as np

from ..core.evaluate import Mask
from ..errors import QueryError
from ..sheet import Sheet
from .colors import COLORS, edge, fmt, legend, new_digraph, summary

__all__ = ["FAN_IN", "draw_cells", "range_name"]

FAN_IN = 4  # more cells than this from one tensor -> one range node
_MAX_FORMULA = 90
_WRAP = 48  # a formula longer than this is wrapped onto more lines, so a node stays narrow


def range_name(sheet: Sheet, tensor: str, mask: Mask) -> str:
    """The bounding box of a mask as a name: one cell `logit[5][A]`, a range `out[5][0:48]`."""
    idx = np.argwhere(mask)
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    if (hi - lo == 1).all():
        return sheet.name(tensor, tuple(int(i) for i in lo))
    axes = sheet.graph.specs[tensor].axes
    parts = [
        (sheet._token_label(int(a)) if ax == "vocab" else str(int(a))) if b - a == 1 else f"{int(a)}:{int(b)}"
        for ax, a, b in zip(axes, lo, hi)
    ]
    return tensor + "".join(f"[{p}]" for p in parts)


def _values(sheet: Sheet, tensor: str, mask: Mask) -> np.ndarray:
    spec = sheet.graph.specs[tensor]
    if spec.kind == "computed":
        sheet.compute({tensor: mask})
        return np.asarray(sheet.engine.view(tensor)[mask], float)
    if spec.kind == "parameter" or tensor == "temperature":
        return np.asarray(sheet.engine.values[tensor][mask], float)
    return np.asarray(sheet.engine.view(tensor)[mask], float)


def _node_attrs(sheet: Sheet, tensor: str, mask: Mask, nid: str) -> dict[str, str]:
    spec = sheet.graph.specs[tensor]
    n = int(mask.sum())
    vals = _values(sheet, tensor, mask)
    if n == 1:
        try:
            f = sheet.formula(nid).split(" = ", 1)[-1]
        except IndexError:  # formula.py indexes idx[2] for every softmax; prob cells have two axes
            f = f"{sheet.graph.ops[tensor].label()}({', '.join(sheet.graph.ops[tensor].ins)})"
        f = f if len(f) <= _MAX_FORMULA else f[: _MAX_FORMULA - 1] + "…"
        lines = [nid, f"= {fmt(vals[0])}", *textwrap.wrap(f, _WRAP, break_on_hyphens=False)]
        idx = tuple(int(i) for i in np.argwhere(mask)[0])
        pinned = idx in sheet.engine.pins.get(tensor, {})
        fill = COLORS["pinned"] if pinned else COLORS[spec.kind]
        return {"label": "\\n".join(lines), "fillcolor": fill}
    box = np.argwhere(mask)
    full = int(np.prod(box.max(axis=0) - box.min(axis=0) + 1))
    count = f"{n} cells" + ("" if n == full else f" of the {full} in this box")
    stats = summary(vals).replace(" mean ", "\\nmean ")  # two short lines keep a wide fan-in narrow
    return {"label": "\\n".join([nid, count, stats]), "fillcolor": COLORS[spec.kind],
            "shape": "box3d"}


def _groups(sheet: Sheet, tensor: str, mask: Mask) -> list[Mask]:
    """Few cells -> one mask each; many -> one mask (a range node)."""
    cells = np.argwhere(mask)
    if len(cells) > FAN_IN:
        return [mask]
    out = []
    for c in cells:
        m = np.zeros_like(mask)
        m[tuple(c)] = True
        out.append(m)
    return out


def _rankdir(attrs: dict[str, dict[str, str]], depth: dict[str, int]) -> str:
    """TB or LR, whichever makes the picture closer to square, from the label sizes (about 6 px a
    character, 14 px a line at 10 pt): depth levels are rows top to bottom or columns left to right."""
    size = {}
    for nid, a in attrs.items():
        lines = a["label"].split("\\n")
        size[nid] = (6.0 * max(len(x) for x in lines) + 24, 14.0 * len(lines) + 12)
    levels = [[size[n] for n in depth if depth[n] == d] for d in sorted(set(depth.values()))]
    tb = (max(sum(w for w, _ in lv) for lv in levels), sum(max(h for _, h in lv) + 34 for lv in levels))
    lr = (sum(max(w for w, _ in lv) + 34 for lv in levels), max(sum(h + 18 for _, h in lv) for lv in levels))
    return "TB" if max(tb) / min(tb) < max(lr) / min(lr) else "LR"


def draw_cells(sheet: Sheet, target: str, depth: int = 2, max_nodes: int = 200) -> graphviz.Digraph:
    """The precedent cone of one cell, `depth` levels deep, at most `max_nodes` nodes."""
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 0:
        raise QueryError(f"depth must be an integer >= 0, got {depth!r}.")
    if not isinstance(max_nodes, int) or isinstance(max_nodes, bool) or max_nodes < 2:
        raise QueryError(f"max_nodes must be an integer >= 2 (the cell and a note), got {max_nodes!r}.")
    tensor, idx = sheet.cell(target)
    root = np.zeros(sheet.engine.shape(tensor), bool)
    root[idx] = True
    nodes: dict[str, tuple[str, Mask, int]] = {sheet.name(tensor, idx): (tensor, root, 0)}
    edges: list[tuple[str, str]] = []
    left: dict[str, int] = {}  # nodes past the budget -> their cell counts
    queue = [sheet.name(tensor, idx)]
    head = 0
    while head < len(queue):  # breadth first, so a budget cut keeps the nearest cells
        nid = queue[head]
        head += 1
        t, m, d = nodes[nid]
        if d >= depth or sheet.graph.specs[t].kind != "computed":
            continue
        pins = sheet.engine.pins.get(t, {})
        m = m.copy()
        for p in pins:
            m[p] = False  # a pinned cell is a constant: it reads nothing
        if not m.any():
            continue
        for inp, im in sheet.engine.precedents(t, m).items():
            for g in _groups(sheet, inp, im):
                gid = range_name(sheet, inp, g)
                if gid not in nodes:
                    if len(nodes) >= max_nodes - 1:
                        left[gid] = int(g.sum())
                        continue
                    nodes[gid] = (inp, g, d + 1)
                    queue.append(gid)
                if (gid, nid) not in edges:
                    edges.append((gid, nid))
    attrs = {nid: _node_attrs(sheet, t, m, nid) for nid, (t, m, _) in nodes.items()}
    dot = new_digraph(f"cell {target}", _rankdir(attrs, {nid: d for nid, (_, _, d) in nodes.items()}))
    for nid, node_attrs in attrs.items():
        dot.node(nid, **node_attrs)
    for a, b in edges:
        edge(dot, a, b)
    title = f"{sheet.name(tensor, idx)}: precedents to depth {depth} ({len(nodes)} nodes)"
    if left:
        note = (f"summarised: {len(left)} more nodes ({sum(left.values())} cells) and their precedents not drawn; "
                f"node budget max_nodes={max_nodes} reached. Raise max_nodes or lower depth.")
        dot.node("summarised", label=note, shape="note", fillcolor=COLORS["note"], style="filled")
        title += " — " + note
    kinds = {sheet.graph.specs[t].kind for t, _, _ in nodes.values()}
    pinned = any(sheet.engine.pins.get(t) for t, _, _ in nodes.values())
    legend(dot, [k for k in ("input", "parameter", "computed") if k in kinds] + ["pinned"] * pinned
           + ["note"] * bool(left))
    with dot.subgraph() as row:  # beside the target, where the cone narrows, not beside its widest row
        row.attr(rank="same")
        row.node(sheet.name(tensor, idx))
        row.node("legend")
    dot.attr("graph", label=title, labelloc="t")
    dot.truncated = bool(left)  # type: ignore[attr-defined]
    dot.note = title  # type: ignore[attr-defined]
    return dot
