"""An edge test's inner loop: one destination's cone recomputed with the ops' own kernels on a copy of a run.

`EdgeReplay(cells, position)` copies a circuit run's values once (everything the logit row at
`position` reads). `try_edge(edge, value)` writes the edge's switch and runs, in graph order,
the kernels of the tensors below its destination that the logit row reads, only the rows it
reads (the engine's read plan: one row of the last block's MLP and of the logits, every row
up to the position where a later key or value reads it); `revert()` puts back what the last
try changed. No revision or cache bookkeeping runs
per edge and the sheet is never written; the kernels are the engine's (row-canonical in
exact mode), so the values equal a from-scratch forward bit for bit. With `columns` (a metric
of a few logits: `Runs` passes a logit difference's two) a try computes only those logits, by
one small product equal to the row's to the rounding of a dot product: at GPT-2 the full row
reads all of wte (154 MB) per pair and edge, most of an edge test into a late destination.

>>> import dfgpt
>>> from dfgpt.circuits.runs import Runs
>>> runs = Runs(dfgpt.load("sort"), [("CABACAAAA", "CACACAAAA")], "logit_diff:B,C")
>>> r = EdgeReplay(runs.cells[0], 8)
>>> e = runs.components.edge("h[0].head[1] -> logits")
>>> row = r.try_edge(e, 1.0)
>>> runs.set(e.index, 1.0)
>>> bool((row == runs.cells[0].values("logit")[8]).all())
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..cells import Cells
from ..core.ops import Linear
from ..core.ops.selection import _sel
from .circuit_graph import input_name, switch_name
from .components import Edge, Node

__all__ = ["EdgeReplay"]


class EdgeReplay:
    """A private copy of one circuit run's values, and the kernels to recompute a destination's cone in it."""

    def __init__(self, cells: Cells, position: int, columns: Sequence[int] | None = None) -> None:
        g, eng = cells.graph, cells.engine
        self.t = position
        row = np.zeros(eng.T, bool)
        row[position] = True
        plan = eng.plan({"logit": row})  # [(tensor, its rows the logit row reads, last)], graph order
        eng.ensure({n: np.isin(np.arange(eng.T), rows) for n, rows, _ in plan})
        self.graph = g
        self.values: dict[str, np.ndarray] = dict(eng.values)
        for n, _, _ in plan:
            self.values[n] = eng.values[n].copy()
        for n in g.parameters:  # the switches are written here, never the sheet's arrays
            if n.endswith(".switch"):
                self.values[n] = eng.values[n].copy()
        self.kernels = {n: g.ops[n].kernel(_sel(rows), eng.cap, eng.exact) for n, rows, _ in plan}
        self.rows = {n: rows for n, rows, _ in plan}
        self.cap, self.exact = eng.cap, eng.exact
        self._tails: dict[tuple[str, int], Any] = {}  # (tensor, first row) -> the kernel of its rows from there
        self._cones: dict[Node, list[str]] = {}
        self._saved: list[tuple[str, Any, Any]] = []  # (tensor, index, its values there before the try)
        # A metric of a few logits (a logit difference): a try computes only those columns of the
        # logit row, its weight rows copied once (the full row reads all of wte, 154 MB at GPT-2,
        # per pair and edge); they equal the full row's to the rounding of one dot product.
        self.columns: np.ndarray | None = None
        out = g.ops["logit"]
        if columns is not None and isinstance(out, Linear) and not out.heads and not out.stride:
            cols = np.asarray(columns, dtype=np.intp)
            W = eng.values[out.ins[1]]
            sl = out.cols()
            w = W[sl][cols] if out.layout == "out_in" else W[:, sl][:, cols].T  # [k, C]
            b = eng.values[out.ins[2]][sl][cols] if len(out.ins) > 2 else None
            self.columns, self.x, self.w, self.b = cols, out.ins[0], np.ascontiguousarray(w), b

    def cone(self, dest: Node) -> list[str]:
        """The tensors below a destination that the logit row reads, in graph order (memoised)."""
        got = self._cones.get(dest)
        if got is None:
            down = self.graph.downstream(input_name(dest))
            got = self._cones[dest] = [n for n in self.graph.computed if n in down and n in self.kernels]
        return got

    def try_edge(self, edge: Edge, value: float) -> np.ndarray:
        """Set one edge's switch and recompute its destination's cone: the logit row at the position, [V]
        (with `columns`, only those are current: the row is for a metric that reads no other)."""
        return self.try_switches(edge.dest, {edge.slot: value})

    def try_switches(self, dest: Node, slots: dict[int, float]) -> np.ndarray:
        """Set some of a destination's switches and recompute its cone, each tensor from the first row
        that can differ: a row reads its own row and earlier ones only, so rows before the first row
        that changed upstream keep their values (those a corrupted token leaves alone, the causal mask)."""
        vals, g = self.values, self.graph
        sw = vals[switch_name(dest)]
        cone = self.cone(dest)
        self._saved = [(switch_name(dest), ..., sw.copy())]
        for i, v in slots.items():
            sw[i] = v
        none = 1 << 30
        first: dict[str, int] = {}  # tensor -> its first row that changed (none: unchanged)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for k, n in enumerate(cone):
                start = 0 if k == 0 else min((first.get(i, none) for i, _, computed in g.row_reads[n] if computed),
                                             default=none)
                rows = self.rows[n]
                if start >= none or rows[-1] < start:
                    continue
                if n == "logit" and self.columns is not None:  # the metric's columns only
                    row = vals["logit"][self.t]
                    self._saved.append(("logit", (self.t, self.columns), row[self.columns].copy()))
                    y = self.w @ vals[self.x][self.t]  # [k, C] @ [C] -> [k]
                    row[self.columns] = y if self.b is None else y + self.b
                    continue
                old = vals[n].copy()
                self._saved.append((n, ..., old))
                self._tail(n, start)(vals)
                ra = g.row_axis[n]
                diff = np.moveaxis(vals[n] != old, ra, 0).reshape(old.shape[ra], -1).any(axis=1)
                changed = np.flatnonzero(diff)
                first[n] = int(changed[0]) if changed.size else none  # unchanged: cut off here
        return vals["logit"][self.t]

    def _tail(self, name: str, start: int) -> Any:
        """The kernel of a tensor's planned rows from `start` on (memoised)."""
        got = self._tails.get((name, start))
        if got is None:
            rows = self.rows[name]
            got = self._tails[(name, start)] = (self.kernels[name] if rows[0] >= start else
                                                self.graph.ops[name].kernel(_sel(rows[rows >= start]), self.cap,
                                                                            self.exact))
        return got

    def revert(self) -> None:
        """Undo the last try: its switch and every tensor it recomputed, as they were."""
        for n, idx, a in reversed(self._saved):
            self.values[n][idx] = a
        self._saved = []

    def keep(self) -> None:
        """Keep the last try (the edge stays switched)."""
        self._saved = []

    def evaluate(self, switches: dict[str, np.ndarray]) -> np.ndarray:
        """Every switch set ({tensor: values}) and everything recomputed: the logit row, [V]."""
        for name, v in switches.items():
            self.values[name][...] = v
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for k in self.kernels.values():  # graph order: the dict was filled in it
                k(self.values)
        self._saved = []
        return self.values["logit"][self.t]
