"""What reads did, counted: cells recomputed, reused and cut off per tensor, since a reset and ever.

Six counters in one object: `counts`, `reused` and `cutoff` (since `reset`) and their totals
(never reset; receipts diff those). Clean reads hand over their counts as ready-made pairs
(`defer`), added when a counter is next looked at: generation never looks, and pays nothing.

>>> t = Tally()
>>> t.ran("logit", 6); t.defer([("logit", 3)], [("logit", 6)]); t.reset()
>>> t.counts, t.total_recomputed, t.total_reused
(Counter(), Counter({'logit': 9}), Counter({'logit': 6}))
"""

from __future__ import annotations

from collections import Counter

__all__ = ["Tally"]

Pairs = list[tuple[str, int]]  # (tensor, cells)


class Tally:
    """The six per-tensor cell counters of one engine (made when first used)."""

    __slots__ = ("_six", "pending")

    def __init__(self) -> None:
        self.pending: list[tuple[Pairs, Pairs]] = []  # clean reads' (recomputed, reused), not yet added
        self._six: tuple[Counter[str], ...] | None = None

    def _counters(self) -> tuple[Counter[str], ...]:
        """(counts, reused, cutoff, total_recomputed, total_reused, total_cutoff), pending reads added."""
        six = self._six
        if six is None:
            six = self._six = tuple(Counter() for _ in range(6))
        if self.pending:
            pending, self.pending = self.pending, []
            counts, reused, _, total_recomputed, total_reused, _ = six
            for ran, kept in pending:
                for counter, total, pairs in ((counts, total_recomputed, ran), (reused, total_reused, kept)):
                    for name, c in pairs:
                        counter[name] += c
                        total[name] += c
        return six

    def defer(self, ran: Pairs, kept: Pairs) -> None:
        """A clean read's counts, added when next looked at (at most 1024 held)."""
        self.pending.append((ran, kept))
        if len(self.pending) > 1024:
            self._counters()

    def ran(self, name: str, cells: int) -> None:
        """Cells of a tensor recomputed."""
        six = self._counters()
        six[0][name] += cells
        six[3][name] += cells

    def kept(self, name: str, cells: int) -> None:
        """Cells of a tensor verified without recomputing."""
        six = self._counters()
        six[1][name] += cells
        six[4][name] += cells

    def cut(self, name: str, cells: int) -> None:
        """Cells of a tensor recomputed whose row came out bit for bit the same."""
        six = self._counters()
        six[2][name] += cells
        six[5][name] += cells

    def reset(self) -> None:
        """Zero `counts`, `reused` and `cutoff` (the totals go on)."""
        for c in self._counters()[:3]:
            c.clear()

    def copy(self) -> Tally:
        """An independent copy (for forks and trials)."""
        out = Tally()
        out.pending = list(self.pending)
        if self._six is not None:
            out._six = tuple(Counter(c) for c in self._six)
        return out

    @property
    def counts(self) -> Counter[str]:
        """Cells recomputed per tensor, since `reset`."""
        return self._counters()[0]

    @property
    def reused(self) -> Counter[str]:
        """Cells verified without recomputing, per tensor, since `reset`."""
        return self._counters()[1]

    @property
    def cutoff(self) -> Counter[str]:
        """Cells recomputed whose row came out unchanged, per tensor, since `reset`."""
        return self._counters()[2]

    @property
    def total_recomputed(self) -> Counter[str]:
        """Cells recomputed per tensor, never reset."""
        return self._counters()[3]

    @property
    def total_reused(self) -> Counter[str]:
        return self._counters()[4]

    @property
    def total_cutoff(self) -> Counter[str]:
        return self._counters()[5]
