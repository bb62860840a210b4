"""A sweep's inner loop: one site's cone recomputed on a copy of a sheet's values, then put back.

`Replay(sheet, need)` computes what reading `need` ({tensor: bool[T]}) needs and copies
those values once. `replay.run(pins)` writes a site's cells, then, for the tensors
downstream of the site in graph order, runs the ops' own `forward` (the engine's
arithmetic: row-canonical in exact mode, so the result equals a from-scratch forward bit
for bit) on the rows that the metric needs and that read a row written since the site;
the sheet's own pins are applied again where they sit. `replay.restore()` copies back the
touched rows. No revision, cache or stale bookkeeping runs per site, and the sheet is never
written. `Lockstep` replays many sites together, a tensor at a time across all of them
(`run_together`), so each weight is read once for the group.

>>> import dfgpt
>>> import numpy as np
>>> m = dfgpt.load("sort")
>>> clean, bad = m.sheet("CABACAAAA"), m.sheet("CACACAAAA")
>>> r = Replay(bad, {"logit": np.arange(9) == 8})
>>> row = r.run([("emb", (2, i), float(v)) for i, v in enumerate(clean.values("emb")[2])])
>>> bool((r.values["logit"][8] == clean.values("logit")[8]).all())
True
>>> r.restore(); bool((r.values["logit"][8] == bad.values("logit")[8]).all())
True
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np

from ..core.ops.linear import Linear
from ..core.ops.selection import _sel

if TYPE_CHECKING:
    from ..cells import Cells

__all__ = ["GROUP", "GROUP_BYTES", "Lockstep", "Pins", "Replay", "run_together"]

# (tensor, index, value): one cell (a tuple of ints, a float), or many cells of one tensor (a tuple of
# index arrays, as np.nonzero gives, and an array of their values): a whole row is one entry, not 576
Pins = list[tuple[str, tuple[Any, ...], Any]]
GROUP = 12  # sites replayed in lockstep: consecutive sites of a sweep (one layer's) read the same weights
# At most this much in a group's copies of the values. A SmolLM-135M-shaped replay at T = 64 copies
# 113 MB: 12 of them let a group's rows through a weight in one product (measured: a third faster
# products than groups of 2, the bound at 256 MB).
GROUP_BYTES = 1536 << 20


class Replay:
    """The values of one sheet (copied), and the ops to recompute a site's cone in them."""

    def __init__(self, sheet: Cells, need: dict[str, np.ndarray], columns: tuple[int, ...] | None = None) -> None:
        """`columns`: in fast mode, compute only these logit columns (a logit difference needs two of
        50k); exact mode always runs the op itself, so values stay bit for bit a forward's."""
        eng = sheet.engine
        plan = eng.plan(need)  # [(tensor, row indices, last row)]: what reading `need` computes
        eng.ensure({n: np.ones(eng.T, bool) for n, _, _ in plan})
        self.graph = sheet.graph
        self.exact, self.cap, self.T = eng.exact, eng.cap, eng.T
        self.tokens = eng.tokens
        self.shape = eng.shape
        self.rows = {n: rows for n, rows, _ in plan}
        self._sheet = eng.values  # the sheet's arrays: only ever read
        self.base = {n: eng.values[n] for n in self.rows}
        self.values: dict[str, np.ndarray] = dict(eng.values)
        for n in self.rows:
            self.values[n] = eng.values[n].copy()
        self.pins = {k: dict(v) for k, v in eng.pins.items()}
        op = sheet.graph.ops["logit"]
        self.columns = None
        if columns is not None and not eng.exact and "logit" not in self.pins:
            cols = np.array(sorted(set(columns)))
            self.columns = (cols, np.ascontiguousarray(eng.values[op.ins[1]][cols].T))  # [C, k]
        self._touched: list[tuple[str, Any]] = []
        self._dirty: dict[str, np.ndarray] = {}  # per tensor, [T]: rows that differ from the sheet's
        self._extra: dict[str, list[tuple[tuple[int, ...], float]]] = {}  # the site's pins, per tensor
        self._down: dict[frozenset[str], list[str]] = {}

    def _downstream(self, tensors: frozenset[str]) -> list[str]:
        got = self._down.get(tensors)
        if got is None:
            below: set[str] = set()
            for t in tensors:
                below |= nx.descendants(self.graph.nx, t)
            got = self._down[tensors] = [n for n in self.graph.computed if n in below and n in self.rows]
        return got

    def _index(self, name: str, rows: np.ndarray) -> tuple[Any, ...]:
        ra = self.graph.row_axis[name]
        return (slice(None),) * ra + (rows,)

    @property
    def nbytes(self) -> int:
        """The bytes of this replay's own copies (what a `clone` costs)."""
        return sum(self.values[n].nbytes for n in self.rows)

    def clone(self) -> Replay:
        """Another replay of the same sheet, with its own copy of the values (for `run_together`)."""
        other = copy.copy(self)
        other.base = dict(self.base)
        other.values = dict(self.values)
        for n in self.rows:
            other.values[n] = self.values[n].copy()
        for n in set(self.base) - set(self.rows):  # a site's tensor outside what the metric reads
            other.values[n] = self.values[n].copy()
        other._touched = []
        return other

    def run(self, pins: Pins) -> None:
        """Pin the site's cells to their values and recompute the cone the metric needs.

        Rows are tracked like the engine does: a row runs only if a row it reads was written (the
        same row, or any earlier one for attention over keys). No value comparison per row: after
        a site that differs, nearly every row of its cone differs, and comparing costs a copy.
        """
        with _quiet():
            for name in self.begin(pins):
                self.step(name)

    def begin(self, pins: Pins) -> list[str]:
        """Write the site's cells; the tensors below them, in graph order, for `step`."""
        ra = self.graph.row_axis
        self._dirty, self._extra = {}, {}
        for t, idx, v in pins:  # a cell, or many cells of one tensor (index arrays): the same writes
            if t not in self.base:  # outside what the metric reads: a copy to write in, all the same
                self.base[t] = self._sheet[t]
                self.values[t] = self._sheet[t].copy()
            self._touched.append((t, idx))
            self.values[t][idx] = v
            self._extra.setdefault(t, []).append((idx, v))
            self._dirty.setdefault(t, np.zeros(self.T, bool))[idx[ra[t]]] = True
        return self._downstream(frozenset(self._extra))

    def step(self, name: str) -> None:
        """Recompute the rows of `name` that read a row written since `begin` (none if none do)."""
        rows = self.due(name)
        if rows is not None:
            self.compute(name, rows)
            self.done(name, rows)

    def due(self, name: str) -> np.ndarray | None:
        """The rows of `name` that read a row written since `begin`, or None."""
        need: np.ndarray | None = None
        for inp, how, _ in self.graph.row_reads[name]:
            d = self._dirty.get(inp)
            if d is not None:
                d = np.logical_or.accumulate(d) if how == "prefix" else d
                need = d if need is None else need | d
        if need is None:
            return None
        rows = self.rows[name]
        rows = rows[need[rows]]
        return rows if rows.size else None

    def compute(self, name: str, rows: np.ndarray) -> None:
        if name == "logit" and self.columns is not None:
            cols, w = self.columns  # [R, C] @ [C, k] -> [R, k]
            self.values[name][rows[:, None], cols[None, :]] = self.values[self.graph.ops[name].ins[0]][rows] @ w
        else:  # the op's `forward` without its errstate, which `run` and `run_together` hold once
            self.graph.ops[name].kernel(_sel(rows), self.cap, self.exact)(self.values)

    def done(self, name: str, rows: np.ndarray) -> None:
        """After `rows` of `name` were computed: put the pins that sit there back, mark them written."""
        self._touched.append((name, self._index(name, rows)))
        extra = self._extra
        if name in self.pins or name in extra:
            ra, arr = self.graph.row_axis, self.values[name]
            rowset = set(rows.tolist())
            for idx, v in list(self.pins.get(name, {}).items()) + extra.get(name, []):
                at = idx[ra[name]]
                if isinstance(at, np.ndarray):  # many cells: those in the computed rows
                    keep = np.isin(at, rows)
                    arr[tuple(i[keep] for i in idx)] = v[keep]
                elif at in rowset:
                    arr[idx] = v
        d = self._dirty.get(name)
        if d is None:
            d = self._dirty[name] = np.zeros(self.T, bool)
        d[rows] = True

    def restore(self) -> None:
        """Put back every value the last `run` wrote."""
        for name, index in reversed(self._touched):
            self.values[name][index] = self.base[name][index]
        self._touched.clear()


