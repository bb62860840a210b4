"""The engine's door: what the layers above may use besides reads and edits.

A read plan (`plan`), the cells per position row (`row_size`), a cheap copy that shares the
parameters (`fork`), a context that undoes whatever happens inside it (`trial`), and observers
that keep each watched row's value from before its first recompute (`observe`, `unobserve`).
Influence, patching, replays, ablation sweeps and receipts go through these (and the engine's
public reads and writes) only, so a new field of the engine is the engine's own business:
`fork` and `trial` handle every attribute, whatever its name.

>>> import dfgpt
>>> import numpy as np
>>> s = dfgpt.load("sort-random").sheet("CABACA")
>>> e = s.engine
>>> before = s.value("logit[5][A]")
>>> with e.trial():  # a what-if that leaves nothing behind
...     e.write("wpe", (5, 0), 0.5)
...     e.ensure({"logit": np.ones(6, bool)})
...     changed = float(e.view("logit")[5, 0]) != before
>>> changed, s.value("logit[5][A]") == before, e.revision
(True, True, 0)
>>> f = e.fork()
>>> f.values["wte"] is e.values["wte"]  # shared until the fork writes it
True
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from .cones import Pending
from .transient import Values

if TYPE_CHECKING:
    from .graph import Graph

__all__ = ["Door", "Observer", "Plan", "Trial"]

Plan = list[tuple[str, np.ndarray, int]]  # [(tensor, sorted row indices, last row)], topological order

# Attributes a fork or a trial leaves bound as they are: the graph and the model's own arrays
# (never written), and caches that follow from the graph and T alone.
_SHARED = frozenset({"graph", "specs", "base", "_sizes"})
# {tensor: row view} of the revision tables: rebuilt from the tables (a copy would not be a view).
_VIEWS = frozenset({"_verified", "_changed"})
_DEEP = frozenset({np.ndarray, set, dict, list, Counter})  # what a copy two levels deep copies again


class Observer:
    """Watched rows: {tensor: {row: its value before its first recompute since `observe`, None: had none}}.

    Rows are recorded as reads recompute them; `rows` may be seeded with rows changed some other
    way (a pin), which then keep the value given.
    """

    __slots__ = ("rows",)

    def __init__(self, rows: dict[str, dict[int, np.ndarray | None]]) -> None:
        self.rows = rows


class Door:
    """The public door of the engine, mixed into `Store` (the state is the engine's)."""

    graph: Graph
    values: dict[str, np.ndarray]
    T: int
    revision: int
    _observers: list[Observer]
    _trial: Trial | None
    _plan: Callable[[dict[str, np.ndarray]], Plan]
    _row_size: Callable[[str], int]

    def plan(self, need: dict[str, np.ndarray]) -> Plan:
        """What reading `need` ({computed tensor: bool[T]}) computes: [(tensor, rows, last row)] in
        topological order (memoised per graph: treat it as read-only)."""
        return self._plan(need)

    def row_size(self, name: str) -> int:
        """Cells in one position row of a computed tensor at the current length."""
        return self._row_size(name)

    # -- observers ------------------------------------------------------------------------------
    def observe(self, tensors: Iterable[str], seed: dict[str, dict[int, np.ndarray]] | None = None) -> Observer:
        """Keep, per row of these tensors, its value before its first recompute from now on (several
        observers may watch at once); `seed`: rows whose earlier value is already known."""
        rows: dict[str, dict[int, np.ndarray | None]] = {t: {} for t in tensors}
        for t, got in (seed or {}).items():
            rows.setdefault(t, {}).update(got)
        obs = Observer(rows)
        self._observers.append(obs)
        return obs

    def unobserve(self, observer: Observer) -> None:
        """Stop recording into an observer (one already removed is left alone)."""
        self._observers[:] = [o for o in self._observers if o is not observer]

    # -- forks and trials -------------------------------------------------------------------------
    def fork(self) -> Self:
        """A copy to compute on: parameters shared (copied by the fork on its first write of one, so
        it never writes this engine's arrays), everything else its own; no observers."""
        c: Any = object.__new__(type(self))
        params = set(self.graph.parameters)
        for k, v in vars(self).items():
            if k in _SHARED:
                got = v
            elif k == "values":
                got = Values(c, ()) if isinstance(v, Values) else {}
                got.update((n, a if n in params else a.copy()) for n, a in v.items())
            elif k == "owned":
                got = {n for n in v if n not in params}
            elif k in _VIEWS:
                got = None
            elif k == "_observers":
                got = []
            elif k == "_trial":
                got = None
            elif k == "pending":  # the receipts hold this engine's; the fork's are its own
                got = [Pending(p.seeds, p.exclude, p.revision) for p in v]
            else:
                got = _copy(v)
            setattr(c, k, got)
        return c

    @contextmanager
    def trial(self) -> Iterator[Self]:
        """Inside, edit and read freely; on exit (also on an exception) every value, pin, revision,
        cache, counter and observer is as it was on entry, bit for bit.

        A parameter written inside is put back cell by cell (a shared one was copied on write; the
        copy is kept, restored): never a whole-tensor copy per trial. A computed tensor is copied
        when the engine first writes it inside (`_keep`), so a trial costs what its cone holds.
        """
        saved = self._save()
        outer, self._trial = self._trial, Trial()
        try:
            yield self
        finally:
            self._restore(saved, outer)

    def _keep(self, names: Iterable[str]) -> None:
        """Inside a trial, before the engine writes these tensors' arrays in place: copy each once."""
        trial = self._trial
        if trial is None:
            return
        kept, values = trial.kept, self.values
        for n in names:
            if n not in kept:
                a = dict.get(values, n)  # a dropped tensor has no array to keep (and is not restored here)
                if a is not None:
                    kept[n] = _Held(a)

    def _save(self) -> dict[str, Any]:
        params = set(self.graph.parameters)
        out: dict[str, Any] = {}
        for k, v in vars(self).items():
            if k in _SHARED or k in _VIEWS or k in ("owned", "_trial"):
                out[k] = v  # `owned` may only grow: parameters copied on write stay the engine's
            elif k == "values":  # the arrays themselves are copied as they are first written (`_keep`)
                out[k] = {n: a for n, a in v.items() if n not in params}
            elif isinstance(v, np.ndarray):
                out[k] = _Held(v)
            elif k == "_observers":
                out[k] = (list(v), [(o, {t: dict(r) for t, r in o.rows.items()}) for o in v])
            elif k == "pending":
                out[k] = (list(v), [(p, p.counts) for p in v])
            else:
                out[k] = _copy(v)
        return out

    def _restore(self, saved: dict[str, Any], outer: Trial | None) -> None:
        values, trial = self.values, self._trial
        if trial is not None:
            for name, idx, old in reversed(trial.writes):
                values[name][idx] = old  # parameters (and inputs) written in place, put back
            for held in trial.kept.values():
                held.put_back()  # in place: views handed out stay valid
        params = set(self.graph.parameters)
        for k in [k for k in vars(self) if k not in saved]:
            delattr(self, k)  # made inside the trial (a counter first used there)
        for k, v in saved.items():
            if k == "values":
                for n in [n for n in values if n not in params]:
                    del values[n]
                values.update(v)
            elif k == "_observers":
                live, rows = v
                for o, r in rows:
                    o.rows.clear()
                    o.rows.update(r)
                setattr(self, k, live)
            elif k == "pending":
                live, counts = v
                for p, n in counts:
                    p.counts = n
                setattr(self, k, live)
            elif isinstance(v, _Held):
                setattr(self, k, v.put_back())
            else:
                setattr(self, k, v)
        self._trial = outer


class Trial:
    """What a trial puts back besides the attributes: cells written in place, arrays first written."""

    __slots__ = ("kept", "writes")

    def __init__(self) -> None:
        self.writes: list[tuple[str, tuple[int, ...], Any]] = []  # (tensor, index, old value), in order
        self.kept: dict[str, _Held] = {}  # per computed tensor (or input) written in place: its array and copy


class _Held:
    """An array attribute on entry to a trial: the array itself and a copy of its contents."""

    __slots__ = ("array", "copy")

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.copy = array, array.copy()

    def put_back(self) -> np.ndarray:
        self.array[...] = self.copy  # in place: row views of it handed out stay valid
        return self.array


def _copy(v: Any) -> Any:
    """A copy two levels deep: arrays, Counters, sets, lists, and dicts of those."""
    if isinstance(v, np.ndarray):
        return v.copy()
    if isinstance(v, Counter):
        return Counter(v)
    if isinstance(v, (set, list)):
        return type(v)(v)
    if isinstance(v, dict):
        if _DEEP.isdisjoint(map(type, v.values())):  # numbers, tuples: a shallow copy (the type scan runs in C)
            return v.copy()
        return {k: _copy(x) if isinstance(x, (np.ndarray, set, dict, list)) else x for k, x in v.items()}
    copy = getattr(v, "copy", None)
    return copy() if callable(copy) else v
