"""Provenance: the exact cone of cells that a cell reads (or that a cell can affect), and why.

The cone is structural: propagated backward (or forward) through the ops' exact index maps,
so it holds every cell the formulas read, whatever the values. How much each cell matters
is a value question, answered by `influence` (gradients, gradient × value, ablation).

>>> import dfgpt
>>> s = dfgpt.load("sort-random").sheet("CABACA")
>>> prov = s.provenance("logit[5][A]")
>>> "wpe[5][0]" in prov, "h[0].attn.att[0][5][3]" in prov
(True, True)
>>> prov.by_tensor()["lm_head.w"].ranges
'rows A of 3'
>>> "h[0].attn.q[0][0][0]" in prov.inert  # only read by att[0][0][0], which is always 1
True
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import astuple, dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np

from ..cells import mask_indices
from ..core.evaluate import Mask
from ..core.ops import Softmax
from ..errors import IndexError_, QueryError, show
from ..html import preformatted

if TYPE_CHECKING:
    from ..cells import Cells
    from ..core.evaluate import Engine

__all__ = [
    "Provenance",
    "TensorCone",
    "impact",
    "provenance",
]

AXIS_WORDS = {
    "pos": "positions",
    "key": "keys",
    "head": "heads",
    "vocab": "rows",
    "position": "rows",
    "embd": "columns",
    "out": "outputs",
    "in": "inputs",
    "dim": "dims",
    "hidden": "units",
}


@dataclass(frozen=True)
class TensorCone:
    """How much of one tensor a cone holds: cells, total cells, and index ranges as text."""

    cells: int
    total: int
    ranges: str

    def __iter__(self) -> Iterator[Any]:
        return iter(astuple(self))


def _ranges(ids: np.ndarray, labels: list[str] | None = None) -> str:
    """[0 1 2 5] -> '0–2, 5' (token labels instead of ids on a vocabulary axis)."""
    if labels is not None and ids.size <= 12:
        return ", ".join(labels[int(i)] for i in ids)
    out, start = [], 0
    for k in range(1, ids.size + 1):
        if k == ids.size or ids[k] != ids[k - 1] + 1:
            a, b = int(ids[start]), int(ids[k - 1])
            out.append(str(a) if a == b else f"{a}–{b}")
            start = k
    return ", ".join(out)


def _pins(engine: Engine) -> dict[str, Mask]:
    """Pinned cells are constants: they read nothing."""
    out: dict[str, Mask] = {}
    for name, pins in engine.pins.items():
        if pins:
            m = out[name] = np.zeros(engine.shape(name), bool)
            for idx in pins:
                if all(i < n for i, n in zip(idx, m.shape)):
                    m[idx] = True
    return out


def _constants(engine: Engine) -> dict[str, Mask]:
    """Computed cells whose value cannot depend on their inputs: a softmax over one unmasked
    key (att[h][0][0]; a vocabulary of one) is exp(0) / exp(0) = 1 whatever the score.

    Exactly when the row's max and sum are computed from that score: a pinned score_max or
    exp_sum breaks the relation (exp(710 - 0) overflows), so such a row is not constant.
    The softmax takes score == max as exp(0) even for an infinite score, so an overflowing
    score cannot break it either.
    """
    out: dict[str, Mask] = {}
    for name, op in engine.graph.ops.items():
        if not isinstance(op, Softmax):
            continue
        shape = engine.shape(name)
        m = np.zeros(shape, bool)
        if len(shape) == 3:  # [H, T, T]: row t has t + 1 unmasked keys
            m[:, 0, 0] = True
        elif shape[-1] == 1:
            m[...] = True
        for dep in op.ins[1:3]:  # score_max, exp_sum: [H, T] or [T]
            for idx in engine.pins.get(dep, {}):
                m[idx] = False
        out[name] = m
    return out


class _CellSet:
    """A set of cells as masks, with `in`, `len` and iteration by name."""

    def __init__(self, sheet: Cells, masks: dict[str, Mask]) -> None:
        self.sheet, self.masks = sheet, masks

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        tensor, idx = self.sheet.cell(name)
        m = self.masks.get(tensor)
        return bool(m is not None and m[idx])

    def __len__(self) -> int:
        return int(sum(int(m.sum()) for m in self.masks.values()))

    def __iter__(self) -> Iterator[str]:
        """Cell names in graph order, then index order, made one at a time."""
        for tensor in self.sheet.graph.order:
            m = self.masks.get(tensor)
            if m is None:
                continue
            for idx in mask_indices(m):
                yield self.sheet.name(tensor, idx)


class Provenance(_CellSet):
    """The exact cone of a selection: cells, per-tensor masks, a summary, a cell-level graph."""

    def __init__(self, sheet: Cells, label: str, seeds: dict[str, Mask], direction: str) -> None:
        self.sheet = sheet
        self.label = label
        self.seeds = seeds
        self.direction = direction  # "ancestors" (provenance) or "descendants" (impact)
        engine = sheet.engine
        if direction == "ancestors":
            self.masks: dict[str, Mask] = engine.ancestors(seeds)
        else:
            self.masks = engine.descendants(seeds)

    def __repr__(self) -> str:
        kind = "Provenance" if self.direction == "ancestors" else "Impact"
        return f"{kind}({self.label!r}: {len(self):,} cells in {len(self.masks)} tensors)"

    def _repr_html_(self) -> str:
        return preformatted(self.summary())

    def by_tensor(self) -> dict[str, TensorCone]:
        """tensor -> (cells in the cone, total cells, index ranges such as 'rows 0–5 of 11')."""
        return {t: self._tensor_cone(t, self.masks[t]) for t in self.sheet.graph.order if t in self.masks}

    def _tensor_cone(self, tensor: str, m: Mask) -> TensorCone:
        cells, total = int(m.sum()), int(m.size)
        axes = self.sheet.graph.specs[tensor].axes
        vocab = list(self.sheet.model.vocab)
        parts, box = [], 1
        for a, name in enumerate(axes):
            ids = np.flatnonzero(m.any(axis=tuple(i for i in range(m.ndim) if i != a)))
            box *= ids.size
            if ids.size < m.shape[a]:
                labels = vocab if name == "vocab" and len(vocab) == m.shape[a] else None
                parts.append(f"{AXIS_WORDS.get(name, name)} {_ranges(ids, labels)} of {m.shape[a]}")
        text = ", ".join(parts) if parts else "all"
        if cells < box:
            text = (text + ": " if parts else "") + (
                f"{cells:,} of the {box:,} cells spanned (the others are masked or not read)")
        return TensorCone(cells, total, text)

    # -- cells in the cone that cannot matter -------------------------------------------------
    @cached_property
    def constants(self) -> dict[str, Mask]:
        """Cone cells whose value is fixed whatever their inputs (softmax over one key)."""
        out = {}
        for t, c in _constants(self.sheet.engine).items():
            m = self.masks.get(t)
            if m is not None and (m & c).any():
                out[t] = m & c
        return out

    @cached_property
    def inert(self) -> _CellSet:
        """Cone cells that reach the selection only through constant cells: no effect, exactly."""
        if self.direction != "ancestors":
            return _CellSet(self.sheet, {})
        live = self.sheet.engine.ancestors(self.seeds, cut=self.constants)
        # The row max and sum belong to the constant softmax itself: pinned on their own they
        # break the max/sum relation, so only what acts through the score row is inert.
        inner: dict[str, Mask] = {}
        for t, c in self.constants.items():
            op = self.sheet.graph.ops[t]
            for companion in op.ins[1:3]:
                inner[companion] = np.asarray(c.any(axis=-1))
        out: dict[str, Mask] = {}
        for t, m in self.masks.items():
            dead: Mask = m & ~live[t] if t in live else m
            if t in inner:
                dead = dead & ~inner[t]
            if dead.any():
                out[t] = dead
        return _CellSet(self.sheet, out)

    # -- text for a learner --------------------------------------------------------------------
    def summary(self) -> str:
        s, specs = self.sheet, self.sheet.graph.specs
        back = self.direction == "ancestors"
        verb = "reads, directly or not" if back else "can affect, directly or not"
        lines = [
            f"{'Provenance' if back else 'Impact'} of {self.label}: {len(self):,} cells in "
            f"{len(self.masks)} tensors, every cell that {self.label} {verb}."
        ]
        pos = np.zeros(s.T, bool)
        for t, m in self.masks.items():
            axes = specs[t].axes
            for a, name in enumerate(axes):
                if name == "pos":  # rows; a key axis is read from a row, not a row itself
                    pos |= m.any(axis=tuple(i for i in range(m.ndim) if i != a))
        inv, out = np.flatnonzero(pos), np.flatnonzero(~pos)
        if inv.size:
            toks = " ".join(s.model.token_text(s.tokens[i]) for i in inv)
            lines.append(f"Positions {_ranges(inv)} of {s.T} are involved (tokens {toks}).")
        if not inv.size:
            lines.append("No position is involved: the selection is no cell of a position row.")
        elif out.size:
            why = (
                "a position only attends to itself and earlier keys (the causal mask: att[h][t][s] = 0 "
                "for s > t), so nothing at a later position reaches it."
                if back
                else "an earlier position never reads a later one (the causal mask), so it cannot change."
            )
            lines.append(f"Positions {_ranges(out)} are not: {why}")
        lines.append("Parameters involved, per block:")
        for block, rows in self._params_by_block().items():
            lines.append(f"  {block}: {rows}")
        inert = self.inert
        if self.constants and len(inert):
            const = ", ".join(s.names(self.constants, limit=6))
            lines.append(
                f"In the cone but cannot matter: {const} are softmaxes over a single unmasked key, "
                "so they are 1 whatever the score; the "
                f"{len(inert):,} cells that reach the target only through such a score cannot change it:"
            )
            for t in s.graph.order:
                if t not in inert.masks:
                    continue
                m = inert.masks[t]
                lines.append(f"  {t}: {self._tensor_cone(t, m).ranges}")
        lines.append(
            "This is the structural cone: what the formulas read, whatever the values. How much "
            "each cell matters is a value question: sheet.influence(target) ranks cells by gradient, "
            "gradient × value or ablation, and direct_attribution splits a logit by head."
        )
        return "\n".join(lines)

    def _params_by_block(self) -> dict[str, str]:
        specs = self.sheet.graph.specs
        blocks: dict[str, list[tuple[str, int, int]]] = {}
        for t in self.sheet.graph.parameters:
            m = self.masks.get(t)
            parts = t.split(".")
            block = parts[0] if parts[0].startswith("h[") else specs[t].stage
            short = ".".join(parts[1:]) if parts[0].startswith("h[") else t
            total = int(np.prod(self.sheet.engine.shape(t)))
            blocks.setdefault(block, []).append((short, 0 if m is None else int(m.sum()), total))
        out = {}
        for block, rows in blocks.items():
            got, total = sum(r[1] for r in rows), sum(r[2] for r in rows)
            if got == 0:
                out[block] = f"none of its {total:,} parameters"
            elif got == total:
                out[block] = f"all {total:,} parameters"
            else:
                part = ", ".join(f"{n} {c:,}/{n_all:,}" for n, c, n_all in rows if c < n_all)
                out[block] = f"{got:,} of {total:,} parameters (partly: {part})"
        return out

    # -- a slice as a cell-level graph -----------------------------------------------------------
    def to_networkx(self, max_cells: int = 2000) -> nx.DiGraph:
        """Cells as nodes, an edge from each cell read to the cell that reads it (data flow, like
        the tensor graph), so the cone of a target is `nx.ancestors(G, target)` plus the target."""
        n = len(self)
        if n > max_cells:
            raise QueryError(
                f"the cone of {self.label} has {n:,} cells, more than max_cells={max_cells:,}; "
                "select fewer cells (e.g. an earlier position or one attention cell) or raise max_cells."
            )
        s, engine = self.sheet, self.sheet.engine
        g = nx.DiGraph()
        for tensor in s.graph.order:
            m = self.masks.get(tensor)
            if m is None:
                continue
            for idx in np.argwhere(m):
                ix = tuple(int(i) for i in idx)
                g.add_node(s.name(tensor, ix), tensor=tensor, index=ix)
        pinned = _pins(engine)
        for tensor, m in self.masks.items():
            if s.graph.specs[tensor].kind != "computed":
                continue
            cells = m & ~pinned[tensor] if tensor in pinned else m
            one = np.zeros_like(m)
            for idx in np.argwhere(cells):
                ix = tuple(int(i) for i in idx)
                one[ix] = True
                head = s.name(tensor, ix)
                for inp, got in engine.precedents(tensor, one).items():
                    keep = self.masks.get(inp)
                    if keep is None:
                        continue
                    for jdx in np.argwhere(got & keep):
                        g.add_edge(s.name(inp, tuple(int(j) for j in jdx)), head)
                one[ix] = False
        return g


def _seeds(sheet: Cells, cells: str | list[str]) -> tuple[str, dict[str, Mask]]:
    if not isinstance(cells, (str, list, tuple)):
        raise QueryError(
            f"a selection is a cell name such as 'logit[5][A]' or a list of them, got {show(cells)} "
            f"({type(cells).__name__})."
        )
    names = [cells] if isinstance(cells, str) else list(cells)
    if not names:
        raise QueryError("the selection is empty: give a cell name such as 'logit[5][A]' or a list of them.")
    seeds: dict[str, Mask] = {}
    for text in names:
        if not isinstance(text, str):
            raise QueryError(f"cell names are text such as 'logit[5][A]', got {show(text)}.")
        for tensor, m in sheet.masks(text).items():
            seeds[tensor] = seeds[tensor] | m if tensor in seeds else m
    if not any(m.any() for m in seeds.values()):
        raise IndexError_(f"{names!r} selects no cell (an empty slice?); name at least one cell.")
    return (names[0] if len(names) == 1 else ", ".join(names)), seeds


def provenance(sheet: Cells, cells: str | list[str]) -> Provenance:
    """Every cell the selected cells read, directly or not (the selection included)."""
    label, seeds = _seeds(sheet, cells)
    return Provenance(sheet, label, seeds, "ancestors")


def impact(sheet: Cells, cells: str | list[str]) -> Provenance:
    """Every cell the selected cells can affect (the selection included): what a weight touches."""
    label, seeds = _seeds(sheet, cells)
    return Provenance(sheet, label, seeds, "descendants")
