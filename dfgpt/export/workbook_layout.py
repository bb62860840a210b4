"""Where each tensor sits in the exported workbook: stage sheets, labelled blocks, the MAP tables.

Rows are positions wherever a tensor has a position axis. `[pos, x]` and parameters
`[a, b]` are a grid; `[pos]` is a column; other vectors a row; `[head, pos, x]` is one
row per position with the heads side by side (column `head·n + x`); `[head, pos]` is
rows = positions, columns = heads. Each block has a title row (dfgpt name, kind, shape,
Excel name) and row / column labels.

>>> excel_name("h[0].attn.q"), sheet_title("h[0].ln_1.out", mlp=True), sheet_title("logit", True)
('h0_attn_q', 'h0.attn', 'output')
>>> Block("h[0].attn.q", "h0.attn", 10, 2, (3, 4, 16), "heads").at((1, 2, 5))
(12, 23)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .xlsx import Book, XSheet, col_letter

__all__ = ["FIRST_ROW", "Block", "excel_name", "layout", "sheet_title", "write_labels", "write_map"]

FIRST_ROW = 4  # stage sheets: title, back link, blank, then blocks


def excel_name(tensor: str) -> str:
    """The defined name of a tensor: 'h[0].attn.q' -> 'h0_attn_q'; 'logit' -> 'logit'."""
    return re.sub(r"\[(\d+)\]", r"\1", tensor).replace(".", "_")


def sheet_title(tensor: str, mlp: bool) -> str:
    """The stage worksheet a tensor's block lives on."""
    m = re.match(r"h\[(\d+)\]\.(\w+)", tensor)
    if m:
        layer, part = m.groups()
        to_mlp = part in ("ln_2", "mlp") or (part == "out" and mlp)
        return f"h{layer}.{'mlp' if to_mlp else 'attn'}"
    if tensor in ("tokens", "wte", "wpe", "emb"):
        return "embedding"
    if tensor == "temperature":
        return "MAP"
    return "output"


@dataclass(frozen=True)
class Block:
    """Where one tensor's cells are: sheet, first data cell and display mode."""

    tensor: str
    sheet: str
    top: int
    left: int
    shape: tuple[int, ...]
    mode: str  # scalar | column | row | grid | heads_by_pos | heads

    @property
    def size(self) -> tuple[int, int]:
        s = self.shape
        return {
            "scalar": (1, 1),
            "column": (s[0], 1) if s else (1, 1),
            "row": (1, s[0]) if s else (1, 1),
            "grid": s[:2] if len(s) == 2 else (1, 1),
            "heads_by_pos": (s[1], s[0]) if len(s) == 2 else (1, 1),
            "heads": (s[1], s[0] * s[2]) if len(s) == 3 else (1, 1),
        }[self.mode]

    def at(self, idx: tuple[int, ...]) -> tuple[int, int]:
        """(row, column) of one cell, 1-based."""
        m, r, c = self.mode, self.top, self.left
        if m == "scalar":
            return r, c
        if m == "column":
            return r + idx[0], c
        if m == "row":
            return r, c + idx[0]
        if m == "grid":
            return r + idx[0], c + idx[1]
        if m == "heads_by_pos":
            return r + idx[1], c + idx[0]
        return r + idx[1], c + idx[0] * self.shape[2] + idx[2]

    def ref(self, absolute: bool = True) -> str:
        rows, cols = self.size
        d = "$" if absolute else ""
        a = f"{d}{col_letter(self.left)}{d}{self.top}"
        b = f"{d}{col_letter(self.left + cols - 1)}{d}{self.top + rows - 1}"
        return f"'{self.sheet}'!{a}" + (f":{b}" if (rows, cols) != (1, 1) else "")


def _mode(axes: tuple[str, ...]) -> str:
    if not axes:
        return "scalar"
    if len(axes) == 1:
        return "column" if axes[0] == "pos" else "row"
    if len(axes) == 2:
        return "heads_by_pos" if axes == ("head", "pos") else "grid"
    return "heads"


def layout(sheet: Any) -> tuple[list[str], dict[str, Block], dict[str, int]]:
    """Stage sheet titles in order, a Block per tensor, and each sheet's label row per tensor."""
    g, cfg, eng = sheet.graph, sheet.config, sheet.engine
    titles = ["MAP", "embedding"]
    for layer in range(cfg.n_layer):
        titles += [f"h{layer}.attn"] + ([f"h{layer}.mlp"] if cfg.mlp else [])
    titles.append("output")
    cursor = {t: FIRST_ROW for t in titles}
    cursor["embedding"] = FIRST_ROW + 3  # the vocabulary row comes first
    blocks: dict[str, Block] = {}
    label_row: dict[str, int] = {}
    for name in g.order:
        spec = g.specs[name]
        title = sheet_title(name, cfg.mlp)
        mode = _mode(spec.axes)
        if name == "temperature":
            blocks[name] = Block(name, "MAP", 6, 2, (), "scalar")
            continue
        heads = 2 if mode == "heads" else (0 if mode == "scalar" else 1)
        top = cursor[title] + 1 + heads
        blk = Block(name, title, top, 2, eng.shape(name), mode)
        label_row[name] = cursor[title]
        cursor[title] = top + blk.size[0] + 1
        blocks[name] = blk
    return titles, blocks, label_row



