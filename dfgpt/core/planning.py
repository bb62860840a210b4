"""A read's plan: the rows of every computed tensor that a read needs, in topological order.

A row of a computed tensor reads the same row of its inputs ("row"), or every row up to it
("prefix": attention reads the keys so far), or a parameter whole; the plan follows those reads
back from the rows asked for. A generation step asks for the last row of the outputs: then each
tensor's rows are either its last row or all of them, whatever the length (T ≥ 2), so that plan
is worked out once per graph, as a template of which tensors need every row, and made for each
new length by filling in the rows.

>>> import dfgpt
>>> s = dfgpt.load("sort-random").sheet("CABACA")
>>> need = {"logit": np.array([False] * 5 + [True])}
>>> [(n, rows.tolist()) for n, rows, _ in plan_rows(s.graph, 6, need) if n.startswith("h[2].attn.")][:2]
[('h[2].attn.q', [5]), ('h[2].attn.k', [0, 1, 2, 3, 4, 5])]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .graph import Graph

__all__ = ["Plan", "plan_rows"]

Plan = list[tuple[str, Any, int]]  # (tensor, its sorted row indices, the last of them), in topological order


def plan_rows(graph: Graph, T: int, need: dict[str, np.ndarray]) -> Plan:
    """The rows ({tensor: bool[T]} of computed tensors) a read needs, as a plan; memoised on the graph."""
    if not need:
        return []
    key = (T, *sorted((k, v.tobytes()) for k, v in need.items()))
    cache = graph.memo.plans
    got = cache.get(key)
    if got is not None:
        return got  # type: ignore[no-any-return]
    if T >= 2 and all(v[-1] and not v[:-1].any() for v in need.values()):  # the last rows: a step's read
        return cache.put(key, _last_rows(graph, T, need))  # type: ignore[no-any-return]
    return cache.put(key, _walk(graph, T, need))  # type: ignore[no-any-return]


def _last_rows(graph: Graph, T: int, need: dict[str, np.ndarray]) -> Plan:
    """The plan of a read of the last rows, from the template (which tensors need every row) of its tensors."""
    key = ("last rows", *sorted(need))
    cache = graph.memo.plans
    whole = cache.get(key)
    if whole is None:
        plan = _walk(graph, T, need)
        whole = tuple((n, len(rows) == T) for n, rows, _ in plan)
        if not all(w or (len(rows) == 1 and rows[0] == T - 1) for (_, w), (_, rows, _) in zip(whole, plan)):
            return plan  # some other pattern (a read this module does not know): no template
        cache.put(key, whole)
    last, every = np.array([T - 1]), np.arange(T)  # shared by the plan's entries, which nobody writes
    return [(n, every if w else last, T - 1) for n, w in whole]


def _walk(graph: Graph, T: int, need: dict[str, np.ndarray]) -> Plan:
    """The rows of every tensor, propagated back from `need` through the graph's row reads."""
    rows_of = {k: v.copy() for k, v in need.items()}
    reads = graph.row_reads
    for name in reversed(graph.computed):
        rows = rows_of.get(name)
        if rows is None or not rows.any():
            continue
        for inp, how, computed in reads[name]:
            if not computed or how == "whole":
                continue
            got_rows = rows_of.get(inp)
            if got_rows is None:
                got_rows = rows_of[inp] = np.zeros(T, bool)
            if how == "row":
                got_rows |= rows
            else:
                got_rows[: int(rows.nonzero()[0][-1]) + 1] = True
    # Row indices, not masks: a read that finds a tensor current costs one gather and a min.
    plan: Plan = []
    for n in graph.computed:
        if n in rows_of and rows_of[n].any():
            idx = rows_of[n].nonzero()[0]
            plan.append((n, idx, int(idx[-1])))
    return plan
