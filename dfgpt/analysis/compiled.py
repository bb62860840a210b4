"""Compiled expressions: a SymPy expression of cells turned back into a numpy function.

`lambdify(e)` walks the expression's DAG once and evaluates each distinct subexpression
once per call (sympy.lambdify prints the whole tree, which repeats the shared
subexpressions of a transformer). Arguments are the symbols sorted by name; arrays
broadcast, so one call evaluates a whole grid of values.

>>> import sympy
>>> x, y = sympy.symbols("x y")
>>> f = lambdify(sympy.exp(x) * y + sympy.Max(x, y))
>>> f.names, float(f(0.0, 2.0))
(('x', 'y'), 4.0)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import sympy

from ..errors import DfgptError, QueryError

if TYPE_CHECKING:
    from ..cells import Cells

__all__ = ["Compiled", "ExpansionError", "lambdify"]


class ExpansionError(DfgptError):
    """A symbolic expansion that would exceed its size budget, or asks for something not symbolic."""



_NUMPY: dict[Any, Callable[..., Any]] = {
    sympy.exp: np.exp,
    sympy.tanh: np.tanh,
    sympy.log: np.log,
    sympy.Abs: np.abs,
    sympy.Max: lambda *a: np.maximum.reduce(np.broadcast_arrays(*a)),
    sympy.Min: lambda *a: np.minimum.reduce(np.broadcast_arrays(*a)),
    sympy.Heaviside: lambda x, h0=0.5: np.heaviside(x, h0),  # the derivative of Max
}


def _np_erf(x: Any) -> Any:
    from scipy.special import erf

    return erf(x)


@dataclass(frozen=True)
class Compiled:
    """A numpy function of an expression's symbols, positional in the order of `names`.

    It evaluates the expression's DAG once per distinct subexpression (sympy.lambdify
    prints the whole tree, which is slow for the shared subexpressions of a transformer).
    """

    names: tuple[str, ...]
    nodes: tuple[Any, ...]  # distinct subexpressions, every argument before its user

    def __call__(self, *values: Any) -> Any:
        if len(values) != len(self.names):
            raise QueryError(f"expected {len(self.names)} values ({', '.join(self.names)}), got {len(values)}.")
        inputs = dict(zip(self.names, values))
        got: dict[Any, Any] = {}
        for node in self.nodes:
            if node.is_Symbol:
                got[node] = inputs[node.name]
            elif (node.is_number and not node.args) or node.is_NumberSymbol or node.is_Number:
                got[node] = float(node)
            else:
                args = [got[a] for a in node.args]
                if node.is_Add:
                    v = args[0]
                    for a in args[1:]:
                        v = v + a
                elif node.is_Mul:
                    v = args[0]
                    for a in args[1:]:
                        v = v * a
                elif node.is_Pow:
                    v = np.power(args[0], args[1])
                elif node.func is sympy.erf:
                    v = _np_erf(args[0])
                elif node.func in _NUMPY:
                    v = _NUMPY[node.func](*args)
                else:
                    raise ExpansionError(f"cannot evaluate {node.func.__name__} numerically; use sympy.lambdify.")
                got[node] = v
        return got[self.nodes[-1]]

    def at(self, sheet: Cells) -> Any:
        """Evaluate at the sheet's current values of the symbols."""
        return self(*[sheet.value(n) for n in self.names])


def lambdify(e: sympy.Expr) -> Compiled:
    """Compile an expression back to numpy; arguments are the symbols sorted by name (arrays broadcast).

    >>> import dfgpt
    >>> from dfgpt.analysis.symbolic import expr
    >>> s = dfgpt.load("sort-random").sheet("CAB")
    >>> f = lambdify(expr(s, "h[0].attn.att[0][2][1]", depth=2))
    >>> bool(abs(f.at(s) - s.value("h[0].attn.att[0][2][1]")) < 1e-12)
    True
    """
    e = sympy.sympify(e)
    order: list[Any] = []
    seen: set[Any] = set()
    stack: list[tuple[Any, bool]] = [(e, False)]
    while stack:  # iterative post-order over distinct nodes
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if node in seen:
            continue
        seen.add(node)
        stack.append((node, True))
        stack.extend((a, False) for a in node.args if a not in seen)
    names = tuple(sorted(s.name for s in e.free_symbols))
    return Compiled(names, tuple(order))
