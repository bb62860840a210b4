"""The model's architecture as a picture for the page: the graph dfgpt.draw draws, laid out in rows.

The embedding, one block drawn whole (the family's real block, read from the graph: GPT-2's
two residual adds, NeoX's parallel attention and MLP, SwiGLU's gate beside its up
projection), the other blocks as one box each, then the final norm and the logits. A tensor's
row is its depth in the graph (one more than its deepest drawn input), so the boxes read top
to bottom in the order they are computed; a parameter sits in the row of the op that reads
it. Every box names what it links to (a tensor, a block, a sub-layer's heads); the page draws
the boxes in the colours of `dfgpt.views.colors.COLORS` by their `kind`.

>>> import dfgpt
>>> a = architecture_json(dfgpt.load("sort-random").sheet("CABACA"), 1)
>>> [n["id"] for n in a["nodes"] if n["kind"] == "block"], a["block"]
(['h[0]', 'h[2]'], 1)
>>> next(n for n in a["nodes"] if n["id"] == "h[1].attn.att")["label"], ["h[1].mid", "h[1].out"] in a["edges"]
('att', True)
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..sheet import Sheet

__all__ = ["BLOCK", "architecture_json", "block_prefix", "tensor_of"]

BLOCK = re.compile(r"^([A-Za-z_][\w.]*)\[(\d+)\]")  # a block's tensors: h[3].…, layers[3].…


def tensor_of(sheet: Sheet, name: str) -> str:
    """The tensor a cell name belongs to: its longest prefix naming a tensor (`h[1].attn.q[0][2][3]` -> `h[1].attn.q`).

    >>> import dfgpt
    >>> tensor_of(dfgpt.load("sort-random").sheet("CABACA"), "h[1].attn.q[0][2][3]")
    'h[1].attn.q'
    """
    while name not in sheet.graph.specs and name.endswith("]"):
        name = name[: name.rfind("[")]
    return name


def block_prefix(graph: Any) -> str:
    """What a block's tensors are named under: `h` (GPT-2), `layers` (Llama, NeoX)."""
    return next((m.group(1) for n in graph.order if (m := BLOCK.match(n))), "h")


def _size(shape: tuple[int, ...]) -> int:
    """A box's width in pixels: grows with the log of the number of cells, so GPT-2's 38.6 M-cell lm_head still fits."""
    n = math.prod(shape) if shape else 1
    return int(min(190, 64 + 7 * math.log2(1 + n)))


def architecture_json(sheet: Sheet, block: int = 0) -> dict[str, Any]:
    """The picture's boxes (id, label, kind, shape, width, row, link) and arrows (`[from, to]`), `block` drawn whole."""
    graph, T = sheet.graph, sheet.T
    n_layer = sheet.config.n_layer
    block = min(max(block, 0), n_layer - 1)
    prefix = block_prefix(graph)
    inner = f"{prefix}[{block}]"

    def section(n: str) -> str:  # embedding, before, block, after, output
        m = BLOCK.match(n)
        if m:
            b = int(m.group(2))
            return "block" if b == block else "before" if b < block else "after"
        return "embedding" if graph.specs[n].stage == "embedding" else "output"

    def box(n: str) -> str:  # the box a tensor is drawn in: its own, or its block's
        m = BLOCK.match(n)
        return n if section(n) in ("embedding", "block", "output") else m.group(0)  # type: ignore[union-attr]

    def aux(n: str) -> bool:  # a per-position statistic (a norm's mean, a softmax's max): drawn beside its reader
        return graph.specs[n].axes[-1:] == ("pos",)

    local: dict[str, int] = {}  # computed tensors: 1 + the deepest input of the same section
    for n in graph.order:  # a topological order: an input's depth is known first
        op = graph.ops.get(n)
        if op is not None and box(n) == n and not aux(n):
            local[n] = 1 + max((local[i] for i in op.ins if i in local and section(i) == section(n)), default=-1)
    offset, rows = 0, {}
    for sec in ("embedding", "before", "block", "after", "output"):
        if sec in ("before", "after"):
            strip = [f"{prefix}[{b}]" for b in (range(block) if sec == "before" else range(block + 1, n_layer))]
            if strip:
                rows.update({b: offset for b in strip})
                offset += 1
            continue
        mine = [n for n in local if section(n) == sec]
        rows.update({n: offset + local[n] for n in mine})
        offset += 1 + max((local[n] for n in mine), default=-1)
    nodes: list[dict[str, Any]] = []
    edges: list[list[str]] = []
    for n in graph.order:
        spec = graph.specs[n]
        if n == "temperature":
            continue  # a control of the page (the slider), not a box
        if box(n) == n:
            if n not in rows:  # a parameter, the input or a statistic: in the row of the first op that reads it
                readers = [_reader_row(graph, rows, n)]
                if readers[0] is None:
                    continue
                rows[n] = readers[0]
            shape = tuple(spec.shape(T))
            # the label is the name inside its frame: `q` in h[1].attn, `mid` in h[1] (the frames name the rest)
            frame = spec.stage if spec.stage.startswith(inner + ".") else inner
            nodes.append({"id": n, "label": n[len(frame) + 1:] if n.startswith(frame + ".") else n,
                          "kind": spec.kind, "shape": list(shape), "width": _size(shape), "row": rows[n],
                          "part": spec.stage, "link": {"view": "tensor", "tensor": n}})
        elif not any(nd["id"] == box(n) for nd in nodes):
            b = box(n)
            nodes.append({"id": b, "label": b, "kind": "block", "shape": [], "width": 56, "row": rows[b],
                          "part": b, "link": {"view": "block", "block": int(b[b.rfind("[") + 1:-1])}})
        op = graph.ops.get(n)
        for i in op.ins if op is not None else ():
            e = [box(i), box(n)]
            if i != "temperature" and e[0] != e[1] and e not in edges:
                edges.append(e)
    parts = []
    for part in dict.fromkeys(nd["part"] for nd in nodes if nd["part"].startswith(inner + ".")):
        members = [nd for nd in nodes if nd["part"] == part]
        sub = part.split(".", 1)[1]
        link: dict[str, Any] = {"view": "block", "block": block} if "att" in sub else dict(next(
            nd["link"] for nd in members if nd["kind"] == "computed"))  # attention: its heads; else its first tensor
        rows_of = [nd["row"] for nd in members]
        parts.append({"part": part, "label": sub, "rows": [min(rows_of), max(rows_of)], "link": link})
    inside = [nd["row"] for nd in nodes if nd["part"].startswith(inner)]
    return {"block": block, "prefix": prefix, "n_layer": n_layer, "nodes": nodes, "edges": edges, "parts": parts,
            "rows": offset, "block_rows": [min(inside), max(inside)]}


def _reader_row(graph: Any, rows: dict[str, int], n: str) -> int | None:
    """The row of the first drawn op that reads `n` (through statistics drawn beside their own readers)."""
    for r in graph.order:
        op = graph.ops.get(r)
        if op is not None and n in op.ins:
            row = rows.get(r)
            if row is None and graph.specs[r].axes[-1:] == ("pos",):
                row = _reader_row(graph, rows, r)
            if row is not None:
                return row
    return None
