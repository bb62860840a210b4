"""The sort task over a dataset of inputs: each input's greedy output, whether it is sorted, and the mean.

`task_score(model_or_sheet, inputs=None)` decodes every input greedily (6 letters in, 6 out,
5 fed back) under the weights of the model, or of the sheet as edited, and keeps the result
per input: `r.outputs[i]`, `r.sorted[i]` (all six letters right), `r.letters[i]` (the share
of the six output letters that are right) and, for an edited sheet, `r.broken[i]` (sorted by
the model's own weights, not by the edits). Their means: `r.accuracy` and `r.letters.mean()`.
`inputs=None` is every one of the 729 inputs, so `r.correct` is `sheet.task_score().correct`.
One batched decode of all the inputs at once, in process: 729 inputs take milliseconds, less
than a cluster takes to start.

>>> import dfgpt
>>> s = dfgpt.load("sort").sheet("CABACA")
>>> _ = s.set("lm_head.w[A][26]", -5.0)
>>> r = task_score(s, ["CABACA", "CCCBBB", [1, 1, 1, 1, 1, 1]])
>>> r.outputs, r.sorted.tolist(), r.broken.tolist()
(('CCACCC', 'BBBCCC', 'BBBBBB'), [False, True, True], [True, False, False])
>>> print(r)
sort task over 3 inputs: 2/3 sorted (66.7%), 83.3% of the letters right; broken by the edits: 1, e.g. CABACA -> CCACCC
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..cells import Cells
from ..errors import QueryError, SequenceLengthError, TokenError
from ..html import table
from ..toys.sort_task import N_IN, all_inputs, greedy_sort, sort_ids
from .api import as_model, dataset_inputs
from .pairs import as_inputs

__all__ = ["TaskScores", "task_score"]


@dataclass(frozen=True)
class TaskScores:
    """Greedy sorting of a dataset of inputs: per input, its output and scores; their means."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    sorted: np.ndarray  # [input] bool: every output letter right
    letters: np.ndarray  # [input]: the share of the 6 output letters that are right
    broken: np.ndarray  # [input] bool: sorted by the model's own weights, not by the sheet's edits

    @property
    def total(self) -> int:
        return len(self.inputs)

    @property
    def correct(self) -> int:
        return int(self.sorted.sum())

    @property
    def accuracy(self) -> float:
        """The mean of `sorted`: the share of the inputs sorted."""
        return float(self.sorted.mean())

    def __repr__(self) -> str:
        return f"TaskScores({self.correct}/{self.total} sorted, {int(self.broken.sum())} broken by the edits)"

    def __str__(self) -> str:
        s = (f"sort task over {self.total} inputs: {self.correct}/{self.total} sorted ({self.accuracy:.1%}), "
             f"{self.letters.mean():.1%} of the letters right")
        broken = [f"{self.inputs[i]} -> {self.outputs[i]}" for i in np.flatnonzero(self.broken)]
        if broken:
            s += f"; broken by the edits: {len(broken)}, e.g. {', '.join(broken[:5])}"
        return s

    def _rows(self) -> list[list[str]]:
        return [[a, b, "yes" if ok else "no", f"{lt:.0%}", "yes" if br else ""]
                for a, b, ok, lt, br in zip(self.inputs, self.outputs, self.sorted, self.letters, self.broken)]

    def table(self, limit: int = 20) -> str:
        """The summary, then one line per input (the first `limit`)."""
        lines = [str(self), f"  {'input':<8} {'output':<8} {'sorted':>6} {'letters':>7}  broken by the edits"]
        lines += [f"  {a:<8} {b:<8} {c:>6} {d:>7}  {e}".rstrip() for a, b, c, d, e in self._rows()[:limit]]
        if self.total > limit:
            lines.append(f"  ... {self.total - limit:,} more")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        more = f"{self.total - 20:,} more" if self.total > 20 else ""
        return table(str(self), ["input", "output", "sorted", "letters right", "broken by the edits"],
                     self._rows()[:20], more)


def _ids(model: Any, inputs: Any) -> np.ndarray:
    """[N, 6]: the inputs as token ids, each six letters of the task."""
    letters = sort_ids(model.config)  # refuses a model that cannot hold the task
    if inputs is None:
        return letters[all_inputs()]  # type: ignore[no-any-return]
    ids = as_inputs(model, dataset_inputs(inputs))
    if len(ids[0]) != N_IN:
        raise SequenceLengthError(f"the sort task sorts {N_IN} letters, and these inputs have {len(ids[0])} tokens; "
                                  "give inputs of six letters A/B/C, e.g. 'CABACA'.")
    arr = np.array(ids, dtype=np.int64)
    bad = ~np.isin(arr, letters)
    if bad.any():
        i = int(np.flatnonzero(bad.any(axis=1))[0])
        raise TokenError(f"input {i} ({model.decode(list(ids[i]))}) holds a token the sort task does not sort; "
                         "give six letters of A, B and C.")
    return arr


def task_score(model: Any, inputs: Any = None) -> TaskScores:
    """Greedy sorting of each input under a model's or a sheet's weights (see the module).

    `inputs`: texts or token lists of six letters A/B/C, a file read by `read_inputs`, or None
    for all 729.

    >>> import dfgpt
    >>> task_score(dfgpt.load("sort"), ["CABACA"]).outputs
    ('AAABCC',)
    """
    if isinstance(model, Cells):
        weights, params = model.model, {n: model.engine.values[n] for n in model.graph.parameters}
    else:
        weights = as_model(model)
        params = weights.params
    if not hasattr(weights, "decode"):
        raise QueryError(f"task_score takes a model or a sheet, got {type(model).__name__}.")
    ids = _ids(weights, inputs)
    want = np.sort(ids, axis=1)  # [N, 6]
    out = greedy_sort(weights.graph, params, ids)  # [N, 6]
    right = out == want
    ok = right.all(axis=1)
    base_ok = ok
    if any(params[n] is not weights.params[n] for n in params):  # edited: what the model's own weights sort
        base_ok = (greedy_sort(weights.graph, weights.params, ids) == want).all(axis=1)
    dec = weights.decode
    return TaskScores(tuple(dec(r.tolist()) for r in ids), tuple(dec(r.tolist()) for r in out), ok,
                      right.mean(axis=1), ~ok & base_ok)
