"""A sheet: every cell of one input, read by name, and every verb of the layers below it.

`Sheet` is the façade: `Cells` holds the engine and resolves names; the analysis, edit and
export layers are functions of a `Cells`; this class only forwards to them, so data flows
one way (those layers never import the sheet).

>>> import dfgpt
>>> s = dfgpt.load("sort-random").sheet("CABACA")
>>> round(s.value("logit[5][A]"), 6) == round(float(s.value("logit")[5, 0]), 6)
True
>>> s.precedents("h[0].ln_1.mean[2]")[:2]
['emb[2][0]', 'emb[2][1]']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import sympy

from .analysis import formula as _formula
from .analysis import gradients, influence, provenance, symbolic
from .analysis.gradients import Gradient
from .analysis.provenance import Provenance
from .cells import Cells
from .circuits.circuit_sheet import CircuitSheet
from .edits import edits
from .edits.receipts import Receipt
from .export import writers
from .export.writers import ExportResult
from .html import table
from .interventions import patching
from .models.weights import Weights
from .toys import sort_task
from .toys.sort_task import TaskScore

__all__ = ["Sheet"]


class Sheet(Cells):
    """Cells of one input: values, formulas, precedents and dependents, by name; edits and queries."""

    def _repr_html_(self) -> str:
        """The input and each position's most likely next tokens, as `dfgpt run` prints them."""
        logits, probs = self.values("logit"), self.values("prob")
        vocab = self.model.vocab
        rows = []
        for t in range(self.T):
            top = np.argsort(-logits[t], kind="stable")[:3]  # ties by token id
            rows.append([t, self.token_label(self.tokens[t]),
                         "  ".join(f"{vocab[v]} {probs[t, v]:.3f}" for v in top)])
        return table(repr(self), ["position", "token", "next (p)"], rows)

    def formula(self, text: str) -> str:
        """Readable formula text of one cell over named cells.

        >>> import dfgpt
        >>> dfgpt.load("sort-random").sheet("CABACA").formula("logit[5][A]")
        'logit[5][A] = Σ_{i=0..47} ln_f.out[5][i] · lm_head.w[A][i]'
        """
        tensor, idx = self.cell(text)
        return _formula.formula(self, tensor, idx)

    # -- questions (dfgpt.analysis) ---------------------------------------------------------
    def grad(self, target: str, **kw: Any) -> Gradient:
        """∂target/∂cell for every cell in the target's cone (see dfgpt.analysis.gradients)."""
        return gradients.grad(self, target, **kw)

    def provenance(self, cells: str | list[str], **kw: Any) -> Provenance:
        """The exact cone of cells that the selected cells read (see dfgpt.analysis.provenance)."""
        return provenance.provenance(self, cells, **kw)

    def impact(self, cells: str | list[str], **kw: Any) -> Provenance:
        """Everything the selected cells can affect (see dfgpt.analysis.provenance)."""
        return provenance.impact(self, cells, **kw)

    def influence(self, target: str, top: int = 20, by: str = "grad*value", **kw: Any) -> influence.Influence:
        """Cells ranked by how much they matter to the target (see dfgpt.analysis.influence)."""
        return influence.influence(self, target, top=top, by=by, **kw)

    def expr(self, cell: str, depth: int = 1, free: list[str] | None = None, **kw: Any) -> sympy.Expr:
        """A sympy.Expr of the cell over named cells (see dfgpt.analysis.symbolic)."""
        return symbolic.expr(self, cell, depth=depth, free=free, **kw)

    def latex(self, cell: str, **kw: Any) -> str:
        return symbolic.latex(self, cell, **kw)

    # -- what-ifs (dfgpt.edits.edits) -------------------------------------------------------------
    def set(self, cell: str, value: Any) -> Receipt:
        """What-if edit of a parameter, token or (pinned) computed cell -> Receipt (dfgpt.edits.edits)."""
        return edits.set_many(self, {cell: value})

    def set_many(self, changes: dict[str, Any]) -> Receipt:
        """Several edits as one atomic edit -> Receipt."""
        return edits.set_many(self, changes)

    def unpin(self, cell: str) -> Receipt:
        return edits.unpin(self, cell)

    def undo(self) -> Receipt:
        return edits.undo(self)

    def redo(self) -> Receipt:
        return edits.redo(self)

    def append(self, token: str | int) -> Receipt:
        """Add one position; earlier rows stay valid -> Receipt."""
        return edits.append(self, token)

    # -- interventions (dfgpt.interventions.patching) ----------------------------------------------
    def patch(self, source: Cells, cells: str | list[str], receivers: str | list[str] | None = None) -> Receipt:
        """Pin cells to their values in `source` (same model and length); with `receivers`, path patching."""
        return patching.patch(self, source, cells, receivers=receivers)

    def ablate(self, cells: str | list[str], how: str = "zero", reference: list[Any] | None = None,
               seed: int = 0) -> Receipt:
        """Pin cells to zero, their mean over `reference` (sheets, texts or token lists), or one reference's
        values (seeded)."""
        return patching.ablate(self, cells, how=how, reference=reference, seed=seed)

    def circuit(self) -> CircuitSheet:
        """This input on the model's circuit graph, where every edge is a switch (dfgpt.circuits)."""
        return CircuitSheet(self.model, self.tokens, exact=self.engine.exact)

    def task_score(self, **kw: Any) -> TaskScore:
        """Re-score the sort task under this sheet's weights (dfgpt.toys.sort_task)."""
        return sort_task.task_score(self, **kw)

    def to_model(self) -> Weights:
        """A model with this sheet's current weights (a `dfgpt.Model` when the sheet came from one)."""
        return edits.to_model(self)

    # -- files (dfgpt.export.writers) ---------------------------------------------------------------
    def to_xlsx(self, path: str | Path, **kw: Any) -> ExportResult:
        """A workbook with live formulas (see dfgpt.export.writers)."""
        return writers.to_xlsx(self, path, **kw)

    def to_npz(self, path: str | Path, **kw: Any) -> ExportResult:
        return writers.to_npz(self, path, **kw)
