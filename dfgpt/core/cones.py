"""Cell-level cones: what a set of cells reads or can affect, exactly, and which cells an edit makes stale.

Each op's index maps (`cells_read`, `cells_written`) are propagated as boolean masks through
the tensor graph, backward for ancestors and forward for descendants, so a cone is exact at
cell level without a single per-cell object. Pinned cells are constants: they read nothing.

>>> import dfgpt
>>> s = dfgpt.load("sort-random").sheet("CABACA")
>>> cone = s.engine.ancestors(s.masks("logit[5][A]"))
>>> int(cone["wpe"].any(axis=1).sum()), int(cone["logit"].sum())  # wpe rows 0..5; the one logit
(6, 1)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .graph import Graph, TensorSpec

__all__ = ["Cones", "Mask", "Pending"]

Mask = np.ndarray


class Pending:
    """A deferred stale cone: its seeds, the revision of its edit, and its counts once flushed."""

    def __init__(self, seeds: dict[str, Mask], exclude: dict[str, Mask], revision: int) -> None:
        self.seeds, self.exclude, self.revision = seeds, exclude, revision
        self.counts: dict[str, int] | None = None


class Cones:
    """Cone queries and stale marking, mixed into `Engine` (which owns the state they read)."""

    graph: Graph
    specs: dict[str, TensorSpec]
    pins: dict[str, dict[tuple[int, ...], float]]
    stale: dict[str, Mask]
    pending: list[Pending]
    revision: int
    T: int
    cap: int
    values: dict[str, np.ndarray]
    exact: bool

    def verified_at(self, name: str) -> np.ndarray:
        raise NotImplementedError

    # What the ops' cell maps read from their context (`OpContext`), given by `Store`.
    @property
    def tokens(self) -> np.ndarray:
        raise NotImplementedError

    def shape(self, name: str) -> tuple[int, ...]:
        raise NotImplementedError

    def ancestors(self, seeds: dict[str, Mask], cut: dict[str, Mask] | None = None) -> dict[str, Mask]:
        """Every cell the seed cells read, directly or not, as {tensor: bool mask} (seeds included).

        Pinned cells are constants and read nothing (as in `descendants`); so do the cells
        in `cut`, for callers that hold more cells constant.
        """
        masks = {k: v.copy() for k, v in seeds.items()}
        ops = self.graph.ops
        for name in reversed(self.graph.computed):
            m = masks.get(name)
            if m is None or not m.any():
                continue
            pins = self.pins.get(name)
            if pins or (cut and name in cut):
                m = m.copy()
                for idx in pins or ():
                    if all(i < n for i, n in zip(idx, m.shape)):  # a pin past T (after a pop) waits
                        m[idx] = False
                if cut and name in cut:
                    m &= ~cut[name]
            op = ops[name]
            for k, inp in enumerate(op.ins):
                got = op.cells_read(k, m, self)
                if got is None or not got.any():
                    continue
                if inp in masks:
                    masks[inp] = masks[inp] | got
                else:
                    masks[inp] = got
        return {k: v for k, v in masks.items() if v.any()}

    def descendants(self, seeds: dict[str, Mask]) -> dict[str, Mask]:
        """Every cell that reads a seed cell, directly or not (seeds included)."""
        masks = {k: v.copy() for k, v in seeds.items()}
        for name in self.graph.computed:
            op = self.graph.ops[name]
            ins = [masks.get(i) for i in op.ins]
            if all(m is None for m in ins):
                continue
            out = op.cells_written(ins, self)
            if name in self.pins:
                for idx in self.pins[name]:
                    if all(i < n for i, n in zip(idx, out.shape)):
                        out[idx] = False  # a pinned cell is a constant: it reads nothing
            if out.any():
                masks[name] = masks[name] | out if name in masks else out
        return {k: v for k, v in masks.items() if v.any()}

    def precedents(self, name: str, mask: Mask) -> dict[str, Mask]:
        """Direct inputs of the cells in `mask` of a computed tensor."""
        op = self.graph.ops[name]
        out: dict[str, Mask] = {}
        for k, inp in enumerate(op.ins):
            got = op.cells_read(k, mask, self)
            if got is not None and got.any():
                out[inp] = out[inp] | got if inp in out else got
        return out

    def dependents(self, name: str, mask: Mask) -> dict[str, Mask]:
        """Computed cells that read the cells in `mask` directly."""
        out: dict[str, Mask] = {}
        for op_name in self.graph.nx.successors(name):
            op = self.graph.ops[op_name]
            ins = [mask if i == name else None for i in op.ins]
            got = op.cells_written(ins, self)
            if got.any():
                out[op_name] = got
        return out

    # -- stale marking ----------------------------------------------------------------------
    def mark_stale(self, seeds: dict[str, Mask], exclude: dict[str, Mask] | None = None) -> dict[str, Mask]:
        """Mark the downstream cone of the seed cells stale; return that cone (seeds excluded).

        `exclude` (default: the seeds) are cells not to mark: pinned or edited cells are
        constants; an unpinned cell is stale itself, so an unpin passes `exclude={}`.
        """
        return self._mark(seeds, seeds if exclude is None else exclude, self.revision)

    def defer_stale(self, seeds: dict[str, Mask], exclude: dict[str, Mask] | None = None) -> Pending:
        """`mark_stale`, materialised only when asked (`flush_stale`, `state`, a structural edit).

        A cone depends on T, the tokens and the pins only, so it is the same later as now as
        long as those do not change (they flush first); rows verified since the edit are not
        stale by then. A weight edit then costs no mask work until someone looks.
        """
        if len(self.pending) >= 16:  # bound the seed masks held
            self.flush_stale()
        p = Pending(seeds, seeds if exclude is None else exclude, self.revision)
        self.pending.append(p)
        return p

    def flush_stale(self) -> None:
        """Materialise every deferred stale cone into `stale`."""
        while self.pending:
            p = self.pending.pop(0)
            p.counts = {k: int(m.sum()) for k, m in self._mark(p.seeds, p.exclude, p.revision).items()}

    def _mark(self, seeds: dict[str, Mask], exclude: dict[str, Mask], since: int) -> dict[str, Mask]:
        """The stale cone of an edit made at revision `since`, marked in `stale`.

        Returns the whole cone (less excluded and pinned cells); rows verified since the
        edit are already fresh, so they are not marked.
        """
        out: dict[str, Mask] = {}
        for name, m in self.descendants(seeds).items():
            if self.specs[name].kind != "computed":
                continue
            if name in exclude:
                m = m & ~exclude[name]  # a seed is edited or pinned, not stale; other cells may be
            for idx in self.pins.get(name, ()):
                m[idx] = False  # pinned cells are constants
            if not m.any():
                continue
            out[name] = m
            done = self.verified_at(name) >= since  # checked since the edit: fresh
            if done.any():
                shape = [1] * m.ndim
                shape[self.graph.row_axis[name]] = self.T
                m = m & ~done.reshape(shape)
            st = self.stale.get(name)
            if st is None:
                st = self.stale[name] = np.zeros(self.specs[name].shape(self.cap), bool)
            st[tuple(slice(0, n) for n in m.shape)] |= m
        return out
