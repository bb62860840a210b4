"""What a gradient or a ranking explains: one cell, a selection (its sum), or a logit difference.

A target is a cell name (`logit[5][A]`), a selection (`logit[5]`, differentiated as the sum of
its cells), or a spec read at the last position unless `@t` says otherwise:

    logit_diff:A,C    logit[t][A] - logit[t][C]   (the field's standard target)
    logit:A           logit[t][A]
    prob:A            prob[t][A]

Tokens are a token text, an id, or `#id` (an id always), as in a sweep's metric spec. Every
target becomes weighted cells: `weights[tensor]` is 1 on a selected cell (−1 on a logit
difference's second token) and 0 elsewhere; the target's value is the weighted sum.

>>> import dfgpt
>>> s = dfgpt.load("sort").sheet("CABACA")
>>> t = resolve(s, "logit_diff:A,C")
>>> t.cells, t.value(s) == s.value("logit[5][A]") - s.value("logit[5][C]")
(['logit[5][A]', 'logit[5][C]'], True)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..errors import IndexError_, QueryError, show

if TYPE_CHECKING:
    from ..cells import Cells

__all__ = ["SPEC", "Target", "resolve"]

SPEC = re.compile(r"^\s*(logit_diff|logit|prob|logprob|kl)\s*(:|@|$)")  # a spec, not a cell name
_ARITY = {"logit_diff": 2, "logit": 1, "prob": 1}


@dataclass(frozen=True)
class Target:
    """A target as weighted cells: `masks[tensor]` selects them, `weights[tensor]` weighs them; `cells` names
    a spec's cells one by one, and is the name as given for a cell or a selection."""

    name: str
    cells: list[str]
    masks: dict[str, np.ndarray] = field(repr=False)
    weights: dict[str, np.ndarray] = field(repr=False)

    @property
    def spec(self) -> bool:
        """True for a `logit_diff:` / `logit:` / `prob:` spec, False for a cell name or selection."""
        return bool(SPEC.match(self.name))

    def value(self, sheet: Cells) -> float:
        """The weighted sum of the target's cells at the sheet's current values."""
        sheet.compute(self.masks)
        return float(sum(float(np.sum(sheet.engine.view(t)[m] * self.weights[t][m])) for t, m in self.masks.items()))


def resolve(sheet: Cells, target: str) -> Target:
    """The target's cells and weights (see the module); a bad spec is a typed error."""
    if not isinstance(target, str):
        raise QueryError(f"the target is a cell's name such as 'logit[5][A]' or a spec such as "
                         f"'logit_diff:A,C', got {show(target)}.")
    match = SPEC.match(target)
    if match is None:
        masks = sheet.masks(target)  # the name as given: a selection of 50k logits is not listed cell by cell
        return Target(target, [target], masks, {t: m.astype(np.float64) for t, m in masks.items()})
    spec = target.strip()
    head, _, at = spec.partition("@")
    kind, _, args = head.partition(":")
    kind = kind.strip()
    if kind not in _ARITY:
        raise QueryError(f"{show(spec)} is a sweep metric, not a cell: a gradient or ranking needs a target made "
                         "of cells, such as 'logit_diff:A,C', 'logit:A', 'prob:A' or a cell name 'logit[5][A]'.")
    names = [a.strip() for a in args.split(",")] if args.strip() else []
    if len(names) != _ARITY[kind]:
        example = "logit_diff:A,C" if kind == "logit_diff" else f"{kind}:A"
        raise QueryError(f"target {show(spec)}: {kind} takes {_ARITY[kind]} token(s), e.g. {example!r}.")
    T = sheet.T
    t = T - 1
    if at.strip():
        digits = at.strip().lstrip("-")
        if not digits.isdigit() or len(digits) > 20 or not -T <= int(at) < T:
            raise IndexError_(f"target {show(spec)}: the position after '@', {show(at.strip())}, is not a number "
                              f"or out of range: expected 0..{T - 1} (or -{T}..-1 from the end).")
        t = int(at) % T
    toks = [sheet.token_id(n, f"target {show(spec)}") for n in names]
    if kind == "logit_diff" and toks[0] == toks[1]:
        raise QueryError(f"target {show(spec)}: a logit difference of a token with itself is 0 whatever the cells; "
                         "name two different tokens.")
    tensor = "prob" if kind == "prob" else "logit"
    w = np.zeros(sheet.engine.shape(tensor))
    for tok, sign in zip(toks, (1.0, -1.0)):
        w[t, tok] = sign
    cells = [sheet.name(tensor, (t, tok)) for tok in toks]
    names = [sheet.token_spelling(n, i) for n, i in zip(names, toks)]
    return Target(f"{kind}:{','.join(names)}@{t}", cells, {tensor: w != 0}, {tensor: w})
