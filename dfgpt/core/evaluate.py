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

from typing import Any

import numpy as np

from .batches import note_batch, note_batches, rows_moved
from .cones import Mask, Pending
from .ops.fused import LayerNormRows, SoftmaxRows
from .ops.linear import LinearHeads
from .ops.selection import _sel
from .planning import plan_rows
from .schedule import Schedule
from .store import Store

__all__ = ["Engine", "Mask", "Pending"]

# Clean reads memoise their schedules (on the graph, shared by its sheets) while tensors x
# positions stay within this: `sort` has 68 x 11; GPT-2 at T = 1024 would hold ~1 MB a schedule.
_MEMO_CELLS = 16_384


class Engine(Store):
    """A store that evaluates lazily: a read computes only the rows its cone needs."""

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

    def ensure_whole(self, tensor: str) -> None:
        """Make every row of one computed tensor current: `ensure` with its request worked out
        once per length (a small model's forward is mostly such steps)."""
        key = (self.T, tensor)
        wholes = self.graph.memo.wholes
        got = wholes.get(key)
        if got is None:
            need = {tensor: np.ones(self.T, bool)}
            got = wholes.put(key, (need, self._plan(need)))
        self.ensure(*got)

    def ensure(self, need: dict[str, np.ndarray], plan: list[tuple[str, Any, int]] | None = None) -> None:
        """Make the given rows ({tensor: bool[T]}) of computed tensors current (`plan`: `_plan(need)`)."""
        if plan is None:
            need = {k: v for k, v in need.items() if self.specs[k].kind == "computed"}
            plan = self._plan(need)
        if not plan:
            return
        # A pinned cell may be 0 where a formula divides by it: the result is inf or nan, shown
        # as such (like a spreadsheet's #DIV/0!), not an exception halfway through a read.
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if not (self.pins or self.stale or self.pending or self._observers):
                if self.clean:
                    self._clean_read(plan, need)
                elif not self.computed_any:
                    self._first_read(plan)
                else:
                    self._refreshes(plan)
            else:
                self._refreshes(plan)
            if self.dropped:  # what a read asked for is held after it, even rows it found current
                self.restore_for(need)

    def _refreshes(self, plan: list[tuple[str, Any, int]]) -> None:
        self.computed_any = True
        for name, rows, last_row in plan:
            self._refresh(name, rows, last_row)

    def _clean_read(self, plan: list[tuple[str, Any, int]], targets: dict[str, Any]) -> None:
        """A read while the sheet is clean (no write, pin or stale cone since it was made): every
        row that holds a value is current, so exactly the planned rows that never ran are run,
        in topological order. Appending a token keeps a sheet clean, so this is generation's
        path: one new row per tensor, nothing else checked.

        What to run and every bookkeeping change (verified, changed, counts, full, floor) follow
        from the plan and which rows hold values or were verified at this revision, so they are
        worked out once per such state (`_schedule`, memoised on the graph) and then applied.
        """
        fresh = not self.computed_any  # nothing ran yet: every cell of the tables is 0
        self.computed_any = True
        rev, T, cap = self.revision, self.T, self.cap
        if self.transient or len(self._order) * T > _MEMO_CELLS:
            # A large model: its ops dwarf working the schedule out again. A transient sheet's
            # schedule is its own (it drops what this read did not ask for, and records writes).
            sched = self._schedule(plan, self._state(T, rev), targets)
        else:
            # Per cell of the tables: 0 never ran, 1 holds a value, 2 verified at this revision.
            state = T if fresh else self._state(T, rev).tobytes()
            key = (id(plan), cap, self.exact, state)
            cache = self.graph.memo.schedules
            got = cache.get(key)
            if got is None or got[0] is not plan:
                got = cache.put(key, (plan, self._schedule(plan, self._state(T, rev))))
            sched = got[1]
        vals = self.values
        if self._trial is not None:
            self._keep(sched.ran_names)
        for kernel in sched.kernels:
            kernel(vals)
        if not self.exact and self.batch_T != -1:
            self.batch_T = note_batches(self.batch_T, T, sched.ran_at[:, :T])
        if fresh:  # every bookkeeping dict held its default: the outcome is memoised per revision
            self._fresh_books(sched, rev)
        else:
            ran_names = sched.ran_names
            if ran_names:
                np.putmask(self._chg, sched.ran_at, rev)
                self.last_change.update(dict.fromkeys(ran_names, rev))
            np.putmask(self._ver, sched.checked_at, rev)
            self.vmax.update(dict.fromkeys(sched.names, rev))
            whole = sched.whole
            if whole:
                self.floor.update(dict.fromkeys(whole, rev))  # every row of these tensors verified now
            self.full.update(sched.full)
        self.tally.defer(sched.counts, sched.reused)  # counted when next looked at (Store.counts)

    def _fresh_books(self, sched: Schedule, rev: int) -> None:
        """A first clean read's bookkeeping (as `_clean_read`'s updates would leave it, from every
        table and dict at its default), worked out once per schedule and revision, then copied."""
        books = sched.books
        got = books.get(rev)
        if got is None:
            defaults = self.graph.sheet_defaults
            vmax, floor, last = defaults.minus.copy(), defaults.minus.copy(), defaults.last_change.copy()
            vmax.update(dict.fromkeys(sched.names, rev))
            floor.update(dict.fromkeys(sched.whole, rev))
            last.update(dict.fromkeys(sched.ran_names, rev))
            ver = np.where(sched.checked_at, rev, self._ver)  # the default tables: -1, and 0
            chg = np.where(sched.ran_at, rev, self._chg)
            got = books[rev] = (vmax, floor, {**defaults.zero, **sched.full}, last, ver, chg)
        vmax, floor, full_, last, ver, chg = got
        tokens = self.last_change["tokens"]  # appends before the first read moved it
        self.vmax, self.floor, self.full, self.last_change = vmax.copy(), floor.copy(), full_.copy(), last.copy()
        self.last_change["tokens"] = tokens
        self._ver[:], self._chg[:] = ver, chg  # in place: the row views handed out stay valid

    def _state(self, T: int, rev: int) -> np.ndarray:
        """[tensors, T] uint8: 0 never ran, 1 holds a value, 2 verified at revision `rev`."""
        ver = self._ver[:, :T]
        return (ver >= 0).view(np.uint8) + (ver >= rev).view(np.uint8)

    def _schedule(self, plan: list[tuple[str, Any, int]], state: np.ndarray,
                  targets: dict[str, Any] | None = None) -> Schedule:
        """What a clean read of `plan` does from `state` (see `_clean_read`)."""
        want, sizes, names, whole = self._plan_tables(plan)
        T, cap = self.T, self.cap
        checked = want & (state < 2)  # planned rows not yet verified at this revision
        ran = checked & (state == 0)  # of those, the rows that never ran (clean: the rest are current)
        order, ops = self._order, self.graph.ops
        # (an op, or LayerNormRows; its rows; the rows as bytes, to compare), then their kernels
        run: list[tuple[Any, np.ndarray, bytes]] = []
        ran_names = []
        for i in ran.any(axis=1).nonzero()[0].tolist():  # topological order
            rows = ran[i].nonzero()[0]
            run.append((ops[order[i]], rows, rows.tobytes()))
            ran_names.append(order[i])
        k = 0
        while k + 3 <= len(run):  # LayerNorm's or a softmax's three ops over the same rows: one call
            three = run[k : k + 3]
            ops3 = [op for op, _, _ in three]
            # the kinds first (cheap), then the rows (a generation step has ~300 ops); LinearHeads: q, k and v
            fused: Any = next((f for f in (LayerNormRows, SoftmaxRows, LinearHeads) if f.fits(ops3)), None)
            if fused is not None and three[0][2] == three[1][2] == three[2][2]:
                op = fused(tuple(ops3)) if fused is LinearHeads else fused(*ops3)
                run[k : k + 3] = [(op, three[0][1], three[0][2])]
            k += 1
        steps = [(op, _sel(rows)) for op, rows, _ in run]
        kernels = [op.kernel(sel, cap, self.exact) for op, sel in steps]
        if self.transient:
            kernels = self.transient_steps(steps, kernels, targets or ())
        holes = (state == 0) & ~checked
        first = np.where(holes.any(axis=1), holes.argmax(axis=1), T)
        full = dict(zip(order, first.tolist()))
        n_ran = ran.sum(axis=1) * sizes
        n_kept = checked.sum(axis=1) * sizes - n_ran
        counts = [(order[i], int(n_ran[i])) for i in n_ran.nonzero()[0].tolist()]
        reused = [(order[i], int(n_kept[i])) for i in n_kept.nonzero()[0].tolist()]
        ran_at, checked_at = (np.zeros((len(order), cap), bool) for _ in range(2))  # as masks of [tensors, cap]
        ran_at[:, :T], checked_at[:, :T] = ran, checked
        return Schedule(kernels, ran_at, checked_at, ran_names, names, whole, full, counts, reused, {})

    def _plan_tables(self, plan: list[tuple[str, Any, int]]) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
        """A plan as tables over every computed tensor (memoised with the plan on the graph):
        the planned rows [tensors, T], cells per row [tensors], the planned tensors, and those
        planned at every row."""
        T = self.T
        small = len(self._order) * T <= _MEMO_CELLS
        cache = self.graph.memo.plan_tables
        got = cache.get(id(plan)) if small else None
        if got is not None and got[0] is plan:
            return got[1]
        index = {n: i for i, n in enumerate(self._order)}
        want = np.zeros((len(self._order), T), bool)
        for name, rows, _ in plan:
            want[index[name], rows] = True
        sizes = np.array([self._row_size(n) for n in self._order], np.int64)
        names = [n for n, _, _ in plan]
        whole = [n for n, rows, _ in plan if len(rows) == T]
        tables = (want, sizes, names, whole)
        if small:
            cache.put(id(plan), (plan, tables))
        return tables

    def _first_read(self, plan: list[tuple[str, Any, int]]) -> None:
        """The first read of a sheet: nothing is cached, so every planned row simply runs."""
        self.computed_any = True
        if not (self.pins or self.stale or self.pending or self._observers):
            self.clean = True  # every row that holds a value is computed now, from the current inputs
        rev, tally = self.revision, self.tally
        if self._trial is not None:
            self._keep([name for name, _, _ in plan])
        for name, rows, last_row in plan:
            op = self.graph.ops[name]
            if self.dropped:
                self.restore_for((name, *op.ins))
            op.forward(self, rows)
            if not self.exact:
                self.batch_T = note_batch(self.batch_T, self.T, rows)
            if name in self.transient:  # op.forward runs op.kernel(_sel(rows)): replayed so
                self.record(name, op, _sel(rows))
            self.verified[name][rows] = rev
            self.changed[name][rows] = rev
            self.last_change[name] = rev
            self.vmax[name] = rev
            n = len(rows)
            self.full[name] = n if last_row == n - 1 else 0  # rows 0..n-1, or a gap before the first
            if n == self.T:
                self.floor[name] = rev  # every computed row (all of them) verified now
            tally.ran(name, n * self._row_size(name))

    def _plan(self, need: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray, int]]:
        """The rows of every tensor a read needs, in topological order (dfgpt.core.planning).

        Depends only on the graph, T and the request, so it is memoised on the graph and
        shared by every sheet of a model (a read of `logit[5]` plans once).
        """
        return plan_rows(self.graph, self.T, need)

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
            if not self.exact:
                self.batch_T = note_batch(self.batch_T, self.T, idx)
            op = self.graph.ops[name]
            if self.dropped:
                self.restore_for((name, *op.ins))
            if self._trial is not None:
                self._keep((name,))
            arr = self.values[name]
            if fresh:  # nothing to compare against
                op.forward(self, idx)
                if name in self.pins:
                    self._apply_pins(name, idx)
                self.changed[name][idx] = rev
                last[name] = rev
                for obs in self._observers:
                    w = obs.rows.get(name)
                    if w is not None:
                        for r in idx.tolist():
                            w.setdefault(r, None)
            else:
                ra = self.graph.row_axis[name]
                old = np.take(arr, idx, axis=ra)  # a copy: the forward writes over these rows
                first = verified[idx] < 0
                op.forward(self, idx)
                if name in self.pins:
                    self._apply_pins(name, idx)
                sel = _sel(idx)
                if isinstance(sel, slice):  # contiguous rows: a view, read before anything writes arr again
                    cut_to: list[Any] = [slice(None)] * arr.ndim
                    cut_to[ra] = sel
                    new = arr[tuple(cut_to)]
                else:
                    new = np.take(arr, idx, axis=ra)
                for obs in self._observers:  # keep each row's value from before its first recompute
                    w = obs.rows.get(name)
                    if w is not None:
                        for j, r in enumerate(idx.tolist()):
                            if r not in w:  # None: the row had no value before; else a view of the copy
                                w[r] = None if first[j] else (old[j] if ra == 0 else np.take(old, j, axis=ra))
                diff = rows_moved(new, old, ra)
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
        size, tally = self._row_size(name), self.tally
        if ran:
            tally.ran(name, ran * size)
        if cut:
            tally.cut(name, cut * size)
        kept = (checked.size - ran) * size
        if kept:
            tally.kept(name, kept)
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