class Lockstep:
    """A replay and clones of it: many sites' cones replayed together, up to `group` at a time.

    `lockstep.run(pins, read, blocks)` is `[read(replay after run(p)) for p in pins]`, with the
    state restored after each group. A group never spans two `blocks` (one block id per entry),
    and is up to `group` consecutive entries of one block: `GROUP` sites, fewer when the copies
    would pass `GROUP_BYTES`. In fast mode a group's linear layers run as one product
    (`run_together`), so a site's bits depend on which sites share its group: fixed blocks of a
    sweep's sites (`dfgpt.interventions.sweep.blocks`), each given whole to one call
    (`dfgpt.batch.plan` cuts only between blocks), make them the same in every run.
    """

    def __init__(self, replay: Replay) -> None:
        self.replay = replay
        self.group = max(1, min(GROUP, GROUP_BYTES // max(1, replay.nbytes)))
        self._spares: list[Replay] = []  # made when first needed, kept for the next group

    def run(self, pins: list[Pins], read: Callable[[Replay], float], blocks: list[int] | None = None) -> list[float]:
        out: list[float] = []
        ids = blocks if blocks is not None else [0] * len(pins)
        start = 0
        while start < len(pins):
            stop = start + 1
            while stop < len(pins) and stop - start < self.group and ids[stop] == ids[start]:
                stop += 1
            part = pins[start:stop]
            while len(self._spares) < len(part) - 1:
                self._spares.append(self.replay.clone())
            reps = [self.replay, *self._spares[:len(part) - 1]]
            try:
                run_together(reps, part)
                out += [read(r) for r in reps]
            finally:
                for r in reps:
                    r.restore()
            start = stop
        return out


def run_together(replays: list[Replay], pins: list[Pins]) -> None:
    """`replays[i].run(pins[i])` for every i, one tensor at a time across all of them.

    Interleaving them means a weight matrix is read from memory once per tensor for all the
    sites, then from cache, instead of once per site: a site's few rows through a [768, 3072]
    weight are bound by memory speed, not arithmetic. In exact mode each replay runs its own ops
    on its own rows: the same bits as its own `run`. In fast mode a linear layer's rows of all
    the replays go through one product ([ΣR, K] @ [K, n]), as a batched forward computes them:
    the same numbers to float32 rounding, and the same bits for the same group.
    """
    with _quiet():
        _together(replays, pins)


def _quiet() -> Any:
    """A kernel leaves floating-point warnings to its caller (a pin may make inf or nan): as `Op.forward`."""
    return np.errstate(divide="ignore", invalid="ignore", over="ignore")


def _together(replays: list[Replay], pins: list[Pins]) -> None:
    lists = [r.begin(p) for r, p in zip(replays, pins)]
    if len(replays) == 1:
        names = lists[0]
    else:
        at = {n: i for i, n in enumerate(replays[0].graph.computed)}
        names = sorted(set().union(*lists), key=at.__getitem__)
    ops = replays[0].graph.ops
    for name in names:
        due = [(r, rows) for r in replays if (rows := r.due(name)) is not None]
        op = ops[name]
        if len(due) > 1 and isinstance(op, Linear) and _batched(due, name):
            _linear_together(op, due)
        else:
            for r, rows in due:
                r.compute(name, rows)
        for r, rows in due:
            r.done(name, rows)


def _batched(due: list[tuple[Replay, np.ndarray]], name: str) -> bool:
    """Fast mode, one weight array shared by every replay, not the logit columns' own product."""
    r0 = due[0][0]
    if r0.exact or (name == "logit" and r0.columns is not None):
        return False
    w = r0.graph.ops[name].ins[1]
    return all(r.values[w] is r0.values[w] for r, _ in due)


def _linear_together(op: Linear, due: list[tuple[Replay, np.ndarray]]) -> None:
    """Every replay's due rows of one linear layer through one product, then back to each."""
    r0 = due[0][0]
    x_name = op.ins[0]
    x = np.concatenate([r.values[x_name][rows] for r, rows in due])  # [ΣR, K]
    y = x @ op.weight_t(r0)  # [ΣR, K] @ [K, n] -> [ΣR, n]
    if len(op.ins) > 2:
        y += r0.values[op.ins[2]][op.cols()]  # a slice, or a strided head layout's rows (NeoX)
    at = 0
    for r, rows in due:
        part = y[at:at + len(rows)]  # [R, n]
        at += len(rows)
        out = r.values[op.out]
        if op.heads:  # [R, H·hs] -> [H, R, hs]
            out[:, rows, :] = part.reshape(len(rows), op.heads, -1).transpose(1, 0, 2)
        else:
            out[rows] = part
