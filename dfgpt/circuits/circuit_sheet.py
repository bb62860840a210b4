"""A circuit sheet: one input on the model's circuit graph, where patching an edge is writing a cell.

`patch_edges(source, edges)` switches the listed edges to the source run's contributions, as
one edit with a receipt and undo; only the cones of the edges' destinations are recomputed.
`ablate_edges` does it with zero, mean or resampled contributions, and `keep_only` ablates
every edge outside a circuit.

>>> import dfgpt
>>> m = dfgpt.load("sort")
>>> s = CircuitSheet(m, "CACACAAAA")
>>> round(s.value("logit[8][B]") - s.value("logit[8][C]"), 3)
-10.749
>>> r = s.patch_edges("CABACAAAA", "h[0].head[1] -> *")
>>> r.action, r.cells[:2]
('patch_edges', ('h[0].head[1] -> h[0].mlp', 'h[0].head[1] -> h[1].head[0].q'))
>>> round(s.value("logit[8][B]") - s.value("logit[8][C]"), 3)
12.424
>>> _ = s.undo()
>>> s.switched()
[]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ..analysis import formula as _formula
from ..cells import Cells
from ..edits import edits
from ..edits.receipts import Receipt
from ..errors import EditError
from ..models.weights import Weights
from .circuit_graph import CircuitWeights, circuit_weights, own_name, patch_name, switch_name
from .components import Components, Edge, Node

__all__ = ["ABLATIONS", "CircuitSheet", "Source"]

ABLATIONS = ("zero", "mean", "resample")
Source = Any  # a CircuitSheet, an unedited sheet of the model, a text or token ids


class CircuitSheet(Cells):
    """The cells of one input on a model's circuit graph: every edge a switch, every patch an edit.

    `model`: the model (its weights are shared); a sheet of it made with `sheet.circuit()` is the same.
    """

    def __init__(self, model: Weights, ids: str | Sequence[int], exact: bool | None = None) -> None:
        base = model.model if isinstance(model, CircuitWeights) else model
        tokens = base.encode(ids)
        self.circuit_model: CircuitWeights = circuit_weights(base, len(tokens))
        super().__init__(self.circuit_model, tokens, exact=exact)
        self.components: Components = self.circuit_model.components

    def __repr__(self) -> str:
        on = int(np.count_nonzero(self.switches()))
        return f"CircuitSheet({self.text!r}, {len(self.components):,} edges, {on} switched)"

    # -- reading -----------------------------------------------------------------------------
    def contributions(self) -> np.ndarray:
        """Every source's own contribution as it is now: [sources, T, C], in `components.sources` order."""
        return np.stack([self.values(own_name(s)) for s in self.components.sources])

    def formula(self, text: str) -> str:
        """One cell's formula text, as `Sheet.formula` (an edge sum lists its switches and sources)."""
        tensor, idx = self.cell(text)
        return _formula.formula(self, tensor, idx)

    def switches(self) -> np.ndarray:
        """Every edge's switch, [edges] in edge order (0: the run's own contribution, 1: the patch)."""
        vals = self.engine.values
        return np.concatenate([vals[switch_name(d)] for d in self.components.dests])

    def switched(self) -> list[str]:
        """The names of the edges whose switch is not 0 (patched or ablated)."""
        on = self.switches()
        return [e.name for e in self.components.edges if on[e.index] != 0]

    # -- edits -------------------------------------------------------------------------------
    def patch_edges(self, source: Source, edges: str | Edge | Iterable[str | Edge]) -> Receipt:
        """Give the listed edges the source run's contributions (one edit: a receipt, and `undo`).

        `source`: another CircuitSheet of the model (its contributions as they are now), an unedited
        sheet of the model, or an input (text or ids) of the same length.
        """
        picked = self.components.select(edges)
        vals = self.source_values(source)
        return self._switch(picked, {s: vals[self.components.source_index[s]] for s in _srcs(picked)}, "patch_edges")

    def ablate_edges(self, edges: str | Edge | Iterable[str | Edge], how: str = "zero",
                     reference: Sequence[Source] | None = None, seed: int = 0) -> Receipt:
        """Ablate edges: their sources' contributions set to zero, to their mean over `reference`
        inputs, or to those of one reference drawn with `seed` ("resample")."""
        picked = self.components.select(edges)
        vals = self.ablation_values(how, reference, seed)
        return self._switch(picked, {s: vals[self.components.source_index[s]] for s in _srcs(picked)},
                            f"ablate_edges ({how})")

    def keep_only(self, edges: str | Edge | Iterable[str | Edge], source: Source | None = None, how: str = "resample",
                  reference: Sequence[Source] | None = None, seed: int = 0) -> Receipt:
        """Keep only a circuit: every other edge takes `source`'s contribution, or is ablated by `how`."""
        keep = {e.index for e in self.components.select(edges)}
        rest = [e for e in self.components.edges if e.index not in keep]
        vals = self.source_values(source) if source is not None else self.ablation_values(how, reference, seed)
        return self._switch(rest, {s: vals[self.components.source_index[s]] for s in _srcs(rest)},
                            f"keep_only ({len(keep):,} edges kept)")

    def set(self, cell: str, value: Any) -> Receipt:
        """Write one cell (a switch, a patch value, a weight) or pin a computed one, as `Sheet.set`: a
        switch between 0 and 1 mixes an edge's own contribution with its patch."""
        return edits.set_many(self, {cell: value})

    def undo(self) -> Receipt:
        """Revert the latest edit (a patch, an ablation): values come back bit for bit in exact mode."""
        return edits.undo(self)

    def redo(self) -> Receipt:
        return edits.redo(self)

    # -- values for patches --------------------------------------------------------------------
    def source_values(self, source: Source) -> np.ndarray:
        """A source run's contributions, [sources, T, C] (see `patch_edges`)."""
        base = self.circuit_model.model
        if isinstance(source, CircuitSheet):
            if source.circuit_model is not self.circuit_model:
                raise EditError(
                    f"the source is a circuit sheet of another model or length ({source.T} positions, this one "
                    f"{self.T}); patch between inputs of the same length on the same model.")
            return source.contributions()
        if isinstance(source, Cells):
            if source.model is not base and source.model.params is not base.params:
                raise EditError("the source sheet is of another model; patch between sheets of one model.")
            eng = source.engine
            if eng.pins or eng.owned - {"temperature"}:
                raise EditError(
                    "the source sheet has edits (pins or weights), which its circuit run would not have; "
                    "patch from a CircuitSheet, or from its input as text.")
            source = source.tokens
        tokens = base.encode(source)
        if len(tokens) != self.T:
            raise EditError(
                f"the source has {len(tokens)} positions and this sheet {self.T}: edges carry every position "
                "at once, so patch between inputs of the same length.")
        return CircuitSheet(base, tokens, exact=self.engine.exact).contributions()

    def ablation_values(self, how: str, reference: Sequence[Source] | None, seed: int) -> np.ndarray:
        """Zero, mean or resampled contributions, [sources, T, C]."""
        if how not in ABLATIONS:
            raise EditError(f"ablation {how!r} is not one of {', '.join(ABLATIONS)}; 'zero' needs no reference, "
                            "'mean' and 'resample' take reference inputs of the same length.")
        S, C = len(self.components.sources), self.config.n_embd
        if how == "zero":
            return np.zeros((S, self.T, C), self.engine.dtype)
        if not reference or isinstance(reference, (str, bytes)):
            raise EditError(f"ablation {how!r} needs reference=[inputs of {self.T} positions], e.g. "
                            f"reference=['CBACBA...', ...]; got {reference!r}.")
        refs = list(reference)
        if how == "resample":
            pick = int(np.random.default_rng(seed).integers(len(refs)))
            return self.source_values(refs[pick])
        return np.mean([self.source_values(r) for r in refs], axis=0)

    def _switch(self, picked: list[Edge], values: dict[Node, np.ndarray], action: str) -> Receipt:
        """Switch edges on with their sources' patch values, as one edit; refuse a source whose
        other switched edges carry another value (each source holds one patch value)."""
        if not picked:
            raise EditError("no edge to switch: the selection is empty (keep_only of every edge?).")
        eng, on = self.engine, self.switches()
        chosen = {e.index for e in picked}
        changes: dict[str, Any] = {}
        blocks: dict[str, tuple[tuple[np.ndarray, ...], np.ndarray]] = {}
        for src, new in values.items():
            name = patch_name(src)
            differs = np.asarray(new != eng.values[name])
            if not differs.any():
                continue
            held = [e for e in self.components.out_of[src] if on[e.index] != 0 and e.index not in chosen]
            if held:
                raise EditError(
                    f"{held[0].name} already carries another value of {src.name} (a source holds one patch "
                    "value at a time); undo that edit first, or patch these edges together.")
            idx = np.nonzero(differs)
            blocks[name] = (idx, np.asarray(new)[idx])  # one record a source, not one a cell
        for e in picked:
            changes[f"{switch_name(e.dest)}[{e.slot}]"] = 1.0
        # One edit of the switches and patch cells; its receipt names the edges, not each cell.
        names = tuple(e.name for e in picked[:20]) + ((f"... {len(picked) - 20:,} more",) if len(picked) > 20 else ())
        return replace(edits.set_cells(self, blocks, changes), action=action, cells=names)


def _srcs(edges: list[Edge]) -> list[Node]:
    return list(dict.fromkeys(e.src for e in edges))
