"""Cells as SymPy expressions: a formula expanded `depth` steps upstream, or a slice with only some cells free.

`expr(sheet, cell, depth=k)` writes the cell over the cells k steps upstream, each a
`Symbol` named by its cell name (so `sheet.value(sym.name)` is its value); expansion goes
one named intermediate (mean, var, q, score_max, ...) per step. `expr(sheet, cell,
free=[cells])` keeps only those cells symbolic and substitutes every other number, through
as many layers as needed: only the cells both in the target's cone and downstream of a free
cell are built symbolically, everything else is one number. Sizes are counted before any
SymPy object is made, and an expansion over `budget` operations is refused. `expand()` is
never called.

>>> import dfgpt
>>> s = dfgpt.load("sort-random").sheet("CAB")
>>> e = expr(s, "h[0].ln_1.mean[1]")
>>> len(e.free_symbols), round(float(e.subs({x: s.value(x.name) for x in e.free_symbols})), 12) == round(
...     s.value("h[0].ln_1.mean[1]"), 12)
(48, True)
>>> e = expr(s, "logit[2][A]", free=["h[2].mlp.c_proj.b[3]"])
>>> [x.name for x in e.free_symbols]
['h[2].mlp.c_proj.b[3]']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import sympy

from ..core.ops import SheetView
from ..core.ops.folding import is_num
from ..errors import QueryError
from .compiled import Compiled, ExpansionError, lambdify  # re-exported: compile an expression back to numpy
from .formula import sheet_view

if TYPE_CHECKING:
    from ..cells import Cells

__all__ = ["DEFAULT_BUDGET", "Compiled", "ExpansionError", "expr", "lambdify", "latex"]

DEFAULT_BUDGET = 20_000
Key = tuple[str, tuple[int, ...]]


# -- the builder ------------------------------------------------------------------------------------
def _cells(masks: dict[str, np.ndarray], order: list[str]) -> list[Key]:
    """Cells of masks in topological (graph) order: every input before the cells that read it."""
    return [(t, tuple(int(i) for i in ix)) for t in order if t in masks for ix in np.argwhere(masks[t])]


def _plan(
    sheet: Cells,
    view: SheetView,
    cells: list[Key],
    below: dict[Key, int],
    size: dict[Key, int],
    leaf: Callable[[Key], Any],
    is_symbol: Callable[[Key], bool],
    keep_shift: bool,
    budget: int,
    what: str,
) -> dict[Key, list[Key]]:
    """Size every cell (tree size) before building anything, and refuse over budget.

    `below` holds the sizes of already-planned inputs (it may be `size` itself); a folded
    number costs nothing, a symbol 1, and a product with a numeric zero vanishes (hand-made
    weights are mostly zeros).
    """

    def cost(k: Key) -> int:
        return below.get(k, 1 if is_symbol(k) else 0)

    def zero(k: Key) -> bool:
        return k not in below and not is_symbol(k) and leaf(k) == 0.0

    reads: dict[Key, list[Key]] = {}
    ops = sheet.graph.ops
    for key in cells:
        op = ops[key[0]]
        r = reads[key] = op.sym_reads(view, key[1], keep_shift)
        if op.paired:
            pairs = len(r) // 2
            n = sum(
                cost(a) + cost(b) + 2
                for a, b in zip(r[0 : 2 * pairs : 2], r[1 : 2 * pairs : 2])
                if cost(a) + cost(b) and not (zero(a) or zero(b))
            )
            n += sum(cost(k) + 1 for k in r[2 * pairs :] if cost(k)) + 1
        else:
            n = sum(cost(k) + 1 for k in r if cost(k)) + 1
        if n > budget:
            raise ExpansionError(
                f"{what} would build an expression of about {n:,} operations (at {sheet.name(*key)}), over "
                f"the budget of {budget:,}. Ask for a smaller depth, keep fewer cells free, or pass a larger "
                "budget= (SymPy slows down past ~10^5 operations)."
            )
        size[key] = n
    return reads


def _make(
    sheet: Cells,
    reads: dict[Key, list[Key]],
    below: dict[Key, Any],
    built: dict[Key, Any],
    leaf: Callable[[Key], Any],
    keep_shift: bool,
) -> None:
    """Build the planned cells in order, over inputs from `below` (built earlier) or leaves."""
    ops = sheet.graph.ops
    for key, r in reads.items():
        vals = [below[k] if k in below else leaf(k) for k in r]
        built[key] = ops[key[0]].sym_compose(vals, keep_shift)


def _symbol(sheet: Cells, key: Key) -> sympy.Symbol:
    return sympy.Symbol(sheet.name(*key))


def _num(x: float) -> Any:
    return sympy.Integer(int(x)) if x.is_integer() and abs(x) < 2**53 else sympy.Float(x)


def _one(sheet: Cells, cell: str) -> tuple[Key, dict[str, np.ndarray]]:
    tensor, idx = sheet.cell(cell)
    m = np.zeros(sheet.engine.shape(tensor), bool)
    m[idx] = True
    return (tensor, idx), {tensor: m}


def expr(
    sheet: Cells,
    cell: str,
    depth: int = 1,
    free: Sequence[str] | None = None,
    budget: int = DEFAULT_BUDGET,
    subs: dict[str, Any] | None = None,
) -> sympy.Expr:
    """One cell as a sympy expression.

    depth: expand k steps upstream over named cells (0: the cell's own Symbol).
    free: only these cells are Symbols; every other number is substituted, through any
    number of layers (depth is then ignored). subs: {cell: sympy expression} used in
    place of those cells' values (e.g. a weight written as `2*Lg`); implies free mode.
    Softmax rows downstream of a free cell are written without their max shift
    (exp(s)/Σexp), which is the same function.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise QueryError(f"depth must be an integer ≥ 0 (0: the cell itself, 1: its formula), got {depth!r}.")
    if not isinstance(budget, int) or budget < 1:
        raise QueryError(f"budget must be a positive integer (operations), got {budget!r}.")
    target, tmask = _one(sheet, cell)
    eng = sheet.engine
    if free is None and subs is None:
        return _expand(sheet, target, tmask, depth, budget)
    if isinstance(free, str):
        free = [free]
    cone = eng.ancestors(tmask)
    seeds: dict[str, np.ndarray] = {}
    given: dict[Key, Any] = {}
    for name in list(free or []) + list(subs or {}):
        key, mm = _one(sheet, name)
        m = mm[key[0]]
        if key[0] in ("tokens",):
            raise ExpansionError(
                f"{name} is a discrete input (a token id), not a number to keep symbolic; "
                "change it with sheet.set instead."
            )
        in_cone = key[0] in cone and bool(cone[key[0]][key[1]])
        if not in_cone and key != target:
            if subs is not None and name in subs:
                continue  # substituting a cell the target does not read changes nothing
            raise ExpansionError(
                f"{sheet.name(*key)} does not affect {sheet.name(*target)}: it is outside its cone "
                f"(see sheet.provenance({sheet.name(*target)!r}))."
            )
        seeds[key[0]] = seeds[key[0]] | m if key[0] in seeds else m
        given[key] = _symbol(sheet, key) if subs is None or name not in subs else sympy.sympify(subs[name])
    if target in given:
        return given[target]
    sheet.compute(cone)
    down = eng.descendants(seeds)
    # A softmax is the same function without its max shift, unless a max or a sum is itself
    # asked for (or held as a symbol): then the shift must stay to keep the values right.
    keep_shift = any(k[0] in eng.graph.ops and eng.graph.ops[k[0]].shift for k in [target, *given])
    sym = {}
    for t, m in down.items():
        if sheet.graph.specs[t].kind != "computed" or t not in cone:
            continue
        if not keep_shift and sheet.graph.ops[t].cancels and t != target[0]:
            continue  # the shift of a softmax cancels; it is left out
        sym[t] = m & cone[t]
    cells = [k for k in _cells(sym, sheet.graph.order) if k not in given]
    vals = eng.values

    def leaf(key: Key) -> Any:
        if key in given:
            return given[key]
        return float(vals[key[0]][key[1]])

    size: dict[Key, int] = {}
    what = f"{sheet.name(*target)} with {len(given)} free cell(s)"
    reads = _plan(sheet, sheet_view(sheet), cells, size, size, leaf, given.__contains__, keep_shift, budget, what)
    built: dict[Key, Any] = {}
    _make(sheet, reads, built, built, leaf, keep_shift)
    out = built.get(target, leaf(target))
    return _num(out) if is_num(out) else _tidy(out)


def _tidy(e: Any) -> Any:
    """Write dyadic Floats (1.0, 0.25, 2048.0: typical of hand-made weights) as exact rationals."""
    exact = {}
    for f in e.atoms(sympy.Float):
        scaled = float(f) * 1024
        if scaled.is_integer() and abs(scaled) < 2**53:
            exact[f] = sympy.Rational(int(scaled), 1024)
    return e.xreplace(exact) if exact else e


def _expand(sheet: Cells, target: Key, tmask: dict[str, np.ndarray], depth: int, budget: int) -> sympy.Expr:
    """Expand the target over the cells exactly `depth` steps upstream (parameters and inputs end early).

    Levels are found breadth-first with the engine's exact precedent masks; a cell reached
    at two levels is expanded to two depths, so every leaf of every path is k steps away.
    """
    eng, specs = sheet.engine, sheet.graph.specs
    levels: list[list[Key]] = []
    frontier = tmask
    for _ in range(depth):
        nxt: dict[str, np.ndarray] = {}
        here: dict[str, np.ndarray] = {}
        for t, m in frontier.items():
            if specs[t].kind != "computed":
                continue
            m = sheet._unpinned(t, m)
            if not m.any():
                continue
            here[t] = m
            for p, pm in eng.precedents(t, m).items():
                nxt[p] = nxt[p] | pm if p in nxt else pm
        if not here:
            break
        levels.append(_cells(here, sheet.graph.order))
        frontier = nxt
    if not levels:
        return _symbol(sheet, target)
    what = f"expanding {sheet.name(*target)} to depth {depth}"
    names: dict[Key, sympy.Symbol] = {}

    def leaf(k: Key) -> sympy.Symbol:
        if k not in names:
            names[k] = _symbol(sheet, k)
        return names[k]

    plans = []
    below_size: dict[Key, int] = {}
    view = sheet_view(sheet)
    for cells in reversed(levels):  # deepest level first: its inputs are leaves
        size: dict[Key, int] = {}
        plans.append(_plan(sheet, view, cells, below_size, size, leaf, lambda k: True, True, budget, what))
        below_size = size
    below: dict[Key, Any] = {}
    for reads in plans:
        built: dict[Key, Any] = {}
        _make(sheet, reads, below, built, leaf, True)
        below = built
    return below[target]


def latex(sheet: Cells, cell: str, **kw: Any) -> str:
    """`cell = expression` in LaTeX; takes the keywords of `expr`.

    >>> import dfgpt
    >>> print(latex(dfgpt.load("aab").sheet("aab"), "h[0].out[2][5]"))
    \\mathtt{h[0].out[2][5]} = \\mathtt{emb[2][5]} + \\mathtt{h[0].attn.out[2][5]}
    """
    e = expr(sheet, cell, **kw)
    # Cell names as upright text: sympy would read `ln_1` as a subscript.
    names = {s: _tex_name(s.name) for s in e.free_symbols}
    return f"{_tex_name(sheet.name(*sheet.cell(cell)))} = {sympy.latex(e, symbol_names=names)}"


def _tex_name(name: str) -> str:
    return r"\mathtt{" + name.replace("_", r"\_") + "}"
