"""What a graph memoises for its sheets: one bounded memo per kind of work, each with its own rule.

A `Memo` is a dict (a hit is one C lookup: reads sit on the hot path) that clears itself when a
new entry would pass its bound: results never depend on what it holds, only how fast they come.
`Memos` names every memo a graph keeps, with its key, its bound and who fills it.

>>> m = Memo(2)
>>> m.put("a", 1), m.put("b", 2), m.put("c", 3), sorted(m)
(1, 2, 3, ['c'])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .pool import BlockPool

__all__ = ["Memo", "Memos", "SheetDefaults"]


class Memo(dict[Any, Any]):
    """A dict with a bound: full, it is cleared before the next entry goes in (no LRU bookkeeping on a hit)."""

    __slots__ = ("bound",)

    def __init__(self, bound: int) -> None:
        super().__init__()
        self.bound = bound

    def put(self, key: Any, value: Any) -> Any:
        """Store one entry (clearing a full memo first); returns the value."""
        if len(self) >= self.bound:
            self.clear()
        self[key] = value
        return value


@dataclass(frozen=True)
class SheetDefaults:
    """A new sheet's bookkeeping dicts at their start, copied per sheet (cheaper than built per sheet)."""

    param_changed: dict[str, int]  # every parameter and the temperature: 0
    last_change: dict[str, int]  # the tokens and every computed tensor: 0
    minus: dict[str, int]  # every computed tensor: -1 (floor, vmax)
    zero: dict[str, int]  # every computed tensor: 0 (full)

    @classmethod
    def of(cls, parameters: Sequence[str], computed: Sequence[str]) -> SheetDefaults:
        return cls(dict.fromkeys((*parameters, "temperature"), 0), dict.fromkeys(("tokens", *computed), 0),
                   dict.fromkeys(computed, -1), dict.fromkeys(computed, 0))


@dataclass
class Memos:
    """Every memo of one graph, shared by its sheets (results depend only on the graph and the key)."""

    # read request (T, its rows per tensor) -> its plan (evaluate: Engine._plan)
    plans: Memo = field(default_factory=lambda: Memo(4096))
    # (T, tensor) -> ({tensor: every row}, its plan): a whole tensor's read (Engine.ensure_whole); T x tensors
    wholes: Memo = field(default_factory=lambda: Memo(1 << 16))
    # (tensor, T) -> its index at length T (Store.view); T x tensors
    cuts: Memo = field(default_factory=lambda: Memo(1 << 16))
    # id(plan) -> (plan, its tables): an entry holds its plan, so a recycled id never matches (Engine._plan_tables)
    plan_tables: Memo = field(default_factory=lambda: Memo(1024))
    # (id(plan), cap, exact, state) -> (plan, its Schedule): clean reads (Engine._clean_read)
    schedules: Memo = field(default_factory=lambda: Memo(1024))
    blocks: BlockPool = field(default_factory=BlockPool)  # value blocks for new sheets (Store.__init__)

    def clear(self) -> None:
        """Forget every memo (the value blocks stay: sheets hold their views)."""
        for m in (self.plans, self.wholes, self.cuts, self.plan_tables, self.schedules):
            m.clear()
