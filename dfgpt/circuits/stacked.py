"""Every pair of a dataset as one stacked run of the circuit graph: values [P, ...], one numpy call per tensor.

`Stacked(graph, params, comps, position, T)` holds what the logit row at `position` reads, for P inputs of one length.

- `forward(tokens, patches, switches)`: a run from scratch; a layer's destinations are summed
  from running sums of the sources plus their switched terms, by one product.
- `start(V, patches, switches)`, then `update({dest: switches})`: an incremental recompute (ACDC's
  edge test): a destination's input moves by Σ (1 − s_i)·Δown_i + Δs_i·(patch_i − own_i) over the
  sources that changed; a tensor runs only when an input changed, each pair from its own first
  changed row; `revert()` undoes the last update, `keep()` keeps it.

Linear layers and head projections are [rows, K] @ [K, n] products on C-ordered weight slices; the
other ops run their `batched` face. The fast mode's path (float32 models by default): equal to the
engine to float32 rounding (sums in another order); `Runs` keeps the per-pair `EdgeReplay` in exact mode.

>>> import numpy as np, dfgpt
>>> from dfgpt.circuits.runs import Runs
>>> runs = Runs(dfgpt.load("sort"), [("CABACAAAA", "CACACAAAA")], "logit_diff:B,C", exact=False)
>>> st = runs.stacked()[0]
>>> e = runs.components.edge("h[0].head[1] -> logits")
>>> row = st.update({e.dest: np.eye(1, len(runs.components.reads[e.dest]), e.slot)[0]})[0]
>>> runs.set(e.index, 1.0)
>>> cols = st.columns  # a logit difference: its two logits alone
>>> bool(np.allclose(row[cols], runs.cells[0].values("logit")[8][cols], rtol=1e-9, atol=1e-9))
True
"""

from __future__ import annotations

from bisect import bisect_left
from collections import ChainMap
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ..core.config import ConfigError
from ..core.graph import Graph
from ..core.ops import EdgeSum, HeadProj, Linear
from .circuit_graph import input_name, own_name, weight_matrix
from .components import Components, Node

__all__ = ["Stacked", "supported"]

NONE = 1 << 30  # "no row changed"


# The op kinds whose stacked runs agree with the per-pair circuit sheets: GPT-2 and nanoGPT's graphs
# (tests/test_circuits_speed.py checks every family). The rotary families (Llama, Mistral, Qwen2, Gemma,
# GPT-NeoX) do not yet (their metrics came out wrong), so they run per pair, exactly, until they do.
CHECKED = frozenset("EdgeSum Embed Gelu HeadProj LNMean LNOut LNVar Linear Score Softmax SoftmaxMax SoftmaxSum Weighted"
                    .split())


def supported(graph: Graph) -> bool:
    """Whether the stacked run can compute this circuit graph: plain linear logits, and checked op kinds."""
    out, kinds = graph.ops.get("logit"), {type(op).__name__ for op in graph.ops.values()}
    return isinstance(out, Linear) and not out.heads and not out.stride and kinds <= CHECKED


