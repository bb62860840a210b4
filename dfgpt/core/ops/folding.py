"""Number-or-symbol arithmetic for SymPy expressions: numbers fold into floats, symbols stay.

>>> import sympy
>>> x = sympy.Symbol("x")
>>> fsum_([1.0, 2.0]), fsum_([x, 1.0]), mul(0.0, x)
(3.0, x + 1.0, 0.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import sympy

__all__ = ["erf", "exp", "fsum_", "is_num", "mul", "sqrt", "tanh"]


def is_num(x: Any) -> bool:
    return isinstance(x, float)


def mul(a: Any, b: Any) -> Any:
    if (is_num(a) and a == 0.0) or (is_num(b) and b == 0.0):
        return 0.0
    return a * b


def fsum_(vals: Sequence[Any]) -> Any:
    """A sum: the numbers with `math.fsum`, the symbols as one `sympy.Add`."""
    nums = [v for v in vals if is_num(v)]
    syms = [v for v in vals if not is_num(v)]
    if not syms:
        return math.fsum(nums)
    total = math.fsum(nums)
    return sympy.Add(*syms, total) if nums and total != 0.0 else sympy.Add(*syms)


def _fn(name: str) -> Callable[[Any], Any]:
    numeric = {"exp": math.exp, "sqrt": math.sqrt, "tanh": math.tanh, "erf": math.erf}[name]
    sym = {"exp": sympy.exp, "sqrt": sympy.sqrt, "tanh": sympy.tanh, "erf": sympy.erf}[name]
    return lambda x: numeric(x) if is_num(x) else sym(x)


exp, sqrt, tanh, erf = (_fn(n) for n in ("exp", "sqrt", "tanh", "erf"))
