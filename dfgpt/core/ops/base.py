"""What every op is: a named output computed from named inputs, and every face it shows the library.

An op kind's class, in its own module, gives all of these (`FACES`; the base raises
`NotImplementedError` for each, and tests/test_op_faces.py checks every registered class
overrides every one):

- `kernel`: the engine's computation of some rows, in place; `forward` runs it;
- `cells_read` / `cells_written`: exact cell index maps as boolean masks;
- `batched` (and `batched_rows`, the same over one flat product where that is faster) and
  `vjp`: the autodiff's forward and vector-Jacobian product over a leading batch axis;
- `text`, `sym_reads` / `sym_compose`, `sheet_formulas`: one cell's formula as text, as
  SymPy, and every output cell's spreadsheet formula;
- `label`: the op's name in pictures and listings;
- the class attributes `kind` (its `OpKind`), `row_reads`, `resident` (kept on a transient
  sheet), and for SymPy `paired` (reads come as product pairs), `shift` (a softmax's max or sum)
  and `cancels` (the max, which an expression without the shift leaves out).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .context import Key, OpContext, RowContext, SheetView
from .grads import Arrays
from .kind import OpKind
from .masks import Mask
from .selection import _sel
from .spreadsheet import Formula, Ref, Shape, Span

__all__ = ["FACES", "Kernel", "Mask", "Op", "Reads"]


Reads = str  # "row", "prefix" or "whole"
# An op's computation of some rows, worked out once: called with the values ({tensor: array}),
# it writes those rows of the op's output in place.
Kernel = Callable[[dict[str, np.ndarray]], None]

# The methods every op kind must give (each raises NotImplementedError here).
FACES = ("kernel", "cells_read", "cells_written", "batched", "vjp", "text", "sym_reads", "sym_compose",
         "sheet_formulas", "label")


@dataclass(frozen=True)
class Op:
    """One named output tensor computed from named input tensors."""

    out: str
    ins: tuple[str, ...]
    kind: ClassVar[OpKind]
    masked: ClassVar[float] = 0.0  # the value of a cell the causal mask leaves unread (a key past its query)
    row_reads: ClassVar[tuple[Reads, ...]] = ()
    resident: ClassVar[bool]  # kept on a transient sheet: the residual stream and the per-row statistics
    paired: ClassVar[bool] = False  # sym_reads come as (a, b) pairs multiplied, then addends
    shift: ClassVar[bool] = False  # a softmax's max or sum: SymPy keeps the shift when one is asked for
    cancels: ClassVar[bool] = False  # a softmax's max: left out of SymPy expressions that drop the shift

    # -- the engine --------------------------------------------------------------------------
    def kernel(self, sel: Any, cap: int, exact: bool) -> Kernel:
        """The computation of rows `sel` (a slice or sorted indices) at capacity `cap`, with
        everything that depends only on them worked out now: a clean read runs a cached list
        of these, so a forward of a small model pays no per-op set-up. A kernel leaves floating-point
        warnings to its caller (a pin may make inf or nan, shown as such): `Engine.ensure` and
        `forward` silence them once around many kernels."""
        raise NotImplementedError

    def forward(self, ctx: RowContext, rows: np.ndarray) -> None:
        """Compute the given rows of the output in `ctx.values`, in place. The same kernel a clean
        read runs, so every road to a row computes it with the same operations, bit for bit."""
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            self.kernel(_sel(rows), ctx.cap, ctx.exact)(ctx.values)

    def cells_read(self, k: int, out_mask: Mask, ctx: OpContext) -> Mask | None:
        """Cells of input `k` read by the cells of `out_mask` (None: none)."""
        raise NotImplementedError

    def cells_written(self, masks: list[Mask | None], ctx: OpContext) -> Mask:
        """Cells of the output that read any cell of the input masks."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return {}

    # -- the autodiff: computed arrays are [B, ...], parameters are unbatched ---------------------
    def batched(self, V: Arrays) -> np.ndarray:
        """The output over a batch of sequences, from the batched values V."""
        raise NotImplementedError

    def batched_rows(self, V: Arrays) -> np.ndarray:
        """`batched` for inference only (greedy decoding): an op may fold the batch into one
        product there (faster, but its sums may round apart from `batched`'s)."""
        return self.batched(V)

    def vjp(self, V: Arrays, g: np.ndarray, G: Arrays) -> None:
        """G[input] += gᵀ ∂out/∂input for every input, for the output's gradient g."""
        raise NotImplementedError

    # -- formulas ----------------------------------------------------------------------------------
    def text(self, view: SheetView, idx: tuple[int, ...]) -> str:
        """The right-hand side of one output cell's formula, over the named cells it reads."""
        raise NotImplementedError

    def sym_reads(self, view: SheetView, idx: tuple[int, ...], keep_shift: bool) -> list[Key]:
        """The input cells of one output cell's formula, with multiplicity, in `sym_compose`'s order."""
        raise NotImplementedError

    def sym_compose(self, vals: list[Any], keep_shift: bool) -> Any:
        """One cell's formula over the values (floats or SymPy) of its `sym_reads`, in order."""
        raise NotImplementedError

    def sheet_formulas(self, shape: Shape, R: Ref, S: Span) -> Iterator[Formula]:
        """(index, formula) for every cell of the output, in index order (see dfgpt.export.workbook_formulas)."""
        raise NotImplementedError

    def label(self) -> str:
        """The op's name in pictures and listings."""
        raise NotImplementedError
