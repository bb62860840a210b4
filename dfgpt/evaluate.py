"""Lazy, incremental evaluation of a tensor graph, with validity tracked per position row.

Every computed tensor keeps a value cache and, per position row, the revision at which it
was last verified and the revision at which its value last changed (the red-green scheme
of incremental build systems). A read computes only the rows its cone needs; a row whose
inputs did not change since it was verified is reused; a recomputed row whose value came
out the same stops the change from propagating (cut-off).

>>> import dfgpt
>>> s = dfgpt.load("sort-random").sheet("CABACA")
>>> _ = s.value("logit[2][A]")
>>> s.engine.rows_computed("logit"), s.engine.rows_computed("h[2].attn.k")  # keys 0..2, no row past 2
(1, 3)
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from .cones import Cones, Mask, Pending
from .graph import Graph, TensorSpec

__all__ = ["Engine", "Mask", "Pending"]

class Engine(Cones):
    """The values, caches, revisions and pins of one input run through one graph."""

    def __init__(
        self,
        graph: Graph,
        params: dict[str, np.ndarray],
        tokens: np.ndarray,
        temperature: float = 1.0,
        exact: bool = True,
    ) -> None:
        cfg = graph.config
        self.graph = graph
        self.specs: dict[str, TensorSpec] = graph.specs
        self.exact = exact
        self.dtype = np.dtype(cfg.dtype)
        self.T = len(tokens)
        # Exact mode fixes the capacity, so every row is computed with the same shapes.
        self.cap = cfg.block_size if exact else max(self.T, min(cfg.block_size, 16))
        self.revision = 0
        self.values: dict[str, np.ndarray] = dict(params)
        self.base: dict[str, np.ndarray] = dict(params)  # the model's arrays, never written
        self.owned: set[str] = set()  # parameters copied on first write (the model keeps its own)
        self.param_changed: dict[str, int] = {n: 0 for n in graph.parameters}
        self.param_changed["temperature"] = 0
        self.values["temperature"] = np.array(temperature, dtype=self.dtype)
        self.owned.add("temperature")
        self.base["temperature"] = self.values["temperature"].copy()
        tok = np.zeros(self.cap, dtype=np.int64)
        tok[: self.T] = tokens
        self.base["tokens"] = np.array(tokens, dtype=np.int64)  # the input the sheet was made with
        self.values["tokens"] = tok
        self.verified: dict[str, np.ndarray] = {}
        self.changed: dict[str, np.ndarray] = {"tokens": np.zeros(self.cap, np.int64)}
        for name in graph.computed:
            self.values[name] = np.zeros(self._cap_shape(name), self.dtype)
            self.verified[name] = np.full(self.cap, -1, np.int64)
            self.changed[name] = np.zeros(self.cap, np.int64)
        self.stale: dict[str, Mask] = {}  # read through state(); deferred cones land here on flush
        self._sizes: dict[str, tuple[int, int]] = {}
        # The latest revision at which any row of a tensor changed: lets a read skip, with
        # one comparison, every tensor whose inputs did not change since it was verified.
        self.last_change: dict[str, int] = dict.fromkeys(self.changed, 0)
        # Per tensor, a revision at which every computed row is known valid: a row's effective
        # verified revision is max(verified[row], floor). It lets a read confirm a tensor whose
        # inputs did not change with scalar compares, instead of a pass over its rows.
        self.computed_any = False  # until the first read: then every row is simply computed
        self.floor: dict[str, int] = dict.fromkeys(graph.computed, -1)
        self.full: dict[str, int] = dict.fromkeys(graph.computed, 0)  # rows 0..full-1 all hold values
        self.vmax: dict[str, int] = dict.fromkeys(graph.computed, -1)  # the highest verified revision
        self.pending: list[Pending] = []  # stale cones not yet materialised (see defer_stale)
        self.watch: dict[str, dict[int, np.ndarray | None]] = {}  # {tensor: {row: value before recompute}}
        self.pins: dict[str, dict[tuple[int, ...], float]] = {}
        self.counts: Counter[str] = Counter()  # cells recomputed per tensor, since reset_counts
        self.reused: Counter[str] = Counter()  # cells verified without recomputing
        self.cutoff: Counter[str] = Counter()  # cells recomputed whose row came out unchanged
        self.total_recomputed: Counter[str] = Counter()  # never reset (receipts diff these)
        self.total_reused: Counter[str] = Counter()
        self.total_cutoff: Counter[str] = Counter()

    # -- shapes -----------------------------------------------------------------------
    def _cap_shape(self, name: str) -> tuple[int, ...]:
        return self.specs[name].shape(self.cap)

    def shape(self, name: str) -> tuple[int, ...]:
        """The logical shape of a tensor at the current length T."""
        return self.specs[name].shape(self.T)

    def view(self, name: str) -> np.ndarray:
        """The current values of a tensor, cut to length T (no computation)."""
        v = self.values[name]
        spec = self.specs[name]
        if name == "tokens":
            return v[: self.T]
        idx = tuple(slice(0, self.T) if a in ("pos", "key") else slice(None) for a in spec.axes)
        return v[idx]

    @property
    def tokens(self) -> np.ndarray:
        return self.values["tokens"][: self.T]

    def _row_size(self, name: str) -> int:
        """Cells per position row: fixed, times T for a key axis (cached: reads call it per tensor)."""
        got = self._sizes.get(name)
        if got is None:
            spec = self.specs[name]
            base, per_key = 1, 0
            for k, (axis, n) in enumerate(zip(spec.axes, spec.dims)):
                if axis == "key":
                    per_key += 1
                elif k != spec.row_axis:
                    base *= n
            got = self._sizes[name] = (base, per_key)
        base, per_key = got
        return base * self.T**per_key

    def rows_computed(self, name: str) -> int:
        """How many position rows of a computed tensor hold a value (for tests)."""
        return int((self.verified[name][: self.T] >= 0).sum())

    def reset_counts(self) -> None:
        self.counts.clear()
        self.reused.clear()
        self.cutoff.clear()

    # -- lazy evaluation --------------------------------------------------------------
    def rows_of(self, masks: dict[str, Mask]) -> dict[str, Any]:
        """{tensor: bool[T]}: the position rows the cells of computed tensors live in."""
        need: dict[str, Any] = {}
        for tensor, m in masks.items():
            ra = self.graph.row_axis.get(tensor)
            if self.specs[tensor].kind == "computed" and ra is not None:
                other = tuple(a for a in range(m.ndim) if a != ra)
                need[tensor] = m.any(axis=other) if other else m
        return need

    def ensure(self, need: dict[str, np.ndarray]) -> None:
        """Make the given rows ({tensor: bool[T]}) of computed tensors current."""
        plan = self._plan({k: v for k, v in need.items() if self.specs[k].kind == "computed"})
        if not plan:
            return
        # A pinned cell may be 0 where a formula divides by it: the result is inf or nan, shown
        # as such (like a spreadsheet's #DIV/0!), not an exception halfway through a read.
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if not self.computed_any and not (self.pins or self.stale or self.pending or self.watch):
                self._first_read(plan)
                return
            self.computed_any = True
            for name, rows, last_row in plan:
                self._refresh(name, rows, last_row)

    def _first_read(self, plan: list[tuple[str, Any, int]]) -> None:
        """The first read of a sheet: nothing is cached, so every planned row simply runs."""
        self.computed_any = True
        rev = self.revision
        for name, rows, last_row in plan:
            self.graph.ops[name].forward(self, rows)
            self.verified[name][rows] = rev
            self.changed[name][rows] = rev
            self.last_change[name] = rev
            self.vmax[name] = rev
            n = len(rows)
            self.full[name] = n if last_row == n - 1 else 0  # rows 0..n-1, or a gap before the first
            if n == self.T:
                self.floor[name] = rev  # every computed row (all of them) verified now
            cells = n * self._row_size(name)
            self.counts[name] += cells
            self.total_recomputed[name] += cells

    def _plan(self, need: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray, int]]:
        """The rows of every tensor a read needs, in topological order.

        Depends only on the graph, T and the request, so it is memoised on the graph and
        shared by every sheet of a model (a read of `logit[5]` plans once).
        """
        if not need:
            return []
        key = (self.T, *sorted((k, v.tobytes()) for k, v in need.items()))
        cache = self.graph.plans
        got = cache.get(key)
        if got is not None:
            return got
        rows_of = {k: v.copy() for k, v in need.items()}
        reads = self.graph.row_reads
        for name in reversed(self.graph.computed):
            rows = rows_of.get(name)
            if rows is None or not rows.any():
                continue
            for inp, how, computed in reads[name]:
                if not computed or how == "whole":
                    continue
                got_rows = rows_of.get(inp)
                if got_rows is None:
                    got_rows = rows_of[inp] = np.zeros(self.T, bool)
                if how == "row":
                    got_rows |= rows
                else:
                    got_rows[: int(rows.nonzero()[0][-1]) + 1] = True
        # Row indices, not masks: a read that finds a tensor current costs one gather and a min.
        plan: list[tuple[str, Any, int]] = []
        for n in self.graph.computed:
            if n in rows_of and rows_of[n].any():
                idx = rows_of[n].nonzero()[0]
                plan.append((n, idx, int(idx[-1])))
        if len(cache) > 4096:
            cache.clear()
        cache[key] = plan
        return plan

    def _dep_changed(self, name: str) -> np.ndarray:
        """[T]: the latest revision at which anything a row reads changed."""
        dep = np.zeros(self.T, np.int64)
        for inp, how, computed in self.graph.row_reads[name]:
            if not computed and inp in self.param_changed:
                np.maximum(dep, self.param_changed[inp], out=dep)
            elif how == "prefix":
                np.maximum(dep, np.maximum.accumulate(self.changed[inp][: self.T]), out=dep)
            else:
                np.maximum(dep, self.changed[inp][: self.T], out=dep)
        return dep

    def verified_at(self, name: str) -> np.ndarray:
        """[T]: the revision each row was last verified at (-1 never computed, -2 must rerun)."""
        v = self.verified[name][: self.T]
        fl = self.floor[name]
        return np.where(v >= 0, np.maximum(v, fl), v) if fl >= 0 else v.copy()

    def _refresh(self, name: str, rows: np.ndarray, last_row: int) -> None:
        """Bring rows (sorted indices, the last one given) of one tensor up to date:
        reuse, recompute, cut off."""
        rev = self.revision
        fl = self.floor[name]
        if last_row < self.full[name]:  # every requested row holds a value: scalar checks only
            if fl >= rev:
                return
            changed = self.param_changed
            last = self.last_change
            dep = max(changed[i] if i in changed else last[i] for i, _, _ in self.graph.row_reads[name])
            if dep <= fl:  # nothing these rows read changed since they were last known valid
                fresh_rows = rows if self.vmax[name] < rev else rows[self.verified[name][rows] < rev]
                # Only the requested rows' inputs were refreshed by this read, so the floor (a
                # claim about every computed row) moves only when the read covers every row.
                whole = len(rows) == self.full[name] == self.T
                if whole:
                    self.floor[name] = rev
                self._settle(name, fresh_rows, 0, 0, mark=not whole)
                return
        verified = self.verified[name][: self.T]
        before = verified[rows]
        if fl >= 0:
            before = np.where(before >= 0, np.maximum(before, fl), before)
        low = before.min()
        if low >= rev:  # every row already verified at this revision
            return
        if before.max() >= rev:
            keep = before < rev
            checked, before = rows[keep], before[keep]
        else:
            checked = rows
        last = self.last_change
        changed = self.param_changed
        dep = max(changed[i] if i in changed else last[i] for i, _, _ in self.graph.row_reads[name])
        if dep <= before.min():  # nothing any checked row reads has changed: all reused
            self._settle(name, checked, 0, 0)
            return
        only_new = before.max() < 0
        if only_new:  # never computed (new positions, or -2 rows that must rerun): run them all
            idx, fresh = checked, True
        else:
            idx = checked[self._dep_changed(name)[checked] > before]
            fresh = bool((verified[idx] < 0).all())
        cut = 0
        if idx.size:
            op = self.graph.ops[name]
            arr = self.values[name]
            if fresh:  # nothing to compare against
                op.forward(self, idx)
                if name in self.pins:
                    self._apply_pins(name, idx)
                self.changed[name][idx] = rev
                last[name] = rev
                w = self.watch.get(name)
                if w is not None:
                    for r in idx.tolist():
                        w.setdefault(r, None)
            else:
                ra = self.graph.row_axis[name]
                old = np.take(arr, idx, axis=ra)
                first = verified[idx] < 0
                op.forward(self, idx)
                if name in self.pins:
                    self._apply_pins(name, idx)
                new = np.take(arr, idx, axis=ra)
                w = self.watch.get(name)
                if w is not None:  # keep each row's value from before its first recompute
                    for j, r in enumerate(idx.tolist()):
                        if r not in w:  # None: the row had no value before
                            w[r] = None if first[j] else np.take(old, j, axis=ra)
                # Bitwise: -0.0 and 0.0 differ downstream (1/x, signs), so cut-off must not merge them.
                neq = (new != old) | (np.signbit(new) != np.signbit(old))
                diff = np.moveaxis(neq, ra, 0).reshape(idx.size, -1).any(axis=1)
                moved = diff | first
                if moved.any():
                    self.changed[name][idx[moved]] = rev
                    last[name] = rev
                cut = int((~moved).sum())
        self._settle(name, checked, idx.size, cut)
        full = self.full[name]
        if only_new and checked[0] == full and checked[-1] - full + 1 == len(checked):
            # Rows appended right after the computed prefix, verified now: the prefix grows
            # and the floor (a bound over earlier rows) still holds.
            self.full[name] = full + len(checked)
            return
        v = self.verified[name][: self.T]
        done = v[v >= 0]
        if done.size:  # the floor: a revision every computed row was verified at or after
            self.floor[name] = max(self.floor[name], int(done.min()))
        holes = (v < 0).nonzero()[0]
        self.full[name] = int(holes[0]) if holes.size else self.T  # rows 0..full-1 hold values

    def _settle(self, name: str, checked: np.ndarray, ran: int, cut: int, mark: bool = True) -> None:
        """Count what a refresh did, and mark the checked rows verified (and not stale).

        `mark=False`: the tensor's floor already says every computed row is verified.
        """
        size = self._row_size(name)
        if ran:
            self.counts[name] += ran * size
            self.total_recomputed[name] += ran * size
        if cut:
            self.cutoff[name] += cut * size
            self.total_cutoff[name] += cut * size
        kept = (checked.size - ran) * size
        if kept:
            self.reused[name] += kept
            self.total_reused[name] += kept
        if mark:
            self.verified[name][checked] = self.revision
            self.vmax[name] = self.revision
        st = self.stale.get(name) if self.stale else None
        if st is not None:
            sel: list[Any] = [slice(None)] * st.ndim
            sel[self.graph.row_axis[name]] = checked
            st[tuple(sel)] = False

    def _apply_pins(self, name: str, rows: np.ndarray) -> None:
        pins = self.pins.get(name)
        if not pins:
            return
        ra = self.specs[name].row_axis
        arr = self.values[name]
        rowset = set(rows.tolist())
        for idx, v in pins.items():
            if ra is not None and idx[ra] in rowset:
                arr[idx] = v

    # -- writes -------------------------------------------------------------------------
    def write(self, name: str, idx: tuple[int, ...], value: Any) -> None:
        """Write one cell of a parameter or input, in place (copying a shared parameter once)."""
        if name == "tokens":
            self.flush_stale()  # a token changes which wte rows the cones go through
        if name not in self.owned and self.specs[name].kind == "parameter":
            self.values[name] = self.values[name].copy()
            self.owned.add(name)
        self.revision += 1
        self.values[name][idx] = value
        if name == "tokens":
            self.changed["tokens"][idx[0]] = self.revision
            self.last_change["tokens"] = self.revision
        else:
            self.param_changed[name] = self.revision

    def pin(self, name: str, idx: tuple[int, ...], value: float | None) -> None:
        """Pin a computed cell to a constant (None: unpin, recompute its row on the next read)."""
        self.flush_stale()
        self.revision += 1
        row = idx[self.graph.row_axis[name]]  # computed tensors always have a position axis
        if value is None:
            self.pins.get(name, {}).pop(idx, None)
            if self.verified[name][row] >= 0:
                self.verified[name][row] = -2  # computed once, must run again: -2 forces a recompute
                self.full[name] = min(self.full[name], row)
            return
        self.pins.setdefault(name, {})[idx] = float(value)
        if self.verified[name][row] != -1:
            self.values[name][idx] = value
            self.changed[name][row] = self.revision
            self.last_change[name] = self.revision

    def append(self, token: int) -> None:
        """Add one position; earlier rows stay valid (the causal mask)."""
        self.flush_stale()
        if self.T + 1 > self.cap:
            self._grow(min(self.graph.config.block_size, 2 * self.cap))
        self.revision += 1
        self.values["tokens"][self.T] = token
        self.changed["tokens"][self.T] = self.revision
        self.last_change["tokens"] = self.revision
        self.T += 1

    def pop(self) -> None:
        """Remove the last position (the inverse of `append`); earlier rows stay valid."""
        if self.T <= 1:
            raise ValueError("cannot remove the only position")
        self.flush_stale()
        self.revision += 1
        self.T -= 1
        t = self.T
        self.values["tokens"][t] = 0
        self.changed["tokens"][t] = self.revision
        self.last_change["tokens"] = self.revision
        for name in self.verified:
            self.verified[name][t] = -1
            self.full[name] = min(self.full[name], t)
        for name, st in self.stale.items():
            ra = self.specs[name].row_axis
            sel: list[Any] = [slice(None)] * st.ndim
            sel[ra] = t  # type: ignore[index]
            st[tuple(sel)] = False
            if "key" in self.specs[name].axes:
                st[..., t] = False

    def _grow(self, cap: int) -> None:
        old_cap, self.cap = self.cap, cap
        for name, arr in list(self.values.items()):
            spec = self.specs[name]
            if spec.kind == "parameter" or name == "temperature":
                continue
            new = np.zeros(spec.shape(cap), arr.dtype)
            new[tuple(slice(0, old_cap) if a in ("pos", "key") else slice(None) for a in spec.axes)] = arr
            self.values[name] = new
        for table in (self.verified, self.changed):
            for name, arr in table.items():
                fill = -1 if table is self.verified else 0
                table[name] = np.concatenate([arr, np.full(cap - old_cap, fill, np.int64)])
        for name, st in list(self.stale.items()):
            new = np.zeros(self._cap_shape(name), bool)
            new[tuple(slice(0, n) for n in st.shape)] = st
            self.stale[name] = new

    def state(self, name: str, idx: tuple[int, ...]) -> str:
        """'pinned', 'unset' (never computed), 'stale' or 'fresh' for a computed cell; kind otherwise."""
        spec = self.specs[name]
        if spec.kind != "computed":
            base = self.base.get(name)
            if base is None or self.values[name] is base:
                return "fresh"
            if name == "tokens" and idx[0] >= len(base):
                return "edited"  # appended after the sheet was made
            now, was = self.values[name][idx], base[idx]
            same = now == was and np.signbit(now) == np.signbit(was)
            return "fresh" if same else "edited"
        if idx in self.pins.get(name, {}):
            return "pinned"
        self.flush_stale()
        v = self.verified[name][idx[self.graph.row_axis[name]]]
        if v == -1:
            return "unset"
        st = self.stale.get(name)
        return "stale" if v == -2 or (st is not None and st[idx]) else "fresh"

    def info(self) -> dict[str, Any]:
        return {"T": self.T, "cap": self.cap, "revision": self.revision, "exact": self.exact}
