"""An edge test's inner loop: one destination's cone recomputed with the ops' own kernels on a copy of a run.

`EdgeReplay(cells, position)` copies a circuit run's values once (everything the logit row at
`position` reads). `try_edge(edge, value)` writes the edge's switch and runs, in graph order,
the kernels of the tensors below its destination that the logit row reads, rows 0..position
only; `revert()` puts back what the last try changed. No revision or cache bookkeeping runs
per edge and the sheet is never written; the kernels are the engine's (row-canonical in
exact mode), so the values equal a from-scratch forward bit for bit.

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

from typing import Any

import networkx as nx
import numpy as np

from ..cells import Cells
from .circuit_graph import input_name, switch_name
from .components import Edge, Node

__all__ = ["EdgeReplay"]


class EdgeReplay:
    """A private copy of one circuit run's values, and the kernels to recompute a destination's cone in it."""

    def __init__(self, cells: Cells, position: int) -> None:
        g, eng = cells.graph, cells.engine
        self.t = position
        self.needed = nx.ancestors(g.nx, "logit") | {"logit"}
        rows = np.zeros(eng.T, bool)
        rows[: position + 1] = True
        eng.ensure({n: rows for n in self.needed if g.specs[n].kind == "computed"})
        self.graph = g
        self.values: dict[str, np.ndarray] = dict(eng.values)
        for n in g.computed:
            if n in self.needed:
                self.values[n] = eng.values[n].copy()
        for n in g.parameters:  # the switches are written here, never the sheet's arrays
            if n.endswith(".switch"):
                self.values[n] = eng.values[n].copy()
        sel = slice(0, position + 1)
        self.kernels = {n: g.ops[n].kernel(sel, eng.cap, eng.exact) for n in g.computed if n in self.needed}
        self._cones: dict[Node, list[str]] = {}
        self._saved: list[tuple[str, Any]] = []

    def cone(self, dest: Node) -> list[str]:
        """The tensors below a destination that the logit row reads, in graph order (memoised)."""
        got = self._cones.get(dest)
        if got is None:
            down = self.graph.downstream(input_name(dest))
            got = self._cones[dest] = [n for n in self.graph.computed if n in down and n in self.kernels]
        return got

    def try_edge(self, edge: Edge, value: float) -> np.ndarray:
        """Set one edge's switch and recompute its destination's cone: the logit row at the position, [V]."""
        return self.try_switches(edge.dest, {edge.slot: value})

    def try_switches(self, dest: Node, slots: dict[int, float]) -> np.ndarray:
        vals = self.values
        sw = vals[switch_name(dest)]
        cone = self.cone(dest)
        self._saved = [(switch_name(dest), sw.copy())] + [(n, vals[n].copy()) for n in cone]
        for i, v in slots.items():
            sw[i] = v
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for n in cone:
                self.kernels[n](vals)
        return vals["logit"][self.t]

    def revert(self) -> None:
        """Undo the last try: its switch and every tensor it recomputed, as they were."""
        for n, a in self._saved:
            self.values[n][...] = a
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
