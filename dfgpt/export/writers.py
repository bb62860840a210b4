"""Export a sheet: a workbook of live formulas (`to_xlsx`) or every tensor's values (`to_npz`).

The workbook reads like the hand-built spreadsheet it descends from:

- `MAP` (first sheet): the input cells where you type tokens (green), the greedy next
  token per position, the temperature, links to every stage, the colour legend and the
  table of every tensor with its Excel name, sheet and range (the name mapping).
- one sheet per stage: `embedding`, `h0.attn` (ln_1, attention, the residual `mid`),
  `h0.mlp` (ln_2, MLP, the block output `out`), ..., `output` (ln_f, logits, softmax);
  each tensor is a labelled block with row and column labels and a link back to `MAP`.
- parameters are constants (purple); tokens and temperature come from the input (green);
  every computed cell is a live formula over cell references (orange); see
  `dfgpt.export.workbook_formulas` for the formulas and the masked-attention convention.

Block layout: rows are positions wherever a tensor has a position axis. `[pos, x]` and
parameters `[a, b]` are a grid; `[pos]` is a column; other vectors a row; `[head, pos, x]`
is one row per position with the heads side by side (column `head·n + x`); `[head, pos]`
is rows = positions, columns = heads. Defined names: one per tensor, `h[0].attn.q` ->
`h0_attn_q` (brackets dropped, dots -> underscores; `logit` stays `logit`, rows =
positions, columns = vocabulary), plus `h0_attn_q_head0`... per head, `input` and `vocab`.

>>> import dfgpt, tempfile, pathlib
>>> s = dfgpt.load("sort-random").sheet("CAB")
>>> r = s.to_xlsx(pathlib.Path(tempfile.mkdtemp()) / "sort.xlsx", progress=False)
>>> r.names["logit"]
"'output'!$B$38:$D$40"
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DfgptError
from .workbook_formulas import op_formulas
from .workbook_layout import FIRST_ROW, excel_name, layout, write_labels, write_map
from .xlsx import Book, col_letter

__all__ = ["MAX_CELLS", "ExportError", "ExportResult", "excel_name", "to_npz", "to_xlsx"]

MAX_CELLS = 2_000_000  # workbooks past this are unusable in spreadsheet programs
MAX_ROWS, MAX_COLS = 1_048_576, 16_384  # the .xlsx grid


class ExportError(DfgptError):
    """A sheet that cannot be exported as asked (too large, unwritable path)."""


@dataclass(frozen=True)
class ExportResult:
    """What was written: counts, the defined names, timings and warnings (pins...)."""

    path: Path
    format: str
    cells: int
    formulas: int
    sheets: tuple[str, ...]
    names: dict[str, str]
    seconds: float
    warnings: tuple[str, ...] = ()

    def __str__(self) -> str:
        lines = [
            f"wrote {self.path} ({self.format}): {self.cells:,} cells, {self.formulas:,} formulas, "
            f"{len(self.sheets)} sheets, {len(self.names)} names in {self.seconds:.2f} s"
        ]
        return "\n".join(lines + [f"warning: {w}" for w in self.warnings])


def _count(sheet: Any) -> int:
    eng = sheet.engine
    return int(sum(int(np.prod(eng.shape(n))) for n in sheet.graph.specs))


def _check_path(given: Any, what: str) -> Path:
    """`given` as a Path to a writable file, or an ExportError naming the problem."""
    if not isinstance(given, (str, os.PathLike)) or isinstance(given, bytes):
        raise ExportError(
            f"the {what} path must be text or a path-like object, got {type(given).__name__}; "
            f"give a file path such as 'sheet.{what}'."
        )
    path = Path(given)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        if path.is_dir():
            raise ExportError(
                f"{path} is a folder; give a file path for the {what}, e.g. {path / ('model.' + what)}."
            )
        if not parent.is_dir():
            raise ExportError(
                f"cannot write {path}: the folder {parent} does not exist or is not a folder; "
                "create it or choose another path."
            )
        if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise ExportError(f"cannot write {path}: permission denied; choose a writable path.")
    except (OSError, ValueError) as e:  # a name too long, an embedded NUL
        raise ExportError(f"cannot write the {what} at {str(path)[:200]!r}: {e}; choose another path.") from None
    if path.suffix.lower() != f".{what}":
        # A workbook under a .csv name opens as garbage; numpy would silently append .npz.
        raise ExportError(
            f"{str(path)[:200]!r} does not end in .{what}, but the file is a .{what}; name it "
            f"{path.with_suffix('.' + what).name!r}."
        )
    return path


def _token_texts(sheet: Any) -> list[str]:
    """Every token's text, its id where the model has none (a checkpoint without a tokenizer)."""
    vocab = sheet.model.vocab
    return [str(v) for v in vocab] + [str(i) for i in range(len(vocab), sheet.config.vocab_size)]


