"""Attention maps: `att` of every head and block as heatmaps with token labels, drawn by Graphviz.

Each head is one HTML table (rows: query positions, columns: key positions, cell
colour: the weight, white 0 to dark blue 1; future keys, which the causal mask removes,
grey), the heads of a block side by side in one node, one cluster per block. No
plotting library is needed: `dot` writes the PNG or SVG.

>>> import dfgpt
>>> from dfgpt.views.attention_map import attention_map
>>> d = attention_map(dfgpt.load("sort-random").sheet("CAB"), layer=0)
>>> '"h[0].attn.att"' in d.source and "h[0].attn.att[2]" in d.source
True
"""

from __future__ import annotations

import html
import itertools
import math
from pathlib import Path

import graphviz
from graphviz.quoting import quote

from ..errors import IndexError_
from ..sheet import Sheet
from .colors import (
    COLORS,
    Canvas,
    edge,
    heat,
    kind_fill,
    legend,
    new_digraph,
    op_kind,
    shape_text,
    summary,
    tensor_label,
    write,
)

__all__ = ["attention_map", "head_diagram", "head_table"]


def _pattern(sheet: Sheet, layer: int) -> str:
    """The attention probabilities of a block ('h[0].attn.att', 'layers[0].self_attn.att')."""
    roles = sheet.graph.roles
    return roles.layers[layer].pattern if roles is not None else f"h[{layer}].attn.att"


def head_table(sheet: Sheet, layer: int, head: int, compact: bool = False) -> str:
    """One head's heatmap as an HTML table (Graphviz's HTML-like label syntax); `compact`: colour
    only, small squares, tokens as axis labels, for many maps in one picture."""
    pattern = _pattern(sheet, layer)
    att = sheet.values(pattern)[head]  # [T, T]
    toks = [html.escape(sheet._token_label(t)) for t in sheet.tokens]
    if compact:  # small print for the axes; the colours carry the map
        toks = [f'<FONT POINT-SIZE="7">{t}</FONT>' for t in toks]
    title = f'<FONT POINT-SIZE="8">head {head}</FONT>' if compact else f"{pattern}[{head}]"
    rows = [f'<TR><TD COLSPAN="{len(toks) + 1}"><B>{title}</B></TD></TR>',
            "<TR><TD>" + ("" if compact else "q \\ k") + "</TD>"
            + "".join(f"<TD>{tok if compact else f'{s}:{tok}'}</TD>" for s, tok in enumerate(toks)) + "</TR>"]
    size = ' WIDTH="7" HEIGHT="7" FIXEDSIZE="TRUE"' if compact else ""
    for t, tok in enumerate(toks):
        cells = [f"<TD>{tok if compact else f'{t}:{tok}'}</TD>"]
        for s in range(len(toks)):
            if s > t:
                cells.append(f'<TD BGCOLOR="{COLORS["outside"]}"{size}>{"" if compact else " "}</TD>')
                continue
            a = float(att[t, s])
            ink = "#ffffff" if a > 0.5 else "#000000"
            text = "" if compact else f'<FONT COLOR="{ink}">{a:.2f}</FONT>'
            cells.append(f'<TD BGCOLOR="{heat(a)}"{size}>{text}</TD>')
        rows.append("<TR>" + "".join(cells) + "</TR>")
    pad = "1" if compact else "3"
    return f'<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="{pad}">' + "".join(rows) + "</TABLE>"


