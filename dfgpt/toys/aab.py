"""The hand-made `aab` model read as formulas in its one constant `Lg`: when does it stop working?

>>> greedy_next(aab_model(), "aabaa")
'b'
"""

from __future__ import annotations

from typing import Any

import numpy as np
import sympy

from ..analysis.symbolic import expr
from ..cells import Cells
from ..core.builder import build
from ..models.handmade import AAB, aab_model, aab_params
from ..models.weights import Weights

__all__ = ["aab_flip", "aab_symbolic", "greedy_next"]


def greedy_next(model: Weights, text: str) -> str:
    """The greedy next letter after `text`, reading the last `block_size` letters (as generation does)."""
    sheet = Cells(model, model.encode(text[-model.config.block_size :]))
    return model.vocab[int(np.argmax(sheet.values("logit")[-1]))]


def _lg_subs() -> dict[str, Any]:
    """{parameter cell name: sympy expression in Lg} for every weight that depends on Lg."""
    Lg = sympy.Symbol("Lg")
    one, two = aab_params(1.0), aab_params(2.0)
    graph = build(AAB)
    vocab = AAB.vocab
    out: dict[str, Any] = {}
    for name, a1 in one.items():
        slope, icept = two[name] - a1, 2 * a1 - two[name]
        axes = graph.specs[name].axes
        for idx in np.argwhere(slope != 0):
            parts = [vocab[i] if ax == "vocab" else str(i) for ax, i in zip(axes, idx)]
            cell = name + "".join(f"[{p}]" for p in parts)
            out[cell] = sympy.nsimplify(float(slope[tuple(idx)])) * Lg + sympy.nsimplify(float(icept[tuple(idx)]))
    return out


def aab_symbolic(prefix: str = "aabaa", cell: str = "logit[4][b]", budget: int = 20_000) -> Any:
    """A cell of the `aab` model as a sympy expression in the symbol `Lg` (every other number substituted).

    >>> import sympy
    >>> e = aab_symbolic("aabaa", "logit[4][b]")
    >>> sorted(s.name for s in e.free_symbols)
    ['Lg']
    >>> round(float(e.subs("Lg", 1024)), 6)
    1024.0
    """
    model = aab_model()
    sheet = Cells(model, model.encode(prefix[-AAB.block_size :]))
    return expr(sheet, cell, free=[], subs=_lg_subs(), budget=budget)


def aab_flip(prefix: str = "aabaa", hi: float = 1024.0) -> list[float]:
    """The values of Lg in (0, hi] where the greedy prediction after `prefix` changes (sympy nsolve).

    >>> [round(x, 4) for x in aab_flip("aabaa")]
    [5.055]
    """
    window = prefix[-AAB.block_size :]
    t = len(window) - 1
    diff = aab_symbolic(prefix, f"logit[{t}][b]") - aab_symbolic(prefix, f"logit[{t}][a]")
    Lg = next(iter(diff.free_symbols))
    f = sympy.lambdify(Lg, diff, "mpmath")
    grid = np.linspace(hi / 4096, hi, 4097)
    vals = [float(f(x)) for x in grid]
    roots = []
    for x0, x1, v0, v1 in zip(grid[:-1], grid[1:], vals[:-1], vals[1:]):
        if v0 == 0 or (v0 < 0) != (v1 < 0):
            roots.append(float(sympy.nsolve(diff, Lg, (float(x0), float(x1)), solver="bisect")))
    return roots