def to_xlsx(sheet: Any, path: str | Path, progress: bool = True) -> ExportResult:
    """Write the sheet as a workbook of live formulas; return what was written.

    Pinned cells are written as constants (yellow) and listed in the warnings. Edited
    parameters and tokens are written with their current values. `progress` prints a
    line per tensor to stderr when stderr is a terminal.
    """
    t0 = time.perf_counter()
    if float(sheet.engine.values["temperature"]) == 0:
        raise ExportError(
            "a workbook's softmax divides by the temperature, so at temperature 0 (greedy) its "
            "probabilities would read #DIV/0!. Export the sheet at a temperature > 0 (every cell but "
            "`prob` and `exp_sum` is the same), or use `to_npz` for the values."
        )
    path = _check_path(path, "xlsx")
    n_cells = _count(sheet)
    if n_cells > MAX_CELLS:
        raise ExportError(
            f"this model's workbook would hold {n_cells:,} cells (parameters and every "
            f"activation of {sheet.T} positions); the limit is {MAX_CELLS:,}. Export a "
            "smaller model or a shorter input, or use `to_npz` for the values."
        )
    g, cfg, eng = sheet.graph, sheet.config, sheet.engine
    titles, blocks, label_row = layout(sheet)
    for b in blocks.values():
        rows, cols = b.size
        if b.top + rows > MAX_ROWS or b.left + cols > MAX_COLS:
            raise ExportError(
                f"{b.tensor} needs {rows:,} × {cols:,} cells on sheet {b.sheet!r}; a worksheet has at "
                f"most {MAX_ROWS:,} rows and {MAX_COLS:,} columns. Export a smaller model."
            )
    book = Book()
    ws = {t: book.sheet(t) for t in titles}
    vocab = _token_texts(sheet)
    V, T = len(vocab), sheet.T
    vocab_ref = f"'embedding'!$B$5:${col_letter(1 + V)}$5"
    show = progress and sys.stderr.isatty()

    def ref(here: str) -> tuple[Any, Any]:
        def R(tensor: str, idx: tuple[int, ...]) -> str:
            b = blocks[tensor]
            r, c = b.at(idx)
            a = f"{col_letter(c)}{r}"
            return a if b.sheet == here else f"'{b.sheet}'!{a}"

        def S(tensor: str, first: tuple[int, ...], last: tuple[int, ...]) -> str:
            b = blocks[tensor]
            (r0, c0), (r1, c1) = b.at(first), b.at(last)
            a = f"{col_letter(c0)}{r0}" + ("" if (r0, c0) == (r1, c1) else f":{col_letter(c1)}{r1}")
            return a if b.sheet == here else f"'{b.sheet}'!{a}"

        return R, S

    # -- MAP: input cells, predictions, temperature, links, legend, name table -------------------
    mp = ws["MAP"]
    mp.text(1, 1, f"dfgpt workbook — {sheet.model!r}", "title")
    mp.text(2, 1, "Type one token per green input cell (same length); every formula recalculates.", "label")
    mp.text(3, 1, "position", "header")
    mp.text(4, 1, "input", "header")
    mp.text(5, 1, "next token (greedy)", "header")
    mp.text(6, 1, "temperature", "header")
    mp.widths[1] = 24
    logit = blocks["logit"]
    for t, tok in enumerate(sheet.tokens):
        mp.number(3, 2 + t, t, "header")
        mp.text(4, 2 + t, vocab[tok], "input")
        r, c0 = logit.at((t, 0))
        row = f"'output'!{col_letter(c0)}{r}:{col_letter(c0 + V - 1)}{r}"
        mp.formula(5, 2 + t, f"INDEX({vocab_ref},1,MATCH(MAX({row}),{row},0))")
    mp.number(6, 2, float(eng.values["temperature"]), "input")
    book.define("input", f"'MAP'!$B$4:${col_letter(1 + T)}$4")
    book.define("vocab", vocab_ref)

    # -- the vocabulary row and the stage sheets' titles ------------------------------------------
    ev = ws["embedding"]
    ev.text(FIRST_ROW, 1, "vocabulary", "label")
    ev.text(FIRST_ROW, 2, "token texts; tokens[t] = MATCH(input, vocabulary, 0) - 1", "label")
    ev.text(5, 1, "token", "header")
    for v, text in enumerate(vocab):
        ev.text(5, 2 + v, text, "parameter")
    stage_doc = {"embedding": "tokens, token and position embeddings", "output": "final LayerNorm, logits, softmax"}
    for title in titles[1:]:
        w = ws[title]
        doc = stage_doc.get(title) or (
            "LayerNorm 1, attention, residual" if title.endswith("attn") else "LayerNorm 2, MLP, block output"
        )
        w.text(1, 1, f"{title}: {doc}", "title")
        w.link(2, 1, "← MAP", "'MAP'!A1")
        w.widths[1] = 18

    # -- blocks ------------------------------------------------------------------------------------
    warnings: list[str] = []
    n_formulas = 0
    n_pinned = 0
    for name in g.order:
        spec, blk = g.specs[name], blocks[name]
        w = ws[blk.sheet]
        if name != "temperature":
            write_labels(w, blk, spec, label_row[name], sheet)
        if show:
            print(f"export: {name}", file=sys.stderr)
        if spec.kind == "parameter":
            vals = np.asarray(eng.view(name), dtype=np.float64)
            w.grid(blk.top, blk.left, vals.reshape(blk.size), "parameter")  # grid or row blocks
            continue
        if name == "tokens":
            for t in range(T):
                r, c = blk.at((t,))
                w.formula(r, c, f"MATCH('MAP'!{col_letter(2 + t)}4,{vocab_ref},0)-1", "input")
            continue
        if spec.kind != "computed":
            continue
        R, S = ref(blk.sheet)
        pins = eng.pins.get(name, {})
        for idx, f in op_formulas(g.ops[name], cfg, eng.shape, R, S):
            r, c = blk.at(idx)
            if idx in pins:
                w.number(r, c, pins[idx], "pinned")
                n_pinned += 1
            elif f is None:
                w.empty(r, c, "masked")
            elif isinstance(f, float):
                w.number(r, c, f, "masked")
            else:
                w.formula(r, c, f)
                n_formulas += 1
        book.define(excel_name(name), blk.ref())
        if blk.mode == "heads":
            n = blk.shape[2]
            for h in range(blk.shape[0]):
                first, last = blk.at((h, 0, 0)), blk.at((h, blk.shape[1] - 1, n - 1))
                book.define(
                    f"{excel_name(name)}_head{h}",
                    f"'{blk.sheet}'!${col_letter(first[1])}${first[0]}:${col_letter(last[1])}${last[0]}",
                )
    for name in g.order:
        if g.specs[name].kind != "computed":
            book.define(excel_name(name), blocks[name].ref())
    if n_pinned:
        pinned = [sheet.name(k, i) for k, d in eng.pins.items() for i in d]
        warnings.append(
            f"{n_pinned} pinned cell(s) exported as constants (yellow), not formulas: "
            + ", ".join(pinned[:10]) + (" ..." if len(pinned) > 10 else "")
        )
    low = [v.lower() for v in vocab]
    if len(set(low)) != len(low) or any(ch in v for v in vocab for ch in "*?~"):
        warnings.append(
            "the vocabulary has tokens that differ only in case or contain * ? ~; MATCH in the "
            "input cells is case-insensitive and treats those as wildcards, so typed inputs may map wrongly."
        )
    write_map(mp, titles, blocks, label_row, g, book, warnings)
    try:
        book.save(path)
    except OSError as e:
        raise ExportError(f"cannot write {path}: {e.strerror or e}; choose a writable path.") from None
    return ExportResult(
        path, "xlsx", n_cells, n_formulas, tuple(titles), dict(book.names),
        time.perf_counter() - t0, tuple(warnings),
    )


def to_npz(sheet: Any, path: str | Path) -> ExportResult:
    """Every tensor's current values by dfgpt name (np.savez; load with allow_pickle=False).

    Masked attention scores hold -inf, as in the engine.
    """
    t0 = time.perf_counter()
    path = _check_path(path, "npz")
    arrays = {name: np.array(sheet.values(name)) for name in sheet.graph.order}
    try:
        with open(path, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
    except OSError as e:
        raise ExportError(f"cannot write {path}: {e.strerror or e}; choose a writable path.") from None
    pins = sum(len(d) for d in sheet.engine.pins.values())
    warn = (f"{pins} pinned cell(s): their pinned values are exported",) if pins else ()
    return ExportResult(
        path, "npz", int(sum(a.size for a in arrays.values())), 0, (), {}, time.perf_counter() - t0, warn
    )
