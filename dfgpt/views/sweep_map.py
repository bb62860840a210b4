"""Pictures of interventions: a sweep as a heatmap, the logit lens as a grid, drawn by Graphviz.

A sweep's cell colour is the share of the clean-vs-corrupted gap that patching the site
recovers (white 0 to dark blue 1, the house `heat` map; a negative share is drawn in the
`stale` red when it loses more than 2% of the gap), with the value printed in it. The lens
grid colours each layer × position by the target token's probability and prints the top
token and the target's rank.

>>> import dfgpt
>>> from dfgpt.interventions.sweep import sweep
>>> m = dfgpt.load("sort")
>>> r = sweep(m.sheet("CABACAAAA"), m.sheet("CACACAAAA"), "logit_diff:B,C")
>>> "resid_pre" in sweep_map(r).source
True
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import graphviz
import numpy as np

from ..interventions.lens import Lens
from ..interventions.sweep import Sweep
from .colors import COLORS, heat, new_digraph, write

__all__ = ["lens_map", "sweep_map"]


def _ink(share: float) -> str:
    return "#ffffff" if share > 0.55 else "#000000"


def sweep_map(result: Sweep, path: str | Path | None = None) -> graphviz.Digraph:
    """The sweep as one HTML table: the last axis across, the others down; written to `path` if given."""
    rows, cols, grid = result._grid()
    d = result.clean - result.corrupted
    title = (f"{result.method} patching: {html.escape(result.metric)} over {html.escape(result.family)}"
             f"<BR/>clean {result.clean:+.3f}, corrupted {result.corrupted:+.3f}; colour: share of the gap recovered")
    out = [f'<TR><TD COLSPAN="{len(cols) + 1}"><B>{title}</B></TD></TR>',
           "<TR><TD></TD>" + "".join(f"<TD><B>{html.escape(c)}</B></TD>" for c in cols) + "</TR>"]
    for r, row in zip(rows, grid):
        tds = [f'<TD ALIGN="RIGHT"><B>{html.escape(r)}</B></TD>']
        for x in row:
            if not math.isfinite(x):
                tds.append(f'<TD BGCOLOR="{COLORS["outside"]}"> </TD>')
                continue
            share = float((x - result.corrupted) / d) if d else 0.0
            colour = COLORS["stale"] if share < -0.02 else heat(share)  # visibly worse than corrupted: red
            tds.append(f'<TD BGCOLOR="{colour}"><FONT COLOR="{_ink(share)}">{x:+.2f}</FONT></TD>')
        out.append("<TR>" + "".join(tds) + "</TR>")
    return _grid("sweep", out, path)


def lens_map(lens: Lens, path: str | Path | None = None) -> graphviz.Digraph:
    """The logit lens as a grid: layers down, positions across, the target's probability as colour."""
    p, rank, top = lens.target_prob, lens.rank, lens.order[..., 0]
    T = len(lens.positions)
    out = [f'<TR><TD COLSPAN="{T + 1}"><B>logit lens of {html.escape(repr(lens.text))}: top token '
           f"(rank of the target); colour: the target's probability</B></TD></TR>",
           "<TR><TD>position</TD>" + "".join(f"<TD><B>{html.escape(x)}</B></TD>" for x in lens.positions) + "</TR>",
           "<TR><TD>target</TD>" + "".join(f"<TD>{html.escape(lens.vocab[i])}</TD>" for i in lens.target) + "</TR>"]
    for lyr, name in enumerate(lens.layers):
        tds = [f'<TD ALIGN="RIGHT"><B>{html.escape(name)}</B></TD>']
        for t in range(T):
            share = float(np.clip(p[lyr, t], 0, 1))
            text = f"{html.escape(lens.vocab[top[lyr, t]])} ({rank[lyr, t]})"
            tds.append(f'<TD BGCOLOR="{heat(share)}"><FONT COLOR="{_ink(share)}">{text}</FONT></TD>')
        out.append("<TR>" + "".join(tds) + "</TR>")
    return _grid("lens", out, path)


def _grid(name: str, rows: list[str], path: str | Path | None) -> graphviz.Digraph:
    """HTML table rows as one plaintext node `name` (its stable id), written to `path` if given."""
    dot = new_digraph(name, rankdir="TB")
    label = '<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="4">' + "".join(rows) + "</TABLE>>"
    dot.node(name, label=label, shape="plaintext", style="")
    if path is not None:
        write(dot, path)
    return dot
