"""What an engine holds for one input: value caches, revisions, pins; and how writes land.

Every computed tensor keeps a value cache and, per position row, the revision at which it
was last verified and the revision at which its value last changed. A write (a weight, a
token, a pin, an appended position) bumps the revision and marks its cone stale; reading
is the subclass `Engine` (dfgpt.core.evaluate).

>>> import dfgpt
>>> s = dfgpt.load("sort-random").sheet("CAB")
>>> s.engine.shape("h[0].attn.att"), s.engine.cap
((3, 3, 3), 11)
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from .cones import Cones, Mask, Pending
from .door import Door, Observer, Trial
from .graph import Graph, TensorSpec
from .state import CellState
from .tally import Tally
from .transient import Transience, Values

__all__ = ["Store", "capacity"]


def capacity(T: int, block_size: int) -> int:
    """The exact mode's capacity for T positions: the next power of two (at least 16), within the context.

    >>> capacity(6, 11), capacity(17, 1024), capacity(2, 200_000)
    (11, 32, 16)
    """
    return min(block_size, max(16, 1 << (T - 1).bit_length()))


class Store(Door, Transience, Cones):
    """The values, caches, revisions and pins of one input run through one graph."""

    def __init__(
        self,
        graph: Graph,
        params: dict[str, np.ndarray],
        tokens: np.ndarray,
        temperature: float = 1.0,
        exact: bool = True,
        transient: bool | None = None,
    ) -> None:
        """`transient`: may the sheet drop intermediates once read (dfgpt.core.transient)? None:
        when its activations are large; True or False to force it (tests)."""
        cfg = graph.config
        self.graph = graph
        self.specs: dict[str, TensorSpec] = graph.specs
        self.exact = exact
        self.dtype = np.dtype(cfg.dtype)
        self.T = len(tokens)
        # Exact mode computes every row with shapes set by the capacity alone, and the capacity
        # by the length alone (capacity()), so any row equals a from-scratch sheet's row of the
        # same length bit for bit; memory follows the input, not the model's context.
        self.cap = capacity(self.T, cfg.block_size) if exact else max(self.T, min(cfg.block_size, 16))
        self.revision = 0
        self._choose_transient(transient)
        # Only a sheet that drops tensors needs a lookup that recomputes them; a plain dict keeps
        # the kernels' lookups on the interpreter's fast path.
        self.values: dict[str, np.ndarray] = Values(self, params) if self.transient else dict(params)
        self.base: dict[str, np.ndarray] = dict(params)  # the model's arrays, never written
        self.owned: set[str] = set()  # parameters copied on first write (the model keeps its own)
        defaults = graph.sheet_defaults  # per-graph starting dicts, copied (cheaper than built per sheet)
        self.param_changed: dict[str, int] = defaults.param_changed.copy()
        self.values["temperature"] = np.array(temperature, dtype=self.dtype)
        self.owned.add("temperature")
        self.base["temperature"] = self.values["temperature"].copy()
        tok = np.zeros(self.cap, dtype=np.int64)
        tok[: self.T] = tokens
        self.base["tokens"] = np.array(tokens, dtype=np.int64)  # the input the sheet was made with
        self.values["tokens"] = tok
        self._tok_changed = np.zeros(self.cap, np.int64)  # changed["tokens"]
        self._ver: np.ndarray  # [tensors, cap] tables (`_tables`)
        self._chg: np.ndarray
        self._order: list[str] = graph.computed  # topological order; row i of the tables below
        dtype = self.dtype
        record = None if self.transient else graph.record(self.cap, dtype)
        if record is not None:  # None past 1 GiB
            views = graph.memo.blocks.views(record)
            self.values.update(views)
        else:
            shapes = graph.shapes(self.cap).items()
            if self.transient:  # allocated when first written, so a large forward never holds them all
                shapes = [(n, s) for n, s in shapes if n not in self.transient]  # type: ignore[assignment]
            self.values.update((name, np.zeros(shape, dtype)) for name, shape in shapes)
        self._tables(self.cap)
        # True while every computed row that holds a value (verified >= 0) is current: nothing
        # but appends and reads happened since the sheet was made. A read then only runs the
        # rows that never ran, with its bookkeeping done over all tensors at once (`_clean_read`).
        self.clean = True
        self.stale: dict[str, Mask] = {}  # read through state(); deferred cones land here on flush
        self._sizes: dict[str, tuple[int, int]] = {}
        # The latest revision at which any row of a tensor changed: lets a read skip, with
        # one comparison, every tensor whose inputs did not change since it was verified.
        self.last_change: dict[str, int] = defaults.last_change.copy()
        # Per tensor, a revision at which every computed row is known valid: a row's effective
        # verified revision is max(verified[row], floor). It lets a read confirm a tensor whose
        # inputs did not change with scalar compares, instead of a pass over its rows.
        self.computed_any = False  # until the first read: then every row is simply computed
        self.floor: dict[str, int] = defaults.minus.copy()
        self.full: dict[str, int] = defaults.zero.copy()  # rows 0..full-1 all hold values
        self.vmax: dict[str, int] = defaults.minus.copy()  # the highest verified revision
        self.pending: list[Pending] = []  # stale cones not yet materialised (see defer_stale)
        self._observers: list[Observer] = []  # rows' values before their recompute, kept for receipts (door)
        self._trial: Trial | None = None  # what the open trial puts back (dfgpt.core.door)
        self.pins: dict[str, dict[tuple[int, ...], float]] = {}
        # Fast mode (not exact), where a row's bits depend on the batch of rows computed with it: the
        # length T0 at which every row 0..T0-1 that holds a value was computed in one batch of rows
        # 0..T0-1 of its tensor (rows past T0 may have run alone: appends); None before any read,
        # -1 once a row below it ran in another batch. Recomputing the same rows then repeats their
        # bits, which a receipt's `before` relies on (dfgpt.edits.receipts). Exact mode needs none.
        self.batch_T: int | None = None
        # What reads recomputed, reused and cut off (dfgpt.core.tally): clean reads' counts are added
        # when next looked at, so a sheet made for one forward never counts anything.
        self.tally = Tally()

    def _tables(self, cap: int, keep: int = 0) -> None:
        """verified and changed of every computed tensor as rows of two [tensors, cap] tables,
        keeping the first `keep` positions. The {tensor: row view} dicts are made when first
        asked for (`verified`, `changed`): a clean read works on the tables alone."""
        ver = np.full((len(self._order), cap), -1, np.int64)
        chg = np.zeros((len(self._order), cap), np.int64)
        if keep:  # row i of the tables is tensor i of `_order`, every entry of the dicts a view of it
            ver[:, :keep] = self._ver[:, :keep]
            chg[:, :keep] = self._chg[:, :keep]
        self._ver, self._chg = ver, chg
        self._verified: dict[str, np.ndarray] | None = None
        self._changed: dict[str, np.ndarray] | None = None

    @property
    def verified(self) -> dict[str, np.ndarray]:
        """{computed tensor: [cap] revision each row was last verified at} (-1 never, -2 must rerun)."""
        got = self._verified
        if got is None:
            got = self._verified = dict(zip(self._order, self._ver))  # rows of a 2-D array: views, made in C
        return got

    @property
    def changed(self) -> dict[str, np.ndarray]:
        """{"tokens" or computed tensor: [cap] revision each row last changed at}."""
        got = self._changed
        if got is None:
            got = self._changed = {"tokens": self._tok_changed}
            got.update(zip(self._order, self._chg))
        return got

    # -- shapes -----------------------------------------------------------------------
    def _cap_shape(self, name: str) -> tuple[int, ...]:
        return self.specs[name].shape(self.cap)

    def shape(self, name: str) -> tuple[int, ...]:
        """The logical shape of a tensor at the current length T."""
        return self.specs[name].shape(self.T)

    def view(self, name: str) -> np.ndarray:
        """The current values of a tensor, cut to length T (no computation but a dropped tensor's)."""
        if self.dropped and name in self.dropped:
            self.restore((name,))  # also when held: a copy's snapshot may have put stale values back
        v = self.values[name]
        spec = self.specs[name]
        if name == "tokens":
            return v[: self.T]
        key = (name, self.T)
        cuts = self.graph.memo.cuts
        idx = cuts.get(key)
        if idx is None:
            idx = cuts.put(key, tuple(slice(0, self.T) if a in ("pos", "key") else slice(None) for a in spec.axes))
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

    @property
    def counts(self) -> Counter[str]:
        """Cells recomputed per tensor, since reset_counts."""
        return self.tally.counts

    @property
    def reused(self) -> Counter[str]:
        """Cells verified without recomputing, per tensor, since reset_counts."""
        return self.tally.reused

    @property
    def cutoff(self) -> Counter[str]:
        """Cells recomputed whose row came out unchanged, per tensor, since reset_counts."""
        return self.tally.cutoff

    @property
    def total_recomputed(self) -> Counter[str]:
        """Cells recomputed per tensor, never reset (receipts diff these)."""
        return self.tally.total_recomputed

    @property
    def total_reused(self) -> Counter[str]:
        return self.tally.total_reused

    @property
    def total_cutoff(self) -> Counter[str]:
        return self.tally.total_cutoff

    def reset_counts(self) -> None:
        self.tally.reset()

    # -- writes -------------------------------------------------------------------------
    def write(self, name: str, idx: tuple[int, ...], value: Any) -> None:
        """Write one cell of a parameter or input, in place (copying a shared parameter once)."""
        if name == "tokens":
            self.flush_stale()  # a token changes which wte rows the cones go through
        self.restore_downstream(name)
        if name not in self.owned and self.specs[name].kind == "parameter":
            self.values[name] = self.values[name].copy()
            self.owned.add(name)
        self.revision += 1
        self.clean = False
        if self._trial is not None:  # inside a trial: put back on exit
            self._trial.writes.append((name, idx, self.values[name][idx].copy()))
        self.values[name][idx] = value
        if name == "tokens":
            self._tok_changed[idx[0]] = self.revision
            self.last_change["tokens"] = self.revision
        else:
            self.param_changed[name] = self.revision

    def pin(self, name: str, idx: tuple[int, ...], value: float | None) -> None:
        """Pin a computed cell to a constant (None: unpin, recompute its row on the next read)."""
        self.flush_stale()
        self.restore_downstream(name)
        self.revision += 1
        self.clean = False
        row = idx[self.graph.row_axis[name]]  # computed tensors always have a position axis
        if value is None:
            self.pins.get(name, {}).pop(idx, None)
            if self.verified[name][row] >= 0:
                self.verified[name][row] = -2  # computed once, must run again: -2 forces a recompute
                self.full[name] = min(self.full[name], row)
            return
        self.pins.setdefault(name, {})[idx] = float(value)
        if self.verified[name][row] != -1:
            self._keep((name,))
            self.values[name][idx] = value
            self.changed[name][row] = self.revision
            self.last_change[name] = self.revision

    def append(self, token: int) -> None:
        """Add one position; earlier rows stay valid (the causal mask)."""
        self.flush_stale()
        if self.T + 1 > self.cap:
            self._grow(capacity(self.T + 1, self.graph.config.block_size) if self.exact
                       else min(self.graph.config.block_size, 2 * self.cap))
        self.revision += 1
        self._keep(("tokens",))
        self.values["tokens"][self.T] = token
        self._tok_changed[self.T] = self.revision
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
        self._keep(("tokens",))
        self.values["tokens"][t] = 0
        self._tok_changed[t] = self.revision
        self.last_change["tokens"] = self.revision
        for name in self.verified:
            self.verified[name][t] = -1
            self.full[name] = min(self.full[name], t)
        if self.batch_T is not None and self.batch_T > t:  # rows 0..t-1 ran in batches of a longer length
            self.batch_T = -1
        for name, st in self.stale.items():
            ra = self.specs[name].row_axis
            sel: list[Any] = [slice(None)] * st.ndim
            sel[ra] = t  # type: ignore[index]
            st[tuple(sel)] = False
            if "key" in self.specs[name].axes:
                st[..., t] = False
        if self.exact and capacity(self.T, self.graph.config.block_size) < self.cap:
            self._grow(capacity(self.T, self.graph.config.block_size))

    def _grow(self, cap: int) -> None:
        """Resize every position axis to `cap` (larger, or smaller down to T)."""
        if self.transient:
            self.restore_all()
        old_cap, self.cap = self.cap, cap
        keep = min(old_cap, cap)
        for name, arr in list(self.values.items()):
            spec = self.specs[name]
            if spec.kind == "parameter" or name == "temperature":
                continue
            # Keys past every existing query are masked: they hold the op's masked value (-inf
            # for a score), as a sheet made at the new length would.
            fill = self.graph.ops[name].masked if "key" in spec.axes else 0
            # zeros come from the kernel untouched: only the rows copied below are paged in (GPT-2's logits
            # at 128 positions are 26 MB, and a grow makes every tensor anew)
            shape = spec.shape(cap)
            new = np.zeros(shape, arr.dtype) if fill == 0 and not np.signbit(fill) else np.full(shape, fill, arr.dtype)
            cut = tuple(slice(0, keep) if a in ("pos", "key") else slice(None) for a in spec.axes)
            new[cut] = arr[cut]
            self.values[name] = new
        tok = self._tok_changed
        self._tok_changed = np.concatenate([tok[:keep], np.zeros(cap - keep, np.int64)])
        self._tables(cap, keep)
        for name, st in list(self.stale.items()):
            new = np.zeros(self._cap_shape(name), bool)
            cut = tuple(slice(0, min(n, m)) for n, m in zip(st.shape, new.shape))
            new[cut] = st[cut]
            self.stale[name] = new
        if self.exact:
            # Rows computed at the old capacity may differ in the last bit from the same rows at
            # the new one (BLAS kernels block the key axis by its length): every row runs again.
            self.clean = False  # -2 rows: the clean read runs only rows that never ran
            for name, v in self.verified.items():
                v[v >= 0] = -2
                self.full[name] = 0
                self.floor[name] = -1

    def state(self, name: str, idx: tuple[int, ...]) -> CellState:
        """PINNED, UNSET (never computed), STALE or FRESH for a computed cell; FRESH or EDITED otherwise."""
        spec = self.specs[name]
        if spec.kind != "computed":
            base = self.base.get(name)
            if base is None or self.values[name] is base:
                return CellState.FRESH
            if name == "tokens" and idx[0] >= len(base):
                return CellState.EDITED  # appended after the sheet was made
            now, was = self.values[name][idx], base[idx]
            same = now == was and np.signbit(now) == np.signbit(was)
            return CellState.FRESH if same else CellState.EDITED
        if idx in self.pins.get(name, {}):
            return CellState.PINNED
        self.flush_stale()
        v = self.verified[name][idx[self.graph.row_axis[name]]]
        if v == -1:
            return CellState.UNSET
        st = self.stale.get(name)
        return CellState.STALE if v == -2 or (st is not None and st[idx]) else CellState.FRESH

    def info(self) -> dict[str, Any]:
        return {"T": self.T, "cap": self.cap, "revision": self.revision, "exact": self.exact}