def _axis_label(sheet: Any, axis: str, i: int) -> str | int:
    if axis == "vocab":  # the token's text; its id where the model has no texts (no tokenizer)
        vocab = sheet.model.vocab
        return str(vocab[i]) if i < len(vocab) else str(i)
    return i


def write_labels(w: XSheet, blk: Block, spec: Any, row: int, sheet: Any) -> None:
    """The block's title row, its column header(s) and row labels."""
    dims = " × ".join(f"{a} {n}" for a, n in zip(spec.axes, blk.shape)) or "scalar"
    w.text(row, 1, spec.name, "label")
    w.text(row, 2, f"{spec.kind} · {dims} · {spec.doc} · name {excel_name(spec.name)}", "plain")
    axes, shape, mode = spec.axes, blk.shape, blk.mode
    if mode == "scalar":
        return
    hdr = blk.top - 1
    if mode == "heads":
        H, n = shape[0], shape[2]
        for h in range(H):
            w.text(hdr - 1, blk.left + h * n, f"head {h}", "header")
            for x in range(n):
                w.number(hdr, blk.left + h * n + x, x, "header")
        w.text(hdr, 1, f"pos \\ {axes[2]}", "header")
        row_axis, n_rows = "pos", shape[1]
    elif mode == "heads_by_pos":
        for h in range(shape[0]):
            w.text(hdr, blk.left + h, f"head {h}", "header")
        w.text(hdr, 1, "pos \\ head", "header")
        row_axis, n_rows = "pos", shape[1]
    elif mode == "column":
        w.text(hdr, 1, "pos", "header")
        w.text(hdr, blk.left, spec.name.rsplit(".", 1)[-1], "header")
        row_axis, n_rows = "pos", shape[0]
    elif mode == "row":
        w.text(hdr, 1, axes[0], "header")
        for x in range(shape[0]):
            w.number(hdr, blk.left + x, x, "header")
        return
    else:
        w.text(hdr, 1, f"{axes[0]} \\ {axes[1]}", "header")
        for x in range(shape[1]):
            lab = _axis_label(sheet, axes[1], x)
            if isinstance(lab, str):
                w.text(hdr, blk.left + x, lab, "header")
            else:
                w.number(hdr, blk.left + x, lab, "header")
        row_axis, n_rows = axes[0], shape[0]
    for i in range(n_rows):
        lab = _axis_label(sheet, row_axis, i)
        if isinstance(lab, str):
            w.text(blk.top + i, 1, lab, "header")
        else:
            w.number(blk.top + i, 1, lab, "header")


def write_map(
    mp: XSheet, titles: list[str], blocks: dict[str, Block], label_row: dict[str, int],
    g: Any, book: Book, warnings: list[str],
) -> None:
    """MAP: stage links, colour legend, notes, warnings and the tensor / name table."""
    r = 8
    mp.text(r, 1, "Stages", "label")
    for title in titles[1:]:
        r += 1
        mp.link(r, 1, title, f"'{title}'!A1")
    r += 2
    mp.text(r, 1, "Colours", "label")
    legend = [("parameter", "parameter: a constant weight (purple)"),
              ("input", "from the input: typed tokens, token ids, temperature (green)"),
              ("computed", "intermediate: a live formula (orange)"),
              ("masked", "masked attention: score empty, att the constant 0 (grey)"),
              ("pinned", "pinned in dfgpt: exported as a constant (yellow)")]
    for style, text in legend:
        r += 1
        mp.text(r, 1, style, style)
        mp.text(r, 2, text)
    notes = [
        "LayerNorm var = SUMPRODUCT(x-mean, x-mean)/C: the population variance.",
        "score[h][t][s] for s > t is empty and att[h][t][s] is 0; softmax sums keys s <= t only.",
        "Defined names: h[0].attn.q -> h0_attn_q (brackets dropped, dots to underscores), "
        "per head h0_attn_q_head0; logit is rows = positions, columns = vocabulary.",
        "[head, pos, x] blocks: one row per position, heads side by side; [head, pos]: columns = heads.",
    ]
    r += 2
    mp.text(r, 1, "Notes", "label")
    for text in notes + [f"WARNING: {w_}" for w_ in warnings]:
        r += 1
        mp.text(r, 1, text)
    r += 2
    for c, head in enumerate(("tensor", "Excel name", "sheet", "range", "kind", "shape", "what"), 1):
        mp.text(r, c, head, "label")
    for name in g.order:
        blk, spec = blocks[name], g.specs[name]
        r += 1
        row = label_row.get(name, blk.top)
        mp.link(r, 1, name, f"'{blk.sheet}'!A{row}")
        mp.text(r, 2, excel_name(name))
        mp.text(r, 3, blk.sheet)
        mp.text(r, 4, blk.ref().split("!", 1)[1])
        mp.text(r, 5, spec.kind, spec.kind)
        mp.text(r, 6, " × ".join(map(str, blk.shape)) or "scalar")
        mp.text(r, 7, spec.doc)


