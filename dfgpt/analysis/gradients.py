"""Gradients of a sheet's cells: ∂target/∂cell for every cell of the target's cone.

`grad(sheet, target)` runs dfgpt.core.autodiff with batch 1 on the engine's values
(edits and pins included), a reverse sweep over the ops in reverse topological order.

>>> import dfgpt
>>> s = dfgpt.load("sort-random").sheet("CABACA")
>>> g = s.grad("logit[5][A]")
>>> g["logit[5][A]"], g["wpe[6][0]"]
(1.0, 0.0)
>>> g.arrays["wte"].shape
(3, 48)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..core.autodiff import Arrays, backward, needed, pinned_cells
from ..core.blas import one_blas_thread
from ..html import table
from .target import resolve

if TYPE_CHECKING:
    from ..cells import Cells

__all__ = ["Gradient", "grad"]


@dataclass(frozen=True)
class Gradient:
    """∂target/∂cell for every cell: `arrays[tensor]` (logical shape, 0 outside the cone) and by name."""

    target: str
    value: float
    arrays: dict[str, np.ndarray]
    resolve: Callable[[str], tuple[str, tuple[int, ...]]] = field(repr=False, compare=False)
    cells: int = 1  # how many cells the target sums (a selection's); a logit difference counts as 1

    @property
    def shown(self) -> str:
        """The target as printed: `Σ logit[5]` for a selection, whose gradient is of its sum."""
        return f"Σ {self.target} ({self.cells:,} cells)" if self.cells > 1 else self.target

    def __getitem__(self, cell: str) -> float:
        tensor, idx = self.resolve(cell)
        a = self.arrays.get(tensor)
        return 0.0 if a is None else float(a[idx])

    def tensors(self) -> list[str]:
        """The tensors the target depends on (nonzero gradient somewhere)."""
        return [n for n, a in self.arrays.items() if np.any(a)]

    def __repr__(self) -> str:
        return f"Gradient(∂{self.shown} = {self.value:+.6g} by the cells of {len(self.tensors())} tensors)"

    def _repr_html_(self) -> str:
        rows = [[n, f"{int(np.count_nonzero(a)):,}", f"{float(np.abs(a).max()):.5g}"]
                for n, a in self.arrays.items() if np.any(a)]
        return table(f"∂{self.shown} (= {self.value:+.6g}) by tensor", ["tensor", "nonzero cells", "max |∂|"], rows)


def grad(sheet: Cells, target: str) -> Gradient:
    """∂target/∂cell for every cell of the target's cone.

    `target`: one cell (`logit[5][A]`); a selection, which means the **sum** of its cells
    (`logit[5]` is ∂(Σ_v logit[5][v]), not one gradient per cell); or a logit difference
    `logit_diff:A,C` (also `logit:A`, `prob:A`, read at the last position unless `@t`), see
    dfgpt.analysis.target. Only the position rows up to the target's last row are used: later
    rows are outside every cone (the causal mask). Values come from the engine, so edits and
    pins count.

    >>> import dfgpt
    >>> s = dfgpt.load("sort").sheet("CABACA")
    >>> d, a, c = s.grad("logit_diff:A,C"), s.grad("logit[5][A]"), s.grad("logit[5][C]")
    >>> bool(np.allclose(d.arrays["wte"], a.arrays["wte"] - c.arrays["wte"], rtol=0, atol=1e-12))
    True
    """
    tgt = resolve(sheet, target)
    masks, weights = tgt.masks, tgt.weights
    eng = sheet.engine
    specs = sheet.graph.specs
    last = 0
    for tensor, m in masks.items():
        ra = specs[tensor].row_axis
        if ra is not None and m.any():
            # The last position any selected cell sits at, on the row axis or a key axis
            # (a masked att[h][t][s > t] is a target too).
            for a, ax in enumerate(specs[tensor].axes):
                if ax in ("pos", "key"):
                    other = tuple(b for b in range(m.ndim) if b != a)
                    at = np.flatnonzero(m.any(axis=other)) if other else np.flatnonzero(m)
                    last = max(last, int(at[-1]))
        elif specs[tensor].kind == "computed":
            last = eng.T - 1
    Tn = last + 1 if any(specs[t].row_axis is not None for t in masks) else eng.T
    need: set[str] = set()
    for tensor in masks:
        if specs[tensor].kind == "computed":
            need |= needed(sheet.graph, tensor)
    prefix = np.zeros(eng.T, bool)
    prefix[:Tn] = True
    eng.ensure({n: prefix for n in need if specs[n].kind == "computed"})

    def cut(name: str, a: np.ndarray) -> np.ndarray:
        axes = specs[name].axes
        return a[tuple(slice(0, Tn) if ax in ("pos", "key") else slice(None) for ax in axes)]

    V: Arrays = {}
    for name in need | set(sheet.graph.parameters) | {"tokens", "temperature"}:
        if specs[name].kind == "parameter" or name == "temperature":
            V[name] = eng.values[name]
        else:
            V[name] = cut(name, eng.view(name))[None]
    seeds: Arrays = {}
    parts: list[np.ndarray] = []
    for tensor, m in masks.items():
        if specs[tensor].kind == "computed":
            seeds[tensor] = cut(tensor, weights[tensor]).astype(eng.dtype)[None]  # float32 sheets: float32 gradients
        if tensor != "tokens":
            w = weights[tensor][m]
            got = np.asarray(eng.view(tensor))[m]
            parts.append(got if np.all(w == 1) else got * w)  # a logit difference: the second token weighs -1
    picked = np.concatenate(parts) if parts else np.zeros(0)
    value = sum((float(np.sum(p)) for p in parts), 0.0)
    if value == 0 and picked.size and np.all(np.signbit(picked)):
        value = -0.0  # a sum of -0.0 cells is -0.0 (IEEE), which np.sum's +0.0 start would lose
    with one_blas_thread():  # ~150 medium matmuls: threads cost more than they give (3.3 s vs 1.7 s at GPT-2 size)
        G = backward(sheet.graph, V, seeds, pinned_cells(eng.pins, V))
    arrays: dict[str, np.ndarray] = {}
    for tensor in masks:  # a selected parameter: ∂target/∂itself
        if specs[tensor].kind == "parameter":
            arrays[tensor] = weights[tensor].astype(np.float64)
    for name, g in G.items():
        if name == "tokens":
            continue
        if name == "temperature":  # a scalar, summed over every cell that divides by it
            arrays[name] = np.asarray(g, dtype=np.float64)
            continue
        shape = tuple(eng.shape(name))
        if specs[name].kind == "parameter":
            full = g.astype(eng.dtype, copy=False)  # backward's own array: no copy
        elif tuple(g.shape[1:]) == shape:
            full = g[0].astype(eng.dtype, copy=False)
        else:  # rows past the target's last position: outside every cone, 0
            full = np.zeros(shape, eng.dtype)
            full[tuple(slice(0, n) for n in g.shape[1:])] = g[0]
        arrays[name] = arrays[name] + full if name in arrays else full
    n = 1 if tgt.spec else sum(int(np.count_nonzero(m)) for m in masks.values())
    return Gradient(target, value, arrays, sheet.cell, n)
