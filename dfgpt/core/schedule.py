"""A clean read's schedule: what it runs and every bookkeeping change it makes, worked out once.

A read of a sheet that is clean (no write, pin or stale cone since it was made) runs exactly the
planned rows that never ran; what those are, and how the revision tables and counters move,
follow from the plan and which rows hold values, so `Engine._schedule` works them out once per
such state (memoised on the graph, `Memos.schedules`) and `Engine._clean_read` applies them.

>>> import dfgpt
>>> s = dfgpt.load("sort-random").sheet("CAB")
>>> _ = s.value("logit[2][A]")
>>> sched = next(v for _, v in s.graph.memo.schedules.values())
>>> sched.names[-1], dict(sched.counts)["logit"]
('logit', 3)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .ops.base import Kernel

__all__ = ["Schedule"]


@dataclass(frozen=True, slots=True)
class Schedule:
    """What a clean read of one plan does from one state of the revision tables."""

    kernels: list[Kernel]  # to run in order on the values dict (fused where three ops share rows)
    ran_at: np.ndarray  # bool [tensors, cap]: rows that run (their `changed` moves to the revision)
    checked_at: np.ndarray  # bool [tensors, cap]: rows verified by the read (their `verified` moves)
    ran_names: list[str]  # tensors with a row that runs (their `last_change` moves)
    names: list[str]  # every planned tensor (its `vmax` moves)
    whole: list[str]  # tensors planned at every row (their `floor` moves)
    full: dict[str, int]  # per computed tensor: rows 0..full-1 hold values after the read
    counts: list[tuple[str, int]]  # (tensor, cells recomputed)
    reused: list[tuple[str, int]]  # (tensor, cells verified without recomputing)
    books: dict[int, Any]  # a first read's bookkeeping per revision (`Engine._fresh_books`), filled as met
