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

from collections import Counter
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
    """The mutable side of a receipt: counters at the edit, watched outputs, the cone, a freeze."""

    def __init__(self, sheet: Cells, pinned: dict[str, dict[int, np.ndarray]] | None = None) -> None:
        eng = sheet.engine
        self.sheet = sheet
        self.start = [Counter(eng.total_recomputed), Counter(eng.total_reused), Counter(eng.total_cutoff)]
        self.frozen: dict[str, Any] | None = None
        self.cone: dict[str, int] | Pending | None = None
        # The engine keeps each output row's value from before its first recompute since now;
        # rows the edit pinned come in with their values from before the pin.
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

    def numbers(self) -> dict[str, Any]:
        if self.frozen is not None:
            return self.frozen
        eng = self.sheet.engine
        now = (eng.total_recomputed, eng.total_reused, eng.total_cutoff)
        # Every read that verifies or recomputes a row moves a count: same counts, same numbers. Each of
        # a receipt's properties asks, and at GPT-2 size one answer compares 64 x 50,257 logits (~40 ms).
        key = (eng.revision, eng.T, *(sum(c.values()) for c in now))
        if self.memo is not None and self.memo[0] == key:
            return self.memo[1]
        diffs = [+(n - s) for n, s in zip(now, self.start)]  # unary + drops zero entries
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
        self.memo = (key, {"counts": diffs, "max_change": change, "flipped": flipped})
        return self.memo[1]

    def freeze(self) -> None:
        if self.frozen is None:  # the cone may stay deferred: the engine flushes before it could change
            self.frozen = self.numbers()
            self.sheet.engine.unobserve(self.observer)


@dataclass(frozen=True)
class Receipt:
    """What an edit did: the cells it made stale; what reads since then recomputed.

    `stale` counts the computed cells of the exact downstream cone (`stale_by_tensor` per
    tensor; for a weight edit it is worked out on first access). `recomputed`, `reused`,
    `cutoff`, `max_change` and `flipped` reflect the reads since the edit, until the next
    edit freezes them; `settle()` reads every output first. `max_change` compares each
    output row read since the edit with its value when last computed before it.
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
    def recomputed(self) -> int:
        """Cells recomputed by reads since the edit."""
        return int(sum(self._count(0).values()))

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
        """Largest |new - old| per output over the rows recomputed since the edit (None: none)."""
        return dict(self._live.numbers()["max_change"])

    @property
    def flipped(self) -> bool | None:
        """Did the greedy next token change at any recomputed position (None: no logit row read)."""
        return self._live.numbers()["flipped"]

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
        by = self.stale_by_tensor
        top = sorted(by.items(), key=lambda kv: -kv[1])[:4]
        lines = [
            f"{self.action}: {', '.join(self.cells) or '-'}",
            f"  marked stale: {self.stale:,} cells in {len(by)} tensors"
            + (f" (largest: {', '.join(f'{k} {v:,}' for k, v in top)})" if top else ""),
        ]
        n = self._live.numbers()
        if not sum(n["counts"][0].values()) and not sum(n["counts"][1].values()):
            lines.append("  not read since the edit (receipt.settle() reads the outputs)")
            return "\n".join(lines)
        lines.append(
            f"  after reads: recomputed {self.recomputed:,}, reused {self.reused:,}, "
            f"cut-off (recomputed, unchanged) {self.cutoff:,}"
        )
        ch = [f"{k} {v:.6g}" for k, v in n["max_change"].items() if v is not None]
        if ch:
            flip = "yes" if n["flipped"] else "no"
            lines.append(f"  largest change: {', '.join(ch)}; greedy next token flipped: {flip}")
        return "\n".join(lines)
