"""The state of one cell: `CellState`, a string enum, so comparisons with and printouts of the plain words hold.

>>> CellState.FRESH == "fresh", f"{CellState.PINNED}", (CellState.STALE, CellState.UNSET)
(True, 'pinned', ('stale', 'unset'))
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["CellState"]


class CellState(StrEnum):
    """What a cell's value is now.

    Computed cells: `FRESH` (current), `STALE` (an edit upstream, not recomputed yet), `UNSET`
    (never computed), `PINNED` (held at a constant). Parameters and inputs: `FRESH` (as the sheet
    was made) or `EDITED`.
    """

    FRESH = "fresh"
    STALE = "stale"
    UNSET = "unset"
    PINNED = "pinned"
    EDITED = "edited"

    def __repr__(self) -> str:
        return repr(self.value)  # printed in tuples and lists as the plain word it always was