def attention_map(sheet: Sheet, layer: int | None = None, path: str | Path | None = None) -> graphviz.Digraph:
    """Heatmaps of att per head (clusters per block, in block order, top to bottom; heads in order,
    in rows about 24 keys wide, or all in one row of small colour-only maps when there are more than
    16 maps);
    written to `path` (.png/.svg/...) if given."""
    n_layer = sheet.config.n_layer
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layer):
        raise IndexError_(f"layer must be one of 0..{n_layer - 1} (or None for every block), got {layer!r}.")
    layers = range(n_layer) if layer is None else [layer]
    H = sheet.config.n_head
    compact = len(layers) * H > 16
    per_row = H if compact else min(H, max(1, 24 // len(sheet.tokens)))  # rows about 24 keys wide
    dot = new_digraph("attention", rankdir="TB")
    dot.attr("node", shape="plaintext", style="", fontsize="9")
    if compact:  # one row per block, no cluster frames: a block's name heads its row
        dot.attr("graph", ranksep="0.05", label=f"attention of every head and block  ({sheet.text!r})",
                 labelloc="t")
    for lyr in layers:
        # One node per block, heads in head order (separate nodes would be placed in
        # whatever order dot likes).
        tables = [f"<TD>{head_table(sheet, lyr, h, compact)}</TD>" for h in range(H)]
        rows = "".join(f"<TR>{''.join(tables[r: r + per_row])}</TR>" for r in range(0, H, per_row))
        pattern = _pattern(sheet, lyr)
        stage = pattern.rsplit(".", 1)[0]
        if compact:
            rows = rows.replace("<TR>", f"<TR><TD><B>{stage}</B></TD>", 1)
            dot.node(pattern, label=f'<<TABLE BORDER="0" CELLSPACING="3">{rows}</TABLE>>')
            continue
        with dot.subgraph(name=f"cluster_{stage}") as c:
            c.attr("graph", label=f"{stage}  ({sheet.text!r})", style="rounded", color="#999999")
            c.node(pattern, label=f'<<TABLE BORDER="0" CELLSPACING="12">{rows}</TABLE>>')
    for a, b in zip(layers, list(layers)[1:]):
        dot.edge(_pattern(sheet, a), _pattern(sheet, b), style="invis")
    legend(dot, ("heat", "masked"))
    if path is not None:
        write(dot, path)
    return dot


def head_diagram(sheet: Sheet, stage: str, names: list[str]) -> graphviz.Digraph:
    """Every head of one attention stage, in head order, left to right in rows: each head a
    cluster of its tensors (up to four heads, one row) or one table of them (more, rows of three)."""
    graph = sheet.graph
    H = graph.config.n_head
    tables = H > 4
    cv = Canvas(stage)
    rows: dict[int, list[str]] = {h: [] for h in range(H)}

    def ids(n: str) -> list[str]:
        if graph.specs[n].axes[:1] != ("head",):
            return [n]
        return [f"{stage}.head[{h}]" if tables else f"{n}[{h}]" for h in range(H)]

    for n in names:
        v = sheet.values(n) if graph.specs[n].kind == "computed" else sheet.engine.values[n]
        if len(ids(n)) == 1:
            cv.node(n, label=tensor_label(graph, n, n, sheet.T, summary(v)), fillcolor=kind_fill(graph, n))
            continue
        for h in range(H):
            kv = h * v.shape[0] // H  # grouped-query k and v: query head h reads key/value head kv
            shape = f"{shape_text(v[kv].shape)} · {op_kind(graph, n)}"
            text = summary(v[kv]).replace(" mean", "\\nmean")
            if tables:
                tds = (f"{n[len(stage) + 1:]}[{kv}]", shape, text.replace("\\n", "  "))
                rows[h].append(f'<TR><TD ID="{html.escape(n)}[{h}]" ALIGN="LEFT">{html.escape(tds[0])}</TD>'
                               + "".join(f'<TD ALIGN="LEFT">{html.escape(t)}</TD>' for t in tds[1:]) + "</TR>")
            else:
                cv.labels[f"{stage}.head[{h}]"] = f"head {h}"
                cv.node(f"{n}[{h}]", (f"{stage}.head[{h}]",), label="\\n".join([f"{n}[{kv}]", shape, text]),
                        fillcolor=kind_fill(graph, n))
    box = {"lhead": f"cluster_{stage}.heads"} if tables else {}
    cv.labels[f"{stage}.heads"] = f"heads 0..{H - 1}: each reads every input of the stage"
    for h in rows if tables else ():
        cv.node(f"{stage}.head[{h}]", (f"{stage}.heads",), shape="plaintext", style="", label=(
            f'<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="2" BGCOLOR="{COLORS["computed"]}">'
            f'<TR><TD COLSPAN="3" BGCOLOR="{COLORS["cluster"]}"><B>head {h}</B></TD></TR>{"".join(rows[h])}</TABLE>>'))
    mask = f"{stage}.mask"
    cv.node(mask, label=f"{mask}\\ncausal: score[t][s] = −inf for s > t", fillcolor=COLORS["external"],
            style="dashed")
    for n in names:
        op = graph.ops.get(n)
        for i in op.ins if op is not None else ():
            if i not in names:
                cv.node(i, label=tensor_label(graph, i, i, sheet.T, summary(sheet.values(i))),
                        fillcolor=COLORS["external"], style="dashed")
            outs, src = ids(n), ids(i)
            if tables and len(outs) != len(src):  # one edge to or from the box of heads
                cv.edge(src[-1], outs[0], **(box if len(outs) > 1 else {"ltail": box["lhead"]}))
                continue
            for h, o in enumerate(outs):
                for a in ([src[h]] if len(src) == len(outs) else src):
                    cv.edge(a, o)
            if op is not None and op.masked == -math.inf:  # the op that writes the mask's −inf: scores
                for o in outs[:1] if tables else outs:
                    cv.edge(mask, o, style="dashed", **box)
    dot = cv.finish()
    # A flat invisible edge fixes the order of the heads in a row; one from a head to the head
    # a row on puts the next row below.
    first, last = (f"{stage}.head", f"{stage}.head") if tables else (f"{stage}.q", f"{stage}.att")
    dot.attr("graph", newrank="true", **({"compound": "true"} if tables else {}))
    per_row = 3 if tables else 4
    for r in range(0, H, per_row):
        row = [f"{first}[{h}]" for h in range(r, min(H, r + per_row))]
        dot.body.append(f"\t{{rank=same; {' '.join(quote(x) for x in row)}}}\n")
        for a, b in itertools.pairwise(row):
            edge(dot, a, b, style="invis")
    for h in range(H - per_row):
        edge(dot, f"{last}[{h}]", f"{first}[{h + per_row}]", style="invis")
    legend(dot, ("parameter", "computed", "external"))
    return dot
