"""Ranked influence: which cells of a target's cone matter, by value.

`influence` scores every parameter and computed cell of the cone by gradient, gradient ×
value (the first-order change if the cell were zeroed) or by ablation (the exact change
when it is zeroed, measured by recomputing). Which head writes a logit is
dfgpt.analysis.attribution.

>>> import dfgpt
>>> s = dfgpt.load("sort-random").sheet("CABACA")
>>> res = s.influence("logit[5][A]", top=3)
>>> len(res), abs(res[0].score) >= abs(res[1].score)
(3, True)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from ..core import arena
from ..core.blas import one_blas_thread
from ..errors import QueryError, show
from ..html import table
from .gradients import Gradient, grad
from .provenance import provenance
from .ranking import Best, offer_order, top_cells, top_indices
from .target import Target, resolve

if TYPE_CHECKING:
    from ..cells import Cells
    from ..core.evaluate import Engine, Mask

__all__ = ["ABLATIONS", "RANKS", "Group", "Influence", "Item", "influence", "top_cells", "top_indices"]

RANKS = ("grad*value", "grad", "ablation", "ablation-fixed-norms")
ABLATIONS = ("ablation", "ablation-fixed-norms")
# What "fixed norms" holds at its clean values, as direct logit attribution does: LayerNorm's
# variance (its scale) and a softmax's shift and denominator. Zeroing a cell then moves the
# target through the linear paths only; the exact ablation divides by √eps when it zeroes a variance.
_SCALES = ("ln_var", "softmax_max", "softmax_sum")


@dataclass(frozen=True)
class Item:
    """One cell of the cone: its value, ∂target/∂cell, and its score under the chosen ranking."""

    cell: str
    value: float
    grad: float
    score: float
    tensor: str
    index: tuple[int, ...]


@dataclass(frozen=True)
class Group:
    """Scores summed over a group of cells (a tensor, a position, a head or a block)."""

    key: str
    cells: int
    score: float
    abs_score: float


class Influence(Sequence[Item]):
    """The top cells, best first by |score|, and sums of the scores over every scored cell."""

    def __init__(self, sheet: Cells, target: str, by: str, items: list[Item], flat: dict[str, np.ndarray],
                 cells: dict[str, Mask], scored: dict[str, Mask], target_value: float) -> None:
        self.sheet, self.target, self.by, self.items = sheet, target, by, items
        self._flat, self._cells = flat, cells  # scores of the cone cells, in mask order
        self.scored = scored  # {tensor: bool mask} of the cells that carry a score
        self.target_value = target_value
        self.provenance: Any = None  # the structural cone the ranking was taken over

    @cached_property
    def scores(self) -> dict[str, np.ndarray]:
        """{tensor: score array} in the tensor's shape, 0 outside the scored cells."""
        out = {}
        for t, m in self._cells.items():
            full = np.zeros(m.shape)
            full[m] = self._flat[t]
            out[t] = full
        return out

    @overload
    def __getitem__(self, i: int) -> Item: ...
    @overload
    def __getitem__(self, i: slice) -> list[Item]: ...
    def __getitem__(self, i: int | slice) -> Item | list[Item]:
        return self.items[i]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)

    def __repr__(self) -> str:
        return f"Influence({self.target!r}, by={self.by!r}, top {len(self.items)})"

    def _groups(self, key_of: Any) -> list[Group]:
        """key_of(tensor, mask) -> [(key, bool mask of the cells in that group)]."""
        acc: dict[str, list[float]] = {}
        for tensor, m in self.scored.items():
            flat, cone = self._flat[tensor], self._cells[tensor]
            for key, sel in key_of(tensor, m):
                # the scores of sel's cells straight from the flat cone scores (mask order): no
                # tensor-shaped copy, which at GPT-2 size is a gigabyte per call
                part = flat if sel is cone else flat[sel[cone]]
                got = acc.setdefault(key, [0, 0.0, 0.0])
                got[0] += part.size
                total, magnitude = _sums(part)
                got[1] += total
                got[2] += magnitude
        rows = [Group(k, int(v[0]), v[1], v[2]) for k, v in acc.items() if v[0]]
        return sorted(rows, key=lambda g: -g.abs_score)

    def by_tensor(self) -> list[Group]:
        return self._groups(lambda t, m: [(t, m)])

    def by_block(self) -> list[Group]:
        """Grouped by stage: 'embedding', 'h[1].attn', 'h[1].mlp', 'ln_f', 'output'."""
        specs = self.sheet.graph.specs

        def key(t: str, m: Mask) -> list[tuple[str, Mask]]:
            stage = specs[t].stage
            if stage.startswith("h[") and "." in stage and stage.split(".")[1].startswith("ln"):
                stage = stage.split(".")[0] + "." + stage.split(".")[1]
            return [(stage, m)]

        return self._groups(key)

    def by_position(self) -> list[Group]:
        """Cells with a position axis (or wpe rows), grouped by position; parameters elsewhere."""
        specs = self.sheet.graph.specs

        def key(t: str, m: Mask) -> list[tuple[str, Mask]]:
            axes = specs[t].axes
            a = axes.index("pos") if "pos" in axes else axes.index("position") if t == "wpe" else None
            if a is None:
                return [("parameters (no position)", m)]
            out = []
            for p in range(m.shape[a]):
                sel = np.zeros_like(m)
                sl = [slice(None)] * m.ndim
                sl[a] = p  # type: ignore[call-overload]
                sel[tuple(sl)] = m[tuple(sl)]
                out.append((f"position {p}", sel))
            return out

        return self._groups(key)

    def by_head(self) -> list[Group]:
        """Cells of each attention head: q, k, v, scores, attention and its columns of y."""
        specs, hs = self.sheet.graph.specs, self.sheet.config.head_size

        def key(t: str, m: Mask) -> list[tuple[str, Mask]]:
            layer = t.split(".")[0]
            axes = specs[t].axes
            out = []
            if "head" in axes:
                for h in range(m.shape[0]):
                    sel = np.zeros_like(m)
                    sel[h] = m[h]
                    out.append((f"{layer}.head[{h}]", sel))
            elif t.endswith(".attn.y"):
                for h in range(m.shape[1] // hs):
                    sel = np.zeros_like(m)
                    sel[:, h * hs:(h + 1) * hs] = m[:, h * hs:(h + 1) * hs]
                    out.append((f"{layer}.head[{h}]", sel))
            return out

        return self._groups(key)

    def _repr_html_(self) -> str:
        rows = [[it.cell, f"{it.value:+.5g}", f"{it.grad:+.5g}", f"{it.score:+.5g}"] for it in self.items]
        return table(f"top {len(self.items)} cells for {self.target} = {self.target_value:+.6g}, by {self.by}",
                     ["cell", "value", "gradient", "score"], rows)

    def table(self) -> str:
        if not self.items:  # say why, rather than print an empty ranking
            kind = self.sheet.kind(self.target)
            why = {"parameter": "it is a parameter, a constant of the model, so no cell affects it",
                   "input": "it is an input, so no cell affects it"}.get(kind, "it is pinned to a constant")
            return (f"no cells to rank for {self.target} = {self.target_value:+.6g}: {why}. "
                    "What it affects is its impact: sheet.impact(cell).")
        lines = [f"top {len(self.items)} cells for {self.target} = {self.target_value:+.6g}, by {self.by}"
                 + (" (score = target − target with the cell set to 0)" if self.by == "ablation" else
                    " (score = target − target with the cell set to 0, norms' scales held)"
                    if self.by == "ablation-fixed-norms" else ""),
                 f"  {'cell':<34} {'value':>12} {'gradient':>12} {'score':>12}"]
        for it in self.items:
            lines.append(f"  {it.cell:<34} {it.value:>+12.5g} {it.grad:>+12.5g} {it.score:>+12.5g}")
        return "\n".join(lines)


def _rankable(sheet: Cells, cone: dict[str, Mask], seeds: dict[str, Mask]) -> dict[str, Mask]:
    """Parameters and computed cells of the cone, the target cells themselves left out."""
    specs = sheet.graph.specs
    out = {}
    for t, m in cone.items():
        if specs[t].kind == "input":
            continue  # tokens are discrete; the temperature is a setting, not a cell of the model
        if t in seeds:
            m = m & ~seeds[t]
        if m.any():
            out[t] = m
    return out


def _sums(a: np.ndarray, chunk: int = 1 << 16) -> tuple[float, float]:
    """(Σa, Σ|a|) in float64, chunk by chunk: each chunk is read from memory once and its |a| stays in cache."""
    if a.size <= chunk:
        return float(a.sum(dtype=np.float64)), float(np.abs(a).sum(dtype=np.float64))
    buf = np.empty(chunk, a.dtype)
    total = magnitude = 0.0
    for i in range(0, a.size, chunk):
        c = a[i : i + chunk]
        total += float(c.sum(dtype=np.float64))
        magnitude += float(np.abs(c, out=buf[: c.size]).sum(dtype=np.float64))
    return total, magnitude


def influence(sheet: Cells, target: str, top: int = 20, by: str = "grad*value",
              candidates: int | None = None) -> Influence:
    """The cells of the target's cone ranked by |score|, best first.

    by="grad": ∂target/∂cell. by="grad*value": ∂target/∂cell · cell, the first-order change
    of the target if the cell were 0. by="ablation": the exact change target − target(cell=0),
    recomputed for the `candidates` best cells by gradient × value (default 2·top); the sheet is
    left exactly as it was. by="ablation-fixed-norms": the same with every LayerNorm variance and
    softmax shift and denominator of the cone held at its value (as direct logit attribution
    treats them), so the ranking is of what a cell contributes through the linear paths, not of
    how a normalisation blows up when its scale is zeroed; those scale cells are not ranked.
    "ablation" stays the exact counterfactual (what `ablate` and `ablation_sweep` compute).

    >>> import dfgpt
    >>> s = dfgpt.load("sort").sheet("CABACA")
    >>> influence(s, "logit[5][A]", top=1, by="ablation")[0].cell
    'ln_f.var[5]'
    >>> influence(s, "logit[5][A]", top=1, by="ablation-fixed-norms")[0].cell
    'ln_f.g[26]'
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise QueryError(f"top must be a whole number ≥ 1 (how many cells to list), got {top!r}.")
    if by not in RANKS:
        raise QueryError(f"by must be one of {', '.join(RANKS)}, got {by!r}.")
    if not isinstance(target, str):
        raise QueryError(f"the target is one cell's name such as 'logit[5][A]', got {show(target)}.")
    tgt = resolve(sheet, target)  # a cell, or a spec such as 'logit_diff:A,C' (weighted cells)
    sel = tgt.masks
    n = sum(int(np.count_nonzero(m)) for m in sel.values())
    if n != 1 and not tgt.spec:
        # A ranking explains one number; a sum over a stage (masked scores are -inf) explains none.
        raise QueryError(
            f"influence ranks what one cell depends on, but {target!r} selects {n:,} cells in {len(sel)} "
            "tensor(s); name one cell, e.g. 'logit[5][A]', or a logit difference 'logit_diff:A,C' "
            "(sheet.provenance(selection) summarises the cone "
            "of a selection, and sheet.grad(selection) differentiates its sum)."
        )
    with one_blas_thread():  # see grad: on two cores BLAS threads slow the whole ranking down
        return _influence(sheet, target, top, by, candidates, tgt)


def _influence(sheet: Cells, target: str, top: int, by: str, candidates: int | None, tgt: Target) -> Influence:
    prov = provenance(sheet, tgt.cells if tgt.spec else target)
    g = grad(sheet, target)
    engine = sheet.engine
    sheet.compute(prov.seeds)  # the seeds' rows pull in every row of the cone
    cells = _rankable(sheet, prov.masks, prov.seeds)
    if by in ABLATIONS:
        return _by_ablation(sheet, target, top, by, candidates, tgt, prov, g, cells)
    flat, ranked = _ranked_in_place(engine, g, cells, by, top)
    items = []
    for t, i, gi in ranked:
        idx = _index(cells[t], i)
        items.append(Item(sheet.name(t, idx), float(engine.view(t)[idx]), gi, float(flat[t][i]), t, idx))
    res = Influence(sheet, target, by, items, flat, cells, cells, g.value)
    res.provenance = prov
    return res


def _ranked_in_place(engine: Engine, g: Gradient, cells: dict[str, Mask], by: str,
                     top: int) -> tuple[dict[str, np.ndarray], list[tuple[str, int, float]]]:
    """({tensor: scores of its cone cells [n], row-major}, the top cells as (tensor, flat index, gradient)).

    The scores are written over the gradients they are made from (g is this call's own): a whole
    tensor's scores are its gradient array, so the ranking costs no second array of every cone cell
    (at 1.1B parameters, 4.4 GB). Tensors are offered to `Best` smallest first as they are scored, and
    the gradients of the cells it keeps are read before they are written over.
    """
    names = list(cells)
    sizes = [int(np.count_nonzero(cells[t])) for t in names]  # a popcount, not a sum through int64
    dtype = np.dtype(engine.dtype)
    scratch = arena.block(max(sizes, default=0), dtype)  # |score| of one tensor at a time
    best, flat = Best(top), dict.fromkeys(names, np.zeros(0, dtype))
    kept: dict[tuple[str, int], float] = {}
    for r in offer_order(sizes):
        t, m = names[r], cells[names[r]]
        whole = sizes[r] == m.size  # most cone tensors are whole: their gradient array becomes their scores
        ga = g.arrays.pop(t, None)
        grads = np.zeros(sizes[r], dtype) if ga is None else ga.reshape(-1) if whole else ga[m]  # [n]
        out = grads if grads.dtype == dtype else np.empty(sizes[r], dtype)  # [n]: the scores
        a = scratch[: sizes[r]]  # [n]: their magnitudes
        if by == "grad":
            if out is not grads:
                np.copyto(out, grads)
            np.abs(out, out=a)
        else:
            values = engine.view(t).reshape(-1) if whole else engine.view(t)[m]  # [n]
            np.multiply(grads, values, out=a)
            np.abs(a, out=a)
        for i in best.offer(r, a):
            kept[t, int(i)] = float(grads[i])
        if by != "grad":
            np.multiply(grads, values, out=out)  # the same products as above, now kept
        flat[t] = out
    return flat, [(t, i, kept[t, i]) for t, i in best.cells(names)]


def _by_ablation(sheet: Cells, target: str, top: int, by: str, candidates: int | None, tgt: Target,
                 prov: Any, g: Gradient, cells: dict[str, Mask]) -> Influence:
    """The `candidates` best cells by gradient × value, each scored by the exact ablation."""
    engine = sheet.engine
    sizes = {t: int(np.count_nonzero(m)) for t, m in cells.items()}
    store = arena.block(sum(sizes.values()), np.dtype(engine.dtype))  # every score, in one reused block
    flat, at = {}, 0
    for t, m in cells.items():  # [cone cells of t]: the score of each, in row-major order
        out = flat[t] = store[at : at + sizes[t]]
        at += sizes[t]
        ga = g.arrays.get(t)
        if ga is None:
            out.fill(0)
            continue
        whole = sizes[t] == m.size
        np.multiply(ga.reshape(-1) if whole else ga[m], engine.view(t).reshape(-1) if whole else engine.view(t)[m],
                    out=out)
    n = candidates if candidates is not None else 2 * top
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise QueryError(f"candidates must be a whole number ≥ 1, got {candidates!r}.")
    hold = {t: m for t, m in prov.masks.items() if t in sheet.graph.computed
            and sheet.graph.ops[t].kind in _SCALES} if by == "ablation-fixed-norms" else {}
    picks = top_cells({t: v for t, v in flat.items() if t not in hold}, n)
    exact = _ablate(sheet, tgt, [(t, _index(cells[t], i)) for t, i in picks], hold)
    flat = {t: np.zeros(v.shape) for t, v in flat.items()}
    scored = {t: np.zeros_like(m) for t, m in cells.items()}
    for (t, i), d in zip(picks, exact):
        flat[t][i] = d
        scored[t][_index(cells[t], i)] = True
    scored = {t: m for t, m in scored.items() if m.any()}
    items = []
    for t, i in top_cells({t: flat[t] for t in scored}, top):
        idx = _index(cells[t], i)
        ga = g.arrays.get(t)
        items.append(Item(sheet.name(t, idx), float(engine.view(t)[idx]), float(ga[idx]) if ga is not None else 0.0,
                          float(flat[t][i]), t, idx))
    res = Influence(sheet, target, by, items, flat, cells, scored, g.value)
    res.provenance = prov
    return res


def _index(m: Mask, i: int) -> tuple[int, ...]:
    """The index of the i-th True cell of a mask (row-major, as boolean indexing orders them)."""
    flat = np.flatnonzero(m)[i]
    return tuple(int(j) for j in np.unravel_index(flat, m.shape))


def _ablate(sheet: Cells, tgt: Target, cells: list[tuple[str, tuple[int, ...]]],
            hold: dict[str, Mask] | None = None) -> list[float]:
    """target − target with each cell set to 0 (a parameter written, a computed cell pinned), each in a
    trial on a fork: the sheet's own engine, its stale marks and its receipts are never touched.
    `hold`: cells pinned to their values on the fork first (the normalisation scales, held fixed)."""
    masks = tgt.masks
    sheet.compute(masks)
    e = sheet.engine.fork()
    need = e.rows_of(masks)
    for t, m in (hold or {}).items():
        values = e.view(t)
        for idx in zip(*np.nonzero(m)):
            cell = tuple(int(i) for i in idx)
            e.pin(t, cell, float(values[cell]))

    def total() -> float:  # the target's cells, weighted (a logit difference's second token by -1)
        return float(sum((e.view(t)[m] if not tgt.spec else e.view(t)[m] * tgt.weights[t][m]).sum()
                         for t, m in masks.items()))

    base = total()
    specs = sheet.graph.specs
    out = []
    for tensor, idx in cells:
        with e.trial():
            if specs[tensor].kind == "parameter":
                e.write(tensor, idx, 0.0)
            else:
                e.pin(tensor, idx, 0.0)
            with np.errstate(all="ignore"):  # a zeroed denominator gives inf or nan: a result, reported
                e.ensure(need)
            out.append(base - total())
    return out
