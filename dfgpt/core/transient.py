"""Transient tensors: on a large sheet, intermediates are dropped once read and recomputed on demand.

A GPT-2-small forward at T = 1024 makes ~2.2 GiB of activations, most of them [heads, T, T]
scores and softmaxes that nothing reads after the layer that made them. On a sheet whose
activations pass `TRANSIENT_BYTES`, every tensor that is cheap to recompute is *transient*: a
clean read drops it right after its last reader in that read (unless the read asked for it),
keeping its bookkeeping (the revisions it was verified and changed at), so the sheet still
knows the rows hold values. What stays resident: the residual stream (the embedding and each
block's additions), the keys and values (every later position reads them: the KV cache, so
generation recomputes nothing), the small per-row statistics, and what a read asked for.

A dropped tensor remembers how its values were made: the op and the rows of every computation
that wrote it (`made`). Reading it (`values[name]`, `view`, a read that asks for it) replays
those in order from its inputs, restoring dropped inputs first, with the kernels that first ran
(the unfused op of a fused kernel gives the same bits), so its values come back bit for bit in
exact mode and in fast mode alike. Its inputs are as they were then: an edit restores the
dropped tensors downstream of it first (cut-off and receipts compare new values with old ones,
which only the old inputs reproduce), and a capacity change restores every one of them and keeps
the sheet resident from then on (a kernel's shapes follow the capacity).

>>> import dfgpt
>>> import numpy as np
>>> from dfgpt.core.evaluate import Engine
>>> m = dfgpt.load("sort-random")
>>> e = Engine(m.graph, m.params, np.array(m.encode("CABACA")), transient=True)
>>> e.ensure({"logit": np.ones(6, bool)})
>>> "h[0].attn.att" in e.values, "h[0].attn.k" in e.values, "logit" in e.values  # dropped, KV, target
(False, True, True)
>>> round(float(e.view("h[0].attn.att")[0, 5].sum()), 12)  # recomputed on demand
1.0
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

import numpy as np

from .graph import Graph, TensorSpec
from .ops.base import Kernel, Op

__all__ = ["TRANSIENT_BYTES", "Transience", "Values", "activation_bytes", "transient_tensors"]

# A sheet whose computed tensors hold more than this drops its transient ones: GPT-2 small passes
# it from T ≈ 200 (2.4 GiB at T = 1024); `sort`, and GPT-2 small at T = 64 (~60 MiB), stay resident.
TRANSIENT_BYTES = 256 * 2**20


def activation_bytes(graph: Graph, cap: int, dtype: np.dtype) -> int:
    """Bytes of every computed tensor at a capacity."""
    return graph.cells(cap) * dtype.itemsize


def transient_tensors(graph: Graph) -> frozenset[str]:
    """The computed tensors a large sheet may drop: all but the residual stream, what later rows
    read (keys and values), and the per-row statistics (a LayerNorm's mean and variance, a
    softmax's max and sum: a few numbers a row, which spare a replay its reductions)."""
    keep = set()
    for name, op in graph.ops.items():
        if op.resident:  # the residual stream and the statistics (each op kind says)
            keep.add(name)
        keep.update(inp for inp, how, _ in graph.row_reads[name] if how == "prefix")
    return frozenset(n for n in graph.computed if n not in keep)


class Values(dict[str, np.ndarray]):
    """An engine's {tensor: array}: a dropped tensor, looked up, is recomputed (and kept)."""

    __slots__ = ("_owner",)

    def __init__(self, owner: Transience, items: Iterable[tuple[str, np.ndarray]] | dict[str, np.ndarray]) -> None:
        super().__init__(items)
        self._owner = weakref.ref(owner)  # no cycle: a sheet's arrays go when the sheet does

    def __missing__(self, name: str) -> np.ndarray:
        owner = self._owner()
        if owner is None or name not in owner.dropped:
            raise KeyError(name)
        owner.restore((name,))
        return dict.__getitem__(self, name)

    def __reduce__(self) -> Any:
        return (dict, (dict(self),))  # pickled, a plain dict of what is held


def _unfused(entry: Any) -> tuple[Op, ...]:
    """The ops a clean read's entry runs: a fused kernel's parts, or the op itself."""
    parts: tuple[Op, ...] | None = getattr(entry, "parts", None)
    return parts if parts is not None else (entry,)


class Transience:
    """Dropping and recomputing transient tensors, mixed into `Store` (which owns the state)."""

    graph: Graph
    specs: dict[str, TensorSpec]
    values: dict[str, np.ndarray]
    cap: int
    exact: bool
    dtype: np.dtype
    transient: frozenset[str]  # the tensors this sheet may drop (empty: everything stays)
    dropped: set[str]  # transient tensors not held now (never computed, or dropped after a read)
    made: dict[str, tuple[tuple[Op, Any], ...]]  # per transient tensor: (op, rows) of every write, in order

    def _choose_transient(self, transient: bool | None) -> None:
        """Decide, once per sheet, what it may drop: `transient` None by its activation bytes."""
        if transient is None:
            transient = activation_bytes(self.graph, self.cap, self.dtype) > TRANSIENT_BYTES
        self.transient = transient_tensors(self.graph) if transient else frozenset()
        self.dropped = set(self.transient)  # not even allocated until a computation writes them
        self.made = {}

    def restore(self, names: Iterable[str]) -> None:
        """Bring dropped tensors back by replaying how they were made (their dropped inputs first,
        dropped again afterwards); the named ones stay held."""
        dropped = self.dropped
        keep = [n for n in names if n in dropped]
        if not keep:
            return
        need: set[str] = set()
        stack = list(keep)
        while stack:  # the dropped tensors the replays read, transitively (iteratively: no recursion)
            n = stack.pop()
            if n in need:
                continue
            need.add(n)
            for op, _ in self.made.get(n, ()):
                stack.extend(i for i in op.ins if i in dropped and i not in need)
        pos = self.graph.position
        vals, cap, exact = self.values, self.cap, self.exact
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for n in sorted(need, key=pos.__getitem__):  # inputs before their readers
                vals[n] = np.zeros(self.specs[n].shape(cap), self.dtype)  # as a sheet allocates it
                for op, sel in self.made.get(n, ()):
                    op.kernel(sel, cap, exact)(vals)
                dropped.discard(n)
        for n in need.difference(keep):
            self.drop(n)

    def drop(self, name: str) -> None:
        self.values.pop(name, None)
        self.dropped.add(name)

    def record(self, name: str, op: Op, sel: Any) -> None:
        """Op `op` wrote rows `sel` of transient `name` (a tuple, never mutated: copies may share it)."""
        self.made[name] = (*self.made.get(name, ()), (op, sel))

    def restore_downstream(self, name: str) -> None:
        """Before an edit of `name`: every dropped tensor it can change comes back, while the
        inputs it was made from are still as they were."""
        if self.dropped:
            down = self.graph.downstream(name)
            self.restore([n for n in self.dropped if n in down and n in self.made])

    def restore_all(self) -> None:
        """Before the capacity changes: everything comes back and stays (kernels follow the capacity)."""
        self.restore(list(self.dropped))
        self.transient = frozenset()
        self.made = {}

    def restore_for(self, names: Iterable[str]) -> None:
        """The dropped ones of these tensors back, before an op reads or writes them."""
        gone = [n for n in names if n in self.dropped]
        if gone:
            self.restore(gone)

    def transient_steps(self, run: list[tuple[Any, Any]], kernels: list[Kernel],
                        targets: Iterable[str]) -> list[Kernel]:
        """A clean read's kernels, with what transience adds: the dropped tensors a kernel touches
        restored before it, its transient outputs' writes recorded after it, and every transient
        tensor the read did not ask for dropped right after its last reader."""
        transient, want = self.transient, set(targets)
        touched, writes = [], []
        last: dict[str, int] = {}
        for i, (entry, sel) in enumerate(run):
            ops = _unfused(entry)
            names = {op.out for op in ops} | {n for op in ops for n in op.ins}
            touch = tuple(n for n in names if n in transient)
            touched.append(touch)
            writes.append(tuple((op.out, op, sel) for op in ops if op.out in transient))
            for n in touch:
                if n not in want:
                    last[n] = i
        drops: list[list[str]] = [[] for _ in run]
        for n, i in last.items():
            drops[i].append(n)
        return [self._step(k, t, w, tuple(d)) for k, t, w, d in zip(kernels, touched, writes, drops)]

    def _step(self, kernel: Kernel, touch: tuple[str, ...], writes: tuple[tuple[str, Op, Any], ...],
              drops: tuple[str, ...]) -> Kernel:
        def step(vals: dict[str, np.ndarray]) -> None:
            if self.dropped:
                self.restore_for(touch)
            kernel(vals)
            for name, op, sel in writes:
                self.record(name, op, sel)
            for name in drops:
                self.drop(name)

        return step
