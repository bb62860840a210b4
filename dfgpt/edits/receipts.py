"""Receipts: what an edit did, the cells it made stale and what the reads since then recomputed.

A `Receipt` is returned by every edit (dfgpt.edits.edits). Its stale figures come from the
edit's exact downstream cone; its recompute figures (`recomputed`, `reused`, `cutoff`,
`max_change`, `flipped`) follow the reads made after the edit, until the next edit
freezes them. `settle()` reads every logit and probability first.

>>> import dfgpt
>>> s = dfgpt.load("sort-random").sheet("CABACA")
>>> _ = s.values("logit")
>>> r = s.set("wpe[5][0]", 0.5).settle()
>>> r.recomputed > 0, r.max_change["logit"] > 0, r.stale_by_tensor["emb"]
(True, True, 1)
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..html import preformatted

if TYPE_CHECKING:
    from ..cells import Cells
    from ..core.evaluate import Pending

__all__ = ["OUTPUTS", "Live", "Receipt"]

OUTPUTS = ("logit", "prob")  # the outputs a receipt watches for changes


class Live:
    """The mutable side of a receipt: counters at the edit, the outputs' effect, the cone, a freeze."""

    def __init__(self, sheet: Cells, pinned: dict[str, dict[int, np.ndarray]] | None = None,
                 unset: dict[str, np.ndarray] | None = None) -> None:
        eng = sheet.engine
        self.sheet = sheet
        self.start = [Counter(eng.total_recomputed), Counter(eng.total_reused), Counter(eng.total_cutoff)]
        self.frozen: dict[str, Any] | None = None
        self.cone: dict[str, int] | Pending | None = None
        # {tensor: bool[T]}: rows that held no value at the edit; computing them is no recompute.
        self.unset = unset or {}
        # How to get every output row's value before the edit (the edit reverted in a trial), or, for
        # an append or its undo, how many rows kept their values; the effect is worked out on demand.
        self.before: Callable[[], dict[str, np.ndarray]] | None = None
        self.kept_rows: int | None = None
        # True when every output row held its current value at the edit (read since the last write; in
        # fast mode, every row computed in the batch a recompute uses: Store.batch_T): the observer
        # then keeps each row's value from before its recompute, and `before` (a trial
        # that recomputes the edit's cone with the edit reverted: a second vocabulary-wide product
        # at GPT-2 size) is needed only if the observer misses a row.
        self.held = False
        self.effect: tuple[dict[str, float | None], bool | None] | None = None
        # The engine keeps each output row's value from before its first recompute since now;
        # rows the edit pinned come in with their values from before the pin. Used only when a
        # later edit freezes this receipt before its effect was asked: the rows read by then.
        self.observer = eng.observe(OUTPUTS, pinned)
        self.watch: dict[str, dict[int, np.ndarray | None]] = self.observer.rows
        self.pinned_rows: dict[str, set[int]] = {name: set() for name in OUTPUTS}
        for name, rows in (pinned or {}).items():
            self.pinned_rows[name] |= set(rows)
        self.revision = eng.revision
        self.memo: tuple[tuple[int, ...], dict[str, Any]] | None = None  # numbers() for the engine's read counts

    def stale(self) -> dict[str, int]:
        cone = self.cone
        if cone is None:
            return {}
        if not isinstance(cone, dict):  # a deferred cone: materialise it now
            if cone.counts is None:
                self.sheet.engine.flush_stale()  # fills cone.counts
            self.cone = cone = cone.counts or {}
        return cone

    def outputs(self) -> tuple[dict[str, float | None], bool | None]:
        """The edit's effect on every output row, ({output: largest |after - before|}, greedy token flipped).

        While this is the latest edit, reads every output (after) and the edit's reverted values
        (before) once; after a later edit, what was known then.
        """
        if self.effect is not None:
            return self.effect
        if self.frozen is not None:
            return self.frozen["max_change"], self.frozen["flipped"]
        eng = self.sheet.engine
        eng.ensure({name: np.ones(eng.T, bool) for name in OUTPUTS})
        after = {name: eng.view(name) for name in OUTPUTS}  # [T, V] each
        held = self._held(after) if self.held else None
        if held is not None:
            before = held
        elif self.before is not None:
            before = self.before()
        else:  # rows the append (or its undo) left alone hold the same values
            n = self.kept_rows or 0
            before = {name: a[:n] for name, a in after.items()}
        change: dict[str, float | None] = {}
        flipped: bool | None = None
        for name in OUTPUTS:
            old = before[name]
            new = after[name][: len(old)]
            if not len(old):
                change[name] = None
                continue
            with np.errstate(invalid="ignore", over="ignore"):  # pins may have made inf or nan
                diff = new - old
                change[name] = float(np.max(np.abs(diff, out=diff)))
            if name == "logit":
                flipped = bool((new.argmax(axis=1) != old.argmax(axis=1)).any())
        self.effect = (change, flipped)
        return self.effect

    def _held(self, after: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """Every output row as it was before the edit, from the rows held then: a row recomputed
        since the edit comes from the observer (its value before the recompute), any other row
        did not change. None if a recomputed row had no value before (then the trial tells)."""
        eng = self.sheet.engine
        if not (eng.exact or eng.batch_T == eng.T):  # fast mode: the reads since ran other batches of rows
            return None
        out: dict[str, np.ndarray] = {}
        for name in OUTPUTS:
            now = after[name]  # [T, V]
            rows = self.watch[name]
            if any(r < len(now) and v is None for r, v in rows.items()):
                return None
            if all(r in rows for r in range(len(now))):  # every row recomputed: one copy, not two
                out[name] = np.stack([rows[r] for r in range(len(now))])  # type: ignore[misc]
                continue
            was = np.array(now)
            for r, v in rows.items():
                if r < len(now):
                    was[r] = v
            out[name] = was
        return out

    def numbers(self) -> dict[str, Any]:
        if self.frozen is not None:
            return self.frozen
        eng = self.sheet.engine
        now = (eng.total_recomputed, eng.total_reused, eng.total_cutoff)
        # Every read that verifies or recomputes a row moves a count: same counts, same numbers. Each of
        # a receipt's properties asks, and at GPT-2 size one answer compares 64 x 50,257 logits (~40 ms).
        key = (eng.revision, eng.T, self.effect is not None, *(sum(c.values()) for c in now))
        if self.memo is not None and self.memo[0] == key:
            return self.memo[1]
        diffs = [+(n - s) for n, s in zip(now, self.start)]  # unary + drops zero entries
        first: Counter[str] = Counter()
        for name, was in self.unset.items():
            rows = int((was[: eng.T] & (eng.verified[name][: len(was)][: eng.T] >= 0)).sum())
            if rows and diffs[0][name]:
                first[name] = min(rows * eng.row_size(name), diffs[0][name])
        out: dict[str, Any] = {"counts": [+(diffs[0] - first), diffs[1], diffs[2], first]}
        if self.effect is not None:
            out["max_change"], out["flipped"] = self.effect
        else:
            out["max_change"], out["flipped"] = self._read_rows()
        self.memo = (key, out)
        return out

    def _read_rows(self) -> tuple[dict[str, float | None], bool | None]:
        """The outputs' change over the rows read since the edit (each against its value before it)."""
        eng = self.sheet.engine
        change: dict[str, float | None] = {}
        flipped: bool | None = None
        for name in OUTPUTS:
            # Rows read since the edit; a row verified without a recompute did not change.
            read = eng.verified_at(name) >= self.revision
            for r in self.pinned_rows[name]:
                if r < len(read):
                    read[r] = True  # a pinned row holds its new value without being read
            w = self.watch[name]
            rows = {r: v for r, v in w.items() if r < eng.T and v is not None}
            if not any(r not in w or w[r] is not None for r in np.flatnonzero(read).tolist()):
                change[name] = None
                continue
            change[name] = 0.0
            if name == "logit":
                flipped = False
            if not rows:
                continue
            idx = np.fromiter(rows, np.int64, len(rows))
            old = np.stack(list(rows.values()))  # type: ignore[arg-type]
            new = eng.view(name)[idx]
            with np.errstate(invalid="ignore", over="ignore"):  # pins may have made inf or nan
                change[name] = float(np.max(np.abs(new - old)))
            if name == "logit":
                flipped = bool((new.argmax(axis=1) != old.argmax(axis=1)).any())
        return change, flipped

    def freeze(self) -> None:
        if self.frozen is None:  # the cone may stay deferred: the engine flushes before it could change
            self.frozen = self.numbers()
            self.sheet.engine.unobserve(self.observer)


@dataclass(frozen=True)
class Receipt:
    """What an edit did: its cone, its effect on the outputs, and what reads since then computed.

    `stale` counts the cells of the exact downstream cone (`stale_by_tensor` per tensor; for a
    weight edit it is worked out on first access). `max_change` and `flipped` are the edit's
    effect on every logit and probability row, after against before, whatever was read before
    the edit: asking for them (or printing the receipt) reads the outputs and recomputes the
    edit's cone with the edit reverted, in a trial that leaves nothing behind. `recomputed`
    counts cells that held a value and were computed again since the edit, `computed_first`
    cells computed for the first time (nothing had read them before the edit), `reused` cells
    a read verified without recomputing, `cutoff` recomputed cells that came out unchanged.
    All of them freeze at the next edit (an effect never asked by then is the rows read by then).
    """

    action: str
    cells: tuple[str, ...]
    _live: Live = field(repr=False, compare=False)

    @property
    def sheet(self) -> Cells:
        return self._live.sheet

    @property
    def stale_by_tensor(self) -> dict[str, int]:
        """Cells of the downstream cone per computed tensor (new rows, for an append)."""
        return dict(self._live.stale())

    @property
    def stale(self) -> int:
        return int(sum(self._live.stale().values()))

    def _count(self, k: int) -> dict[str, int]:
        return dict(self._live.numbers()["counts"][k])

    @property
    def recomputed_by_tensor(self) -> dict[str, int]:
        return self._count(0)

    @property
    def reused_by_tensor(self) -> dict[str, int]:
        return self._count(1)

    @property
    def cutoff_by_tensor(self) -> dict[str, int]:
        return self._count(2)

    @property
    def computed_first_by_tensor(self) -> dict[str, int]:
        return self._count(3)

    @property
    def recomputed(self) -> int:
        """Cells recomputed for this edit by reads since it (cells that held a value before it)."""
        return int(sum(self._count(0).values()))

    @property
    def computed_first(self) -> int:
        """Cells reads since the edit computed for the first time (no value before the edit)."""
        return int(sum(self._count(3).values()))

    @property
    def reused(self) -> int:
        """Cells a read verified without recomputing them."""
        return int(sum(self._count(1).values()))

    @property
    def cutoff(self) -> int:
        """Recomputed cells whose row came out bit for bit unchanged (propagation stopped there)."""
        return int(sum(self._count(2).values()))

    @property
    def max_change(self) -> dict[str, float | None]:
        """Largest |after - before| per output over every row (None: no row to compare)."""
        return dict(self._live.outputs()[0])

    @property
    def flipped(self) -> bool | None:
        """Did the greedy next token change at any position (None: no logit row to compare)."""
        return self._live.outputs()[1]

    def settle(self) -> Receipt:
        """Read every logit and probability (if this is still the latest edit), then return self."""
        live = self._live
        if live.frozen is None:
            eng = live.sheet.engine
            eng.ensure({name: np.ones(eng.T, bool) for name in OUTPUTS})
        return self

    def _repr_html_(self) -> str:
        return preformatted(str(self))

    def __str__(self) -> str:
        change, flipped = self._live.outputs()  # first: it reads the outputs the lines below count
        by = self.stale_by_tensor
        top = sorted(by.items(), key=lambda kv: -kv[1])[:4]
        lines = [
            f"{self.action}: {_summary(self.cells)}",
            f"  marked stale: {self.stale:,} cells in {len(by)} tensors"
            + (f" (largest: {', '.join(f'{k} {v:,}' for k, v in top)})" if top else ""),
        ]
        ch = [f"{k} {v:.6g}" for k, v in change.items() if v is not None]
        if ch:
            flip = "yes" if flipped else "no"
            lines.append(f"  largest change: {', '.join(ch)}; greedy next token flipped: {flip}")
        else:
            lines.append("  largest change: not known (a later edit came before the outputs were read)")
        lines.append(
            f"  reads since the edit: recomputed {self.recomputed:,} for this edit, "
            f"{self.computed_first:,} for the first time; reused {self.reused:,}; "
            f"cut-off (recomputed, unchanged) {self.cutoff:,}"
        )
        return "\n".join(lines)


_INDEX = re.compile(r"(\[[^\]]*\])+$")  # a cell name's trailing index: what is left is the tensor
_SHOWN = 3  # cells a receipt's first line names before it summarises


def _summary(cells: tuple[str, ...]) -> str:
    """The edited cells, in full up to a few; beyond that a count per tensor and the first one."""
    if len(cells) <= _SHOWN:
        return ", ".join(cells) or "-"
    per = Counter(_INDEX.sub("", re.split(r" [=+-] ", c, maxsplit=1)[0]) for c in cells)
    tensors = ", ".join(f"{t} {n:,}" for t, n in per.most_common(4)) + (", ..." if len(per) > 4 else "")
    return f"{len(cells):,} cells ({tensors}); first {cells[0]}"
