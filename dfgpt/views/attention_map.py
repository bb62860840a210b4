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
from pathlib import Path

import graphviz

from ..errors import IndexError_
from ..sheet import Sheet
from .colors import COLORS, heat, new_digraph, write

__all__ = ["attention_map", "head_table"]


def head_table(sheet: Sheet, layer: int, head: int) -> str:
    """One head's heatmap as an HTML table (Graphviz's HTML-like label syntax)."""
    att = sheet.values(f"h[{layer}].attn.att")[head]  # [T, T]
    toks = [html.escape(sheet._token_label(t)) for t in sheet.tokens]
    rows = [f'<TR><TD COLSPAN="{len(toks) + 1}"><B>h[{layer}].attn.att[{head}]</B></TD></TR>',
            '<TR><TD>q \\ k</TD>' + "".join(f"<TD>{s}:{tok}</TD>" for s, tok in enumerate(toks)) + "</TR>"]
    for t, tok in enumerate(toks):
        cells = [f"<TD>{t}:{tok}</TD>"]
        for s in range(len(toks)):
            if s > t:
                cells.append(f'<TD BGCOLOR="{COLORS["outside"]}"> </TD>')
                continue
            a = float(att[t, s])
            ink = "#ffffff" if a > 0.5 else "#000000"
            cells.append(f'<TD BGCOLOR="{heat(a)}"><FONT COLOR="{ink}">{a:.2f}</FONT></TD>')
        rows.append("<TR>" + "".join(cells) + "</TR>")
    return '<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="3">' + "".join(rows) + "</TABLE>"


def attention_map(sheet: Sheet, layer: int | None = None, path: str | Path | None = None) -> graphviz.Digraph:
    """Heatmaps of att per head (clusters per block); written to `path` (.png/.svg/...) if given."""
    n_layer = sheet.config.n_layer
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layer):
        raise IndexError_(f"layer must be one of 0..{n_layer - 1} (or None for every block), got {layer!r}.")
    layers = range(n_layer) if layer is None else [layer]
    dot = new_digraph("attention", rankdir="TB")
    dot.attr("node", shape="plaintext", style="", fontsize="9")
    for lyr in layers:
        with dot.subgraph(name=f"cluster_h[{lyr}].attn") as c:
            c.attr("graph", label=f"h[{lyr}].attn  ({sheet.text!r})", style="rounded", color="#999999")
            # One node per block, heads side by side in head order (separate nodes would be
            # placed in whatever order dot likes).
            heads = "".join(f"<TD>{head_table(sheet, lyr, h)}</TD>" for h in range(sheet.config.n_head))
            c.node(f"h[{lyr}].attn.att", label=f'<<TABLE BORDER="0" CELLSPACING="12"><TR>{heads}</TR></TABLE>>')
    for a, b in zip(layers, list(layers)[1:]):
        dot.edge(f"h[{a}].attn.att", f"h[{b}].attn.att", style="invis")
    if path is not None:
        write(dot, path)
    return dot
