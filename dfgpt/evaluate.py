"""Lazy, incremental evaluation of a tensor graph, with validity tracked per position row.

Every computed tensor keeps a value cache and, per position row, the revision at which it
was last verified and the revision at which its value last changed (the red-green scheme
of incremental build systems). A read computes only the rows its cone needs; a row whose
inputs did not change since it was verified is reused; a recomputed row whose value came
out the same stops the change from propagating (cut-off).

>>> import dfgpt
>>> s = dfgpt.load("sort-random").sheet("CABACA")
>>> _ = s.value("logit[2][A]")
>>> s.engine.rows_computed("logit")  # rows 0..2 only
3
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from .graph import Graph, TensorSpec

__all__ = ["Engine", "Mask"]

Mask = np.ndarray


class Engine:
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
        self.T = int(len(tokens))
        # Exact mode fixes the capacity, so every row is computed with the same shapes.
        self.cap = cfg.block_size if exact else max(self.T, min(cfg.block_size, 16))
        self.revision = 0
        self.values: dict[str, np.ndarray] = dict(params)
        self.owned: set[str] = set()  # parameters copied on first write (the model keeps its own)
        self.param_changed: dict[str, int] = {n: 0 for n in graph.parameters}
        self.param_changed["temperature"] = 0
        self.values["temperature"] = np.array(temperature, dtype=self.dtype)
        self.owned.add("temperature")
        tok = np.zeros(self.cap, dtype=np.int64)
        tok[: self.T] = tokens
        self.values["tokens"] = tok
        self.verified: dict[str, np.ndarray] = {}
        self.changed: dict[str, np.ndarray] = {"tokens": np.zeros(self.cap, np.int64)}
        for name in graph.computed:
            self.values[name] = np.zeros(self._cap_shape(name), self.dtype)
            self.verified[name] = np.full(self.cap, -1, np.int64)
            self.changed[name] = np.zeros(self.cap, np.int64)
        self.stale: dict[str, Mask] = {}
        self.pins: dict[str, dict[tuple[int, ...], float]] = {}
        self.counts: Counter[str] = Counter()  # cells recomputed per tensor, since reset_counts
        self.reused: Counter[str] = Counter()  # cells verified without recomputing
        self.cutoff: Counter[str] = Counter()  # cells recomputed whose row came out unchanged
        self.total_recomputed: Counter[str] = Counter()

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
        shape = self.shape(name)
        ra = self.specs[name].row_axis
        return int(np.prod(shape)) // shape[ra] if ra is not None else int(np.prod(shape))

    def rows_computed(self, name: str) -> int:
        """How many position rows of a computed tensor hold a value (for tests)."""
        return int((self.verified[name][: self.T] >= 0).sum())

    def reset_counts(self) -> None:
        self.counts.clear()
        self.reused.clear()
        self.cutoff.clear()

    # -- lazy evaluation --------------------------------------------------------------
    def ensure(self, need: dict[str, np.ndarray]) -> None:
        """Make the given rows ({tensor: bool[T]}) of computed tensors current."""
        need = {k: v.copy() for k, v in need.items() if self.specs[k].kind == "computed"}
        if not need:
            return
        ops = self.graph.ops
        for name in reversed(self.graph.computed):
            rows = need.get(name)
            if rows is None or not rows.any():
                continue
            op = ops[name]
            for inp, how in zip(op.ins, op.row_reads):
                if how == "whole" or self.specs[inp].kind != "computed":
                    continue
                got = need.setdefault(inp, np.zeros(self.T, bool))
                if how == "row":
                    got |= rows
                else:
                    got[: int(np.flatnonzero(rows)[-1]) + 1] = True
        for name in self.graph.computed:
            rows = need.get(name)
            if rows is not None and rows.any():
                self._refresh(name, rows)

    def _dep_changed(self, name: str) -> np.ndarray:
        """[T]: the latest revision at which anything a row reads changed."""
        op = self.graph.ops[name]
        dep = np.zeros(self.T, np.int64)
        for inp, how in zip(op.ins, op.row_reads):
            if inp in self.param_changed:
                np.maximum(dep, self.param_changed[inp], out=dep)
            elif how == "prefix":
                np.maximum(dep, np.maximum.accumulate(self.changed[inp][: self.T]), out=dep)
            else:
                np.maximum(dep, self.changed[inp][: self.T], out=dep)
        return dep

    def _refresh(self, name: str, rows: np.ndarray) -> None:
        verified = self.verified[name][: self.T]
        check = rows & (verified < self.revision)
        if not check.any():
            return
        run = check & (self._dep_changed(name) > verified)
        idx = np.flatnonzero(run)
        ra = self.specs[name].row_axis
        assert ra is not None  # computed tensors always have a position axis
        size = self._row_size(name)
        if idx.size:
            arr = self.values[name]
            old = np.take(arr, idx, axis=ra)
            self.graph.ops[name].forward(self, idx)
            self._apply_pins(name, idx)
            new = np.take(arr, idx, axis=ra)
            diff = np.moveaxis(new != old, ra, 0).reshape(idx.size, -1).any(axis=1)
            first = verified[idx] < 0
            self.changed[name][idx[diff | first]] = self.revision
            self.counts[name] += idx.size * size
            self.total_recomputed[name] += idx.size * size
            self.cutoff[name] += int((~diff & ~first).sum()) * size
        self.reused[name] += int(check.sum() - idx.size) * size
        self.verified[name][np.flatnonzero(check)] = self.revision
        st = self.stale.get(name)
        if st is not None:
            sel = [slice(None)] * st.ndim
            sel[ra] = np.flatnonzero(check)  # type: ignore[call-overload]
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

    # -- cell-level cones (exact, vectorised) -----------------------------------------
    def ancestors(self, seeds: dict[str, Mask]) -> dict[str, Mask]:
        """Every cell the seed cells read, directly or not, as {tensor: bool mask} (seeds included)."""
        masks = {k: v.copy() for k, v in seeds.items()}
        ops = self.graph.ops
        for name in reversed(self.graph.computed):
            m = masks.get(name)
            if m is None or not m.any():
                continue
            op = ops[name]
            for k, inp in enumerate(op.ins):
                got = op.cells_read(k, m, self)
                if got is None or not got.any():
                    continue
                if inp in masks:
                    masks[inp] = masks[inp] | got
                else:
                    masks[inp] = got
        return {k: v for k, v in masks.items() if v.any()}

    def descendants(self, seeds: dict[str, Mask]) -> dict[str, Mask]:
        """Every cell that reads a seed cell, directly or not (seeds included)."""
        masks = {k: v.copy() for k, v in seeds.items()}
        for name in self.graph.computed:
            op = self.graph.ops[name]
            ins = [masks.get(i) for i in op.ins]
            if all(m is None for m in ins):
                continue
            out = op.cells_written(ins, self)
            if name in self.pins:
                for idx in self.pins[name]:
                    out[idx] = False  # a pinned cell is a constant: it reads nothing
            if out.any():
                masks[name] = masks[name] | out if name in masks else out
        return {k: v for k, v in masks.items() if v.any()}

    def precedents(self, name: str, mask: Mask) -> dict[str, Mask]:
        """Direct inputs of the cells in `mask` of a computed tensor."""
        op = self.graph.ops[name]
        out: dict[str, Mask] = {}
        for k, inp in enumerate(op.ins):
            got = op.cells_read(k, mask, self)
            if got is not None and got.any():
                out[inp] = out[inp] | got if inp in out else got
        return out

    def dependents(self, name: str, mask: Mask) -> dict[str, Mask]:
        """Computed cells that read the cells in `mask` directly."""
        out: dict[str, Mask] = {}
        for op_name in self.graph.nx.successors(name):
            op = self.graph.ops[op_name]
            ins = [mask if i == name else None for i in op.ins]
            got = op.cells_written(ins, self)
            if got.any():
                out[op_name] = got
        return out

    # -- writes -------------------------------------------------------------------------
    def mark_stale(self, seeds: dict[str, Mask]) -> dict[str, Mask]:
        """Mark the downstream cone of the seed cells stale; return that cone (seeds excluded)."""
        cone = self.descendants(seeds)
        for name, m in cone.items():
            if name in seeds or self.specs[name].kind != "computed":
                continue
            st = self.stale.get(name)
            if st is None:
                st = self.stale[name] = np.zeros(self._cap_shape(name), bool)
            st[tuple(slice(0, n) for n in m.shape)] |= m
        return {k: v for k, v in cone.items() if k not in seeds}

    def write(self, name: str, idx: tuple[int, ...], value: Any) -> None:
        """Write one cell of a parameter or input, in place (copying a shared parameter once)."""
        if name not in self.owned and self.specs[name].kind == "parameter":
            self.values[name] = self.values[name].copy()
            self.owned.add(name)
        self.revision += 1
        self.values[name][idx] = value
        if name == "tokens":
            self.changed["tokens"][idx[0]] = self.revision
        else:
            self.param_changed[name] = self.revision

    def pin(self, name: str, idx: tuple[int, ...], value: float | None) -> None:
        """Pin a computed cell to a constant (None: unpin, recompute its row on the next read)."""
        self.revision += 1
        ra = self.specs[name].row_axis
        assert ra is not None
        row = idx[ra]
        if value is None:
            self.pins.get(name, {}).pop(idx, None)
            self.verified[name][row] = -1
            return
        self.pins.setdefault(name, {})[idx] = float(value)
        if self.verified[name][row] >= 0:
            self.values[name][idx] = value
            self.changed[name][row] = self.revision

    def append(self, token: int) -> None:
        """Add one position; earlier rows stay valid (the causal mask)."""
        if self.T + 1 > self.cap:
            self._grow(min(self.graph.config.block_size, 2 * self.cap))
        self.revision += 1
        self.values["tokens"][self.T] = token
        self.changed["tokens"][self.T] = self.revision
        self.T += 1

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
            return "edited" if name in self.owned and name != "temperature" else "fresh"
        if idx in self.pins.get(name, {}):
            return "pinned"
        ra = spec.row_axis
        assert ra is not None
        if self.verified[name][idx[ra]] < 0:
            return "unset"
        st = self.stale.get(name)
        return "stale" if st is not None and st[idx] else "fresh"

    def info(self) -> dict[str, Any]:
        return {"T": self.T, "cap": self.cap, "revision": self.revision, "exact": self.exact}