class Stacked:
    """P inputs of one length on one circuit graph, for the logit row at `position`.

    `columns`: the logits a metric reads (a logit difference's two); None computes the whole row.
    """

    def __init__(self, graph: Graph, params: dict[str, np.ndarray], comps: Components, position: int,
                 T: int, columns: Sequence[int] | None = None) -> None:
        if not supported(graph):
            raise ConfigError(f"the logits are computed by {graph.ops['logit'].label()}: use the per-pair replay")
        self.graph, self.params, self.comps, self.t, self.T = graph, params, comps, position, T
        self.rows = _plan(graph, T, position)  # tensor -> its planned rows (sorted indices)
        self.order = [n for n in graph.computed if n in self.rows]
        self.src_of = {own_name(s): k for k, s in enumerate(comps.sources)}
        self.dest_of = {input_name(d): d for d in comps.dests}
        self.n_of = {input_name(d): len(comps.reads[d]) for d in comps.dests}
        self.ins = {n: [i for i, _, c in graph.row_reads[n] if c] for n in self.order}
        self.local = {n: all(how != "prefix" for _, how, c in graph.row_reads[n] if c) for n in self.order}
        self.planned = {n: np.isin(np.arange(T), r) for n, r in self.rows.items()}
        self.gather: dict[str, str] = {}  # tensor -> how `update` runs it on a gather of rows
        for n in self.order:
            op = graph.ops[n]
            if n == "logit" or isinstance(op, EdgeSum):
                continue
            if (isinstance(op, Linear) and not op.stride) or isinstance(op, HeadProj):
                if graph.row_axis[op.ins[0]] == 0:
                    self.gather[n] = "linear"
            elif self.local[n] and graph.row_axis[n] == 0 and all(graph.row_axis[i] == 0 for i in self.ins[n]):
                self.gather[n] = "rows"
        self.weights: dict[str, np.ndarray] = {}
        self.dtype = np.dtype(graph.config.dtype)
        self.proto = {n: replace(graph.ops[n], out="", ins=()) for n in self.order}  # an op but for its names
        self.rows_key = {n: r.tobytes() for n, r in self.rows.items()}
        self.columns = None if columns is None else np.asarray(columns, dtype=np.intp)
        self._cones: dict[Node, list[str]] = {}
        self._cone_sets: dict[Node, frozenset[str]] = {}
        # Destinations reading the same sources (a layer's q, k and v inputs), summed by one product.
        self.peers: dict[str, list[str]] = {}
        for n in self.order:
            if isinstance(graph.ops[n], EdgeSum):
                self.peers.setdefault(f"#{self.n_of[n]}", []).append(n)
                self.peers[n] = self.peers[f"#{self.n_of[n]}"]
        self.at = {n: i for i, n in enumerate(self.order)}
        self._saved: list[tuple[str, Any, np.ndarray]] = []
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # tensor -> (rows, its gathered values)
        self.V: dict[str, np.ndarray] = {}
        self.patches: np.ndarray | None = None  # [S, P, T, C]
        self.switches: dict[str, np.ndarray] = {}  # destination input -> its switches (shared by the pairs)

    # -- weights --------------------------------------------------------------------------------
    def weight(self, name: str) -> np.ndarray:
        """A linear op's or head projection's weight slice as [K, n], C-ordered (memoised)."""
        got = self.weights.get(name)
        if got is None:
            w = weight_matrix(self.graph, self.params, name)
            if name == "logit" and self.columns is not None:
                w = np.ascontiguousarray(w[:, self.columns])  # [C, k]: the metric's columns alone
            got = self.weights[name] = w
        return got

    # -- one tensor -------------------------------------------------------------------------------
    def _compute(self, V: dict[str, np.ndarray], n: str, sel: Any) -> None:
        """Rows `sel` (a slice or indices) of tensor n, every pair, in place in V[n]."""
        op = self.graph.ops[n]
        if n == "logit":
            assert isinstance(op, Linear)
            x = V[op.ins[0]][:, self.t]  # [P, C]
            y = x @ self.weight(n)  # [P, C] @ [C, k] -> [P, k]
            if len(op.ins) > 2:
                b = self.params[op.ins[2]][op.cols()]
                y = y + (b if self.columns is None else b[self.columns])
            if self.columns is None:
                V[n][...] = y
            else:
                V[n][:, self.columns] = y
            return
        ra = self.graph.row_axis[n] + 1
        if isinstance(op, Linear) and not op.stride:
            x = V[op.ins[0]][:, sel]  # [P, R, K]
            P, R = x.shape[:2]
            y = (x.reshape(P * R, -1) @ self.weight(n)).reshape(P, R, -1)  # [P·R, K] @ [K, n] -> [P, R, n]
            if len(op.ins) > 2:
                y += self.params[op.ins[2]][op.cols()]
            if op.heads:
                V[n][:, :, sel] = y.reshape(P, R, op.heads, -1).transpose(0, 2, 1, 3)  # -> [P, H, R, hs]
            else:
                V[n][:, sel] = y
        elif isinstance(op, HeadProj):
            y = V[op.ins[0]][:, sel]  # [P, R, hs]
            P, R = y.shape[:2]
            V[n][:, sel] = (y.reshape(P * R, -1) @ self.weight(n)).reshape(P, R, -1)  # [P·R, hs] @ [hs, C]
        elif self.local[n]:  # every computed input read row by row: the op on those rows alone
            sub = {i: V[i][(slice(None),) * (self.graph.row_axis[i] + 1) + (sel,)] for i in self.ins[n]}
            V[n][(slice(None),) * ra + (sel,)] = op.batched(ChainMap(sub, V))  # type: ignore[arg-type]
        else:  # attention over keys: every row (T is small), then the rows asked for
            got = op.batched(V)
            idx = (slice(None),) * ra + (sel,)
            V[n][idx] = got[idx]

    # -- from scratch -------------------------------------------------------------------------------
    def forward(self, tokens: np.ndarray, patches: np.ndarray, switches: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """tokens [P, T], patches [S, P, T, C], {destination input: switches} -> every planned tensor, [P, ...]
        (the logits: the row at the position, [P, V], with `columns` only those current)."""
        g, P = self.graph, tokens.shape[0]
        V: dict[str, Any] = ChainMap({}, self.params)  # type: ignore[assignment]
        V["tokens"] = tokens
        V["temperature"] = np.array(1.0, dtype=np.dtype(g.config.dtype))
        own_sum: list[np.ndarray] = []  # own_sum[k]: the first k+1 sources' own contributions summed
        patch_sum: list[np.ndarray] = []
        delta = np.empty((len(self.comps.sources), patches[0].size), patches.dtype)  # patch − own per source, flat
        ready: dict[str, np.ndarray] = {}  # destination input -> its value, summed with its peers'
        seen: dict[tuple[Any, ...], str] = {}  # (op, rows, its inputs' arrays) -> the tensor computed so
        for n in self.order:
            op = g.ops[n]
            shape = g.specs[n].dims
            if n == "logit":
                V[n] = np.zeros((P, g.specs[n].dims[1]), self.dtype)
                self._compute(V, n, None)
                continue
            if isinstance(op, EdgeSum):
                k = self.n_of[n]
                while len(own_sum) < k:
                    i = len(own_sum)
                    o, p = V[op.own[i]], patches[i]
                    own_sum.append(o.copy() if i == 0 else own_sum[-1] + o)
                    patch_sum.append(p.copy() if i == 0 else patch_sum[-1] + p)
                    delta[i] = (p - o).reshape(-1)
                if n not in ready:  # this destination and its peers: Σ own + S @ (patch − own), or from the patches
                    group = self.peers[n]
                    S = np.stack([np.asarray(switches[m], dtype=float) for m in group])  # [g, k]
                    # Peers with the same switches have the same input: one array, and below the same
                    # LayerNorm (a clean run's q, k and v inputs of a layer are one residual stream).
                    uniq, which = np.unique(S, axis=0, return_inverse=True)
                    on = (uniq != 0).sum(axis=1) <= (uniq != 1).sum(axis=1)
                    made: list[np.ndarray] = [np.empty(0)] * len(uniq)
                    for side, coef, base in ((on, uniq, own_sum[k - 1]), (~on, uniq - 1, patch_sum[k - 1])):
                        rows = np.flatnonzero(side)
                        if not rows.size:
                            continue
                        c = coef[rows]
                        live: np.ndarray = np.any(c, axis=1)
                        M = c[live].astype(delta.dtype) @ delta[:k] if live.any() else None  # [g', k] @ [k, P·T·C]
                        r = 0
                        for q, u in enumerate(rows.tolist()):
                            if live[q]:
                                total = base + M[r].reshape(base.shape)  # type: ignore[index]
                                r += 1
                            else:
                                total = base.copy()
                            for bias in op.biases:  # a destination's biases: every peer's the same
                                total += V[bias]
                            made[u] = total
                    for m, u in zip(group, np.ravel(which).tolist()):
                        ready[m] = made[u]
                V[n] = ready.pop(n)
                continue
            key = (self.proto[n], self.rows_key[n], *(id(V[i]) if i in self.rows else i for i in op.ins))
            same = seen.get(key)
            if same is not None:  # the same op on the same arrays: the same values
                V[n] = V[same]
                continue
            seen[key] = n
            full = tuple(self.T if d == 0 else d for d in shape)
            V[n] = np.zeros((P, *full), self.dtype)
            self._compute(V, n, _sel(self.rows[n]))
        return dict(V.maps[0])  # type: ignore[attr-defined]

    # -- incremental --------------------------------------------------------------------------------
    def start(self, V: dict[str, np.ndarray], patches: np.ndarray, switches: Mapping[str, np.ndarray]) -> None:
        """Take a forward's values (and its patches and switches) as the state `update` changes."""
        self.V = ChainMap(V, self.params)  # type: ignore[assignment]
        self.patches = patches
        self.switches = {n: np.array(s, dtype=float) for n, s in switches.items()}
        self._saved = []

    def cone(self, dest: Node) -> list[str]:
        """The planned tensors below a destination, in graph order (memoised)."""
        got = self._cones.get(dest)
        if got is None:
            down = self.graph.downstream(input_name(dest))
            got = self._cones[dest] = [n for n in self.order if n in down]
            self._cone_sets[dest] = frozenset(got)
        return got

    def logits(self) -> np.ndarray:
        """The logit rows at the position, [P, V] (with `columns`, only those current)."""
        return self.V["logit"]

    def update(self, new: Mapping[Node, np.ndarray]) -> np.ndarray:
        """Give some destinations new switches and recompute what they change: the logit rows, [P, V].

        Each pair recomputes a tensor from its own first row that changed (rows before it read
        nothing that changed: the causal mask); a destination none of whose moved sources it reads
        unswitched stays as it is, and so does everything only it feeds."""
        V, g, patches = self.V, self.graph, self.patches
        assert patches is not None
        T = self.T
        self._saved = []
        changed: dict[str, np.ndarray] = {}  # tensor -> each pair's first changed row ([P]; T: none)
        msrc: list[int] = []  # the sources whose own contribution changed, in order
        dbuf = self._dbuf(V)  # [S, P·T·C]: row m the change of source msrc[m]
        moved: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # destination input -> (switch change, old switches)
        for d, s in new.items():
            n = input_name(d)
            old = self.switches[n]
            s = np.array(s, dtype=float)
            ds = s - old
            if ds.any():
                moved[n] = (ds, old)
                self._saved.append(("switch:" + n, None, old))
                self.switches[n] = s
        if not moved:
            return self.logits()
        if len(moved) == 1:
            d0 = self.dest_of[next(iter(moved))]
            cone = self.cone(d0)
            inside = self._cone_sets[d0]
        else:
            inside = frozenset().union(*(self.cone(self.dest_of[n]) for n in moved))
            cone = sorted(inside, key=self.at.__getitem__)
        pend: dict[str, np.ndarray | None] = {}  # destination input -> its sources' change, summed with its peers'
        self._cache = {}
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for n in cone:
                op = g.ops[n]
                if isinstance(op, EdgeSum):
                    # new − old input = Σ (1 − s_old)·Δown + Δs·(patch − own now), over the sources that moved
                    k = self.n_of[n]
                    ds, s = moved.get(n, (None, self.switches[n]))
                    if n not in pend:  # Σ (1 − s_i)·Δown_i for it and its peers in the cone: one [g, j] @ [j, P·T·C]
                        j = bisect_left(msrc, k)  # the moved sources they read
                        group = [m for m in self.peers[n] if m in inside]
                        if not j:
                            pend.update((m, None) for m in group)
                        else:
                            coef = np.stack([1 - moved.get(m, (None, self.switches[m]))[1][msrc[:j]] for m in group])
                            live: np.ndarray = np.any(coef, axis=1)
                            M = coef[live].astype(dbuf.dtype) @ dbuf[:j] if live.any() else None
                            r = 0
                            for q, m in enumerate(group):
                                if live[q]:
                                    pend[m] = M[r].reshape(V[n].shape)  # type: ignore[index]
                                    r += 1
                                else:
                                    pend[m] = None
                    acc: np.ndarray | None = pend.pop(n)
                    if ds is not None:
                        for i in np.flatnonzero(ds):
                            term = float(ds[i]) * (patches[i] - V[op.own[i]])
                            acc = term if acc is None else acc + term
                    if acc is None:
                        continue
                    hit: np.ndarray = np.any(acc, axis=2)  # [P, T]
                    if not hit.any():
                        continue
                    self._saved.append((n, None, V[n]))  # the array itself: revert puts it back
                    V[n] = V[n] + acc
                    changed[n] = np.where(hit.any(axis=1), hit.argmax(axis=1), T)
                    continue
                starts = [changed[i] for i in self.ins[n] if i in changed]
                if not starts:
                    continue
                first = starts[0] if len(starts) == 1 else np.minimum.reduce(starts)  # [P]
                if n == "logit":
                    if first[0] <= self.t or (first <= self.t).any():
                        self._saved.append((n, None, V[n]))
                        V[n] = V[n].copy()
                        self._compute(V, n, None)
                    continue
                planned = self.rows[n]
                lo = int(first.min())
                if planned[-1] < lo:
                    continue
                self._saved.append((n, None, V[n]))  # the array itself: the update computes into a copy
                V[n] = V[n].copy()
                op_rows = self.pair_rows(n, first)
                if op_rows is not None:
                    self._masked(V, n, op_rows)
                else:
                    self._compute(V, n, _sel(planned[planned >= lo]))
                got = np.where(first <= planned[-1], np.maximum(first, planned[0]), T)
                src = self.src_of.get(n)
                if src is not None:
                    D = V[n] - self._saved[-1][2]
                    hit = D.any(axis=2)
                    got = np.where(hit.any(axis=1), hit.argmax(axis=1), T)
                    if (got >= T).all():
                        continue
                    dbuf[len(msrc)] = D.reshape(-1)
                    msrc.append(src)
                changed[n] = got
        return self.logits()

    def _dbuf(self, V: Mapping[str, np.ndarray]) -> np.ndarray:
        """The buffer of the sources' changes during an update, [S, P·T·C] (made once)."""
        got = self.__dict__.get("_dbuf_")
        if got is None:
            x = V[own_name(self.comps.sources[0])]
            got = self.__dict__["_dbuf_"] = np.empty((len(self.comps.sources), x.size), x.dtype)
        return got

    def pair_rows(self, n: str, first: np.ndarray) -> np.ndarray | None:
        """The [P, T] mask of the rows each pair recomputes, for ops that can run on a gather of rows
        (linear layers, head projections, ops reading rows alone with rows on their first axis); None otherwise."""
        kind = self.gather.get(n)
        if kind is None:
            return None
        mask = np.arange(self.T)[None, :] >= first[:, None]
        mask &= self.planned[n][None, :]
        return mask

    def _masked(self, V: dict[str, np.ndarray], n: str, mask: np.ndarray) -> None:
        """Rows `mask` ([P, T]) of tensor n: gathered into one [N, ...] batch, computed, scattered back.
        A gathered tensor is kept for the next op reading it with the same rows (a LayerNorm's
        mean, variance and output, then the linear layer, gather their input once)."""
        op = self.graph.ops[n]
        kind = self.gather[n]
        if kind == "linear":
            x = self._gathered(V, op.ins[0], mask)  # [N, K]
            y = x @ self.weight(n)  # [N, K] @ [K, n] -> [N, n]
            if isinstance(op, Linear) and len(op.ins) > 2:
                y += self.params[op.ins[2]][op.cols()]
            if isinstance(op, Linear) and op.heads:
                V[n].transpose(0, 2, 1, 3)[mask] = y.reshape(len(y), op.heads, -1)  # [N, H, hs] into [P, T, H, hs]
            else:
                V[n][mask] = y
        else:  # rows alone: each gathered row a sequence of one
            sub = {i: self._gathered(V, i, mask)[:, None] for i in self.ins[n]}  # [N, 1, ...]
            y = op.batched(ChainMap(sub, V))[:, 0]  # type: ignore[arg-type]
            V[n][mask] = y
            self._cache[n] = (mask, y)

    def _gathered(self, V: Mapping[str, np.ndarray], name: str, mask: np.ndarray) -> np.ndarray:
        """V[name][mask], from the cache when the last op computed it on those rows."""
        got = self._cache.get(name)
        if got is not None and (got[0] is mask or np.array_equal(got[0], mask)):
            return got[1]
        return V[name][mask]

    def revert(self) -> None:
        """Undo the last update: its switches and every tensor it recomputed, as they were."""
        for n, _, a in reversed(self._saved):
            if n.startswith("switch:"):
                self.switches[n[len("switch:"):]] = a
            else:
                self.V[n] = a
        self._saved = []

    def keep(self) -> None:
        """Keep the last update."""
        self._saved = []


def _sel(rows: np.ndarray) -> Any:
    """Sorted rows as a slice when contiguous."""
    r0 = int(rows[0])
    return slice(r0, int(rows[-1]) + 1) if int(rows[-1]) - r0 + 1 == len(rows) else rows


def _plan(graph: Graph, T: int, t: int) -> dict[str, np.ndarray]:
    """The rows of every computed tensor the logit row t reads (the engine's read plan)."""
    need = {"logit": np.zeros(T, bool)}
    need["logit"][t] = True
    for name in reversed(graph.computed):
        rows = need.get(name)
        if rows is None or not rows.any():
            continue
        for inp, how, computed in graph.row_reads[name]:
            if not computed or how == "whole":
                continue
            got = need.setdefault(inp, np.zeros(T, bool))
            if how == "row":
                got |= rows
            else:
                got[: int(np.flatnonzero(rows)[-1]) + 1] = True
    return {n: np.flatnonzero(r) for n, r in need.items() if r.any()}


def switches_of(comps: Components, s: np.ndarray) -> dict[str, np.ndarray]:
    """{destination input: its switches} from every edge's switch, [edges]."""
    return {input_name(d): s[comps.first[d]: comps.first[d] + len(comps.reads[d])] for d in comps.dests}

