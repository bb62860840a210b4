"""Influence over a dataset: each input's scores of the target's cone, and their mean, ranked.

`influence(model, inputs, target, top=20, by="grad*value")` runs `sheet.influence` on every
input and ranks the cells by their mean score over the inputs, with the total order of
`sheet.influence`: |score| descending, then graph order, then index. The result keeps an
`input` axis: `r.scores[i, j]` is input i's score of the j-th cell of the mean ranking.

The target means the same thing in every input, whatever its length:

- a cell name, resolved in each input: a negative index counts from the input's end, so
  `logit[-1][A]` is the logit of `A` at each input's last position (`logit[5][A]` is position 5
  of every input, and an input shorter than that is refused);
- a metric spec, read at each input's last position unless `@t` says otherwise:
  `logit:A` (the cell `logit[t][A]`), `prob:A` (`prob[t][A]`) or `logit_diff:A,C`
  (`logit[t][A] − logit[t][C]`, scored as the difference of the two cells' scores: gradients
  are linear). `logprob` and `kl` are not cells, and have no such ranking: a typed error says so.

Cells are named by absolute position (`h[0].ln_1.out[4][7]` is position 4 of each input);
parameters are the same cells in every input. A cell an input does not have (a position past
its end) or that is outside its cone scores 0 there, so the mean is always over every input.
`by="ablation"` scores only each input's own best candidates, so its mean over a dataset is
not defined and is refused; rank by `grad*value` or `grad`, or measure exact ablations with
`dfgpt.ablation_sweep`. In process: one backward pass per input.

>>> import dfgpt
>>> m = dfgpt.load("sort")
>>> r = influence(m, ["CABACA", "BCAACAAAA"], "logit[-1][A]", top=2)
>>> r
DatasetInfluence('logit[-1][A]', by='grad*value', input 2 × top 2)
>>> r.targets
('logit[5][A]', 'logit[8][A]')
>>> bool(r[0].score == r.scores[:, 0].mean())
True
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from ..analysis.influence import Influence, top_cells
from ..analysis.influence import influence as one_influence
from ..cells import Cells
from ..errors import DfgptError, QueryError, show
from ..html import table
from ..interventions.metrics import parse_metric
from .api import as_model, dataset_inputs
from .pairs import as_inputs

__all__ = ["DatasetInfluence", "MeanItem", "influence"]

RANKS = ("grad*value", "grad")  # linear in the gradient: a mean over inputs is a mean of scores
_SPEC = re.compile(r"^(logit_diff|logit|prob|logprob|kl)\s*(:|@|$)")


@dataclass(frozen=True)
class MeanItem:
    """One cell of the mean ranking: its mean score over the inputs."""

    cell: str
    score: float
    tensor: str
    index: tuple[int, ...]


class DatasetInfluence(Sequence[MeanItem]):
    """The top cells by mean |score| over the inputs, best first; `scores[input, cell]` per input."""

    def __init__(self, target: str, by: str, texts: tuple[str, ...], targets: tuple[str, ...],
                 target_values: np.ndarray, items: list[MeanItem], scores: np.ndarray) -> None:
        self.target, self.by, self.texts, self.targets = target, by, texts, targets
        self.target_values = target_values  # [input]: the target's value in each input
        self.items = items
        self.scores = scores  # [input, cell]: each input's score of each ranked cell (0 where it has none)

    @property
    def n_inputs(self) -> int:
        return len(self.texts)

    @overload
    def __getitem__(self, i: int) -> MeanItem: ...
    @overload
    def __getitem__(self, i: slice) -> list[MeanItem]: ...
    def __getitem__(self, i: int | slice) -> MeanItem | list[MeanItem]:
        return self.items[i]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[MeanItem]:
        return iter(self.items)

    def __repr__(self) -> str:
        return f"DatasetInfluence({self.target!r}, by={self.by!r}, input {self.n_inputs} × top {len(self.items)})"

    def input(self, i: int) -> list[tuple[str, float]]:
        """Input i's score of each ranked cell, in the mean's order."""
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -self.n_inputs <= i < self.n_inputs:
            raise QueryError(f"input {i!r} is out of range: this ranking has inputs 0..{self.n_inputs - 1}.")
        return [(it.cell, float(s)) for it, s in zip(self.items, self.scores[int(i)])]

    def _rows(self) -> list[list[str]]:
        return [[it.cell, f"{it.score:+.5g}", f"{self.scores[:, j].min():+.5g}", f"{self.scores[:, j].max():+.5g}"]
                for j, it in enumerate(self.items)]

    def _title(self) -> str:
        return (f"top {len(self.items)} cells for {self.target} over {self.n_inputs} inputs (mean value "
                f"{self.target_values.mean():+.6g}), by mean {self.by}")

    def table(self) -> str:
        """The ranking as text: each cell's mean score, and its least and greatest over the inputs."""
        lines = [self._title(), f"  {'cell':<34} {'mean':>12} {'min':>12} {'max':>12}"]
        lines += [f"  {c:<34} {m:>12} {lo:>12} {hi:>12}" for c, m, lo, hi in self._rows()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return table(html.escape(self._title()), ["cell", "mean", "min", "max"], self._rows())


def _cells(sheet: Cells, target: str) -> list[tuple[str, float]]:
    """The target as (one cell's name, weight) terms in this input."""
    if not _SPEC.match(target):
        return [(sheet.name(*sheet.cell(target)), 1.0)]
    m = parse_metric(target, sheet)
    if m.kind == "logit_diff":
        a, b = m.tokens
        return [(f"logit[{m.position}][{sheet.token_label(a)}]", 1.0),
                (f"logit[{m.position}][{sheet.token_label(b)}]", -1.0)]
    if m.kind in ("logit", "prob"):
        return [(f"{m.kind}[{m.position}][{sheet.token_label(m.tokens[0])}]", 1.0)]
    raise QueryError(f"influence ranks cells by the gradient of one cell or a logit difference; {target!r} is "
                     "neither (logprob and kl are not cells): use a cell such as 'logit[-1][A]', or "
                     "'logit_diff:A,C', 'logit:A', 'prob:A'.")


def _one(sheet: Cells, target: str, by: str) -> tuple[str, float, list[tuple[Influence, float]]]:
    """(the target as resolved here, its value, each term's influence and weight)."""
    terms = _cells(sheet, target)
    parts = [(one_influence(sheet, cell, top=1, by=by), w) for cell, w in terms]
    value = sum(w * res.target_value for res, w in parts)
    shown = terms[0][0] if len(terms) == 1 else " - ".join(c for c, _ in terms)
    return shown, float(value), parts


def _scores(parts: list[tuple[Influence, float]]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One input's {tensor: score array} and {tensor: scored mask}, the terms summed with their weights."""
    scores: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    for res, w in parts:
        for t, m in res.scored.items():
            s = res.scores[t] if w == 1.0 else w * res.scores[t]
            scores[t] = scores[t] + s if t in scores else s
            masks[t] = masks[t] | m if t in masks else m
    return scores, masks


def _corner(shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(0, n) for n in shape)


def influence(model: Any, inputs: Any, target: str | None = None, top: int = 20,
              by: str = "grad*value") -> Any:
    """A sheet and a target: `sheet.influence`. A model and inputs: a `DatasetInfluence` (see the module).

    `inputs`: texts or token lists (any lengths), or a file read by `read_inputs`.

    >>> import dfgpt
    >>> influence(dfgpt.load("sort"), ["CABACA", "CAB"], "logit[-1][A]", top=1).targets
    ('logit[5][A]', 'logit[2][A]')
    """
    if isinstance(model, Cells):
        return one_influence(model, inputs if target is None else target, top=top, by=by)
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise QueryError(f"top must be a whole number ≥ 1 (how many cells to list), got {top!r}.")
    if by not in RANKS:
        raise QueryError(f"by must be {' or '.join(map(repr, RANKS))} over a dataset, got {by!r}: an ablation "
                         "ranking scores each input's own candidates only, so its mean is not defined; "
                         "dfgpt.ablation_sweep measures exact ablations over a dataset.")
    if not isinstance(target, str):
        raise QueryError(f"the target is one cell's name such as 'logit[-1][A]' or a spec such as "
                         f"'logit_diff:A,C', got {show(target)}.")
    m = as_model(model)
    ids = as_inputs(m, dataset_inputs(inputs), same_length=False)
    texts, targets, values, per = [], [], [], []
    acc: dict[str, np.ndarray] = {}  # tensor -> Σ scores over the inputs, in the largest shape
    union: dict[str, np.ndarray] = {}  # tensor -> cells scored in some input (graph order: first seen)
    namer = m.sheet(list(ids[int(np.argmax([len(x) for x in ids]))]))  # the longest: it has every input's cells
    for i, x in enumerate(ids):
        sheet = m.sheet(list(x))
        try:
            shown, value, parts = _one(sheet, target, by)
        except DfgptError as e:
            raise type(e)(f"input {i} ({sheet.text}): {e}") from None
        scores, masks = _scores(parts)
        for t, s in scores.items():
            if t not in acc:
                full = namer.engine.view(t).shape
                acc[t], union[t] = np.zeros(full), np.zeros(full, bool)
            acc[t][_corner(s.shape)] += s
            union[t][_corner(masks[t].shape)] |= masks[t]
        texts.append(sheet.text)
        targets.append(shown)
        values.append(value)
        per.append(scores)
    n = len(ids)
    flat = {t: (acc[t] / n)[union[t]] for t in acc}  # [scored cells of t], row-major, as sheet.influence
    items, cols = [], []
    for t, i in top_cells(flat, top):
        idx = tuple(int(j) for j in np.unravel_index(np.flatnonzero(union[t])[i], union[t].shape))
        items.append(MeanItem(namer.name(t, idx), float(flat[t][i]), t, idx))
        cols.append([float(s[t][idx]) if t in s and all(a < b for a, b in zip(idx, s[t].shape)) else 0.0
                     for s in per])
    each = np.array(cols, dtype=np.float64).T.reshape(n, len(items))  # [input, cell]
    return DatasetInfluence(target, by, tuple(texts), tuple(targets), np.array(values), items, each)
