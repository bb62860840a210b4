"""Spreadsheet formula text for every op (each op writes its own): plain formulas every engine evaluates.

Only functions that Excel, LibreOffice, Google Sheets and the `formulas` package all
implement: SUM, SUMPRODUCT, MMULT (1×1 results only), MAX, EXP, SQRT, TANH, ERF, INDEX,
MATCH. No volatile functions, no array (Ctrl-Shift-Enter) formulas: the only array
arithmetic is inside SUMPRODUCT (`SUMPRODUCT(row-m, row-m)`), which evaluates its
arguments as arrays in every engine.

Conventions (they match the engine's values to rounding):

- LayerNorm variance is the population variance written out:
  `var = SUMPRODUCT(x - mean, x - mean) / C` (not VAR, the sample variance).
- Masked attention: `score[h][t][s]` for `s > t` is an empty cell (the engine holds
  -inf there); `att[h][t][s]` for `s > t` is the constant 0; `score_max`, `exp_sum`
  and `y` read only keys `s ≤ t`.
- `[in, out]` weights are read as a column with `MMULT(x_row, w_col)`, a 1×1 product.

>>> import dfgpt
>>> from dfgpt.export.workbook_formulas import op_formulas
>>> s = dfgpt.load("sort-random").sheet("CAB")
>>> ref = lambda t, i: t + str(list(i))
>>> rng = lambda t, a, b: f"{t}{list(a)}:{list(b)}"
>>> shape = s.engine.shape
>>> next(op_formulas(s.graph.ops["h[0].ln_1.mean"], s.config, shape, ref, rng))
((0,), 'SUM(emb[0, 0]:[0, 47])/48')
"""

from __future__ import annotations

from collections.abc import Iterator

from ..core.config import Config
from ..core.ops import Op
from ..core.ops.spreadsheet import Formula, Ref, Shape, Span

__all__ = ["Formula", "op_formulas"]


def op_formulas(op: Op, cfg: Config, shape: Shape, R: Ref, S: Span) -> Iterator[Formula]:
    """(index, formula) for every cell of the op's output, in index order: the op's own `sheet_formulas`.

    `R(tensor, idx)` is one cell's reference, `S(tensor, first, last)` the reference of
    the contiguous range between two cells of one display row or column.
    """
    return op.sheet_formulas(shape, R, S)
