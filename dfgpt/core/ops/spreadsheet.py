"""What an op's spreadsheet formulas are made of: cell references, ranges, and numbers as text.

>>> num_text(1e-05), num_text(0.5)
('1E-05', '0.5')
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Formula", "Ref", "Shape", "Span", "num_text"]

# One output cell: its index and a formula (str, no '='), a constant (float) or None (empty).
Formula = tuple[tuple[int, ...], "str | float | None"]
Ref = Callable[[str, tuple[int, ...]], str]  # one cell's reference
Span = Callable[[str, tuple[int, ...], tuple[int, ...]], str]  # a contiguous range between two cells
Shape = Callable[[str], tuple[int, ...]]  # a tensor's shape in the workbook


def num_text(x: float) -> str:
    return repr(float(x)).upper()
