"""A dataset of (clean, corrupted) pairs as private circuit runs: clean inputs, corrupted contributions as patches.

Discovery works on these and never on the caller's sheets: each pair's clean input runs on
its own circuit sheet whose patches hold the corrupted run's contributions, so switching an
edge on is patching it from the corrupted run, and only that destination's cone is
recomputed on the next read. Whatever interrupts a discovery, the caller's sheets are only
ever read (their tokens).

>>> import dfgpt
>>> runs = Runs(dfgpt.load("sort"), [("CABACAAAA", "CACACAAAA")], "logit_diff:B,C")
>>> round(runs.clean, 3), round(runs.corrupted, 3), round(runs.measure(), 3)
(12.503, -10.749, 12.503)
>>> runs.keep_only([]); round(runs.measure(), 3)
-10.749
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..cells import Cells
from ..core.autodiff import backward, forward
from ..core.ops import Linear
from ..errors import QueryError, show
from ..interventions.metrics import Metric, parse_metric
from ..models.weights import Weights
from .attribution import SwitchGradient
from .circuit_graph import CircuitWeights, circuit_weights, own_name, patch_name, switch_name
from .circuit_sheet import CircuitSheet
from .components import Components
from .replay import EdgeReplay
from .stacked import Stacked, supported, switches_of

__all__ = ["BLOCK", "Pair", "Runs"]

BLOCK = 8  # pairs per batched switch-gradient sweep: its memory is bounded, and blocks can run anywhere

Pair = tuple[Any, Any]  # (clean, corrupted): texts, token ids or sheets (their tokens)


def _tokens(model: Weights, x: Any) -> list[int]:
    if isinstance(x, Cells):
        return list(x.tokens)
    return model.encode(x)


class _At:
    """A sheet's logit row replaced by another (the metric's gradient at a point of an integrated path)."""

    def __init__(self, cells: Cells, row: np.ndarray) -> None:
        self.engine, self.config, self.row, self.cells = cells.engine, cells.config, row, cells

    def __getattr__(self, name: str) -> Any:  # T, token_id, token_spelling: the sheet's
        return getattr(self.__dict__["cells"], name)

    def value(self, text: str) -> np.ndarray:
        return self.row


class Runs:
    """Each pair's clean input on a private circuit sheet, patched from its corrupted run.

    `metric`: a spec ('logit_diff:B,C', 'kl', ...) or a callable of a sheet, read at each clean
    input's last position unless the spec says `@t`.
    """

    def __init__(self, model: Weights, pairs: Sequence[Pair], metric: str | Callable[[Any], float] | Metric,
                 exact: bool | None = None) -> None:
        base = model.model if isinstance(model, CircuitWeights) else model
        if not isinstance(base, Weights):
            raise QueryError(f"model must be a dfgpt model (dfgpt.load(...)), got {type(model).__name__}.")
        if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence) or not pairs:
            raise QueryError(f"pairs must be a non-empty list of (clean, corrupted) inputs, got {show(pairs)}.")
        self.model = base
        self.components = Components(base.config)
        self.exact = base.config.dtype == "float64" if exact is None else bool(exact)
        self._exact_arg = exact
        self.tokens: list[tuple[list[int], list[int]]] = []  # (clean, corrupted) ids per pair
        for i, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise QueryError(f"pair {i} must be (clean, corrupted), got {show(pair)}.")
            clean, corrupted = (_tokens(base, x) for x in pair)
            if len(clean) != len(corrupted):
                raise QueryError(f"pair {i}: the clean input has {len(clean)} positions and the corrupted one "
                                 f"{len(corrupted)}; edges carry every position, so a pair must have one length.")
            self.tokens.append((clean, corrupted))
        self._cells: list[Cells] | None = None
        self._groups: list[tuple[Stacked, list[int]]] | None = None
        self.metrics: list[Metric] = []
        # The fast path (fast mode, a spec metric): every pair of one length stacked, no circuit sheet per
        # pair; exact mode and callable metrics run each pair's circuit sheet (bit for bit, any reads).
        fast = (not self.exact and isinstance(metric, str)
                and supported(circuit_weights(base, len(self.tokens[0][0])).graph))
        if fast and isinstance(metric, str):
            self._set_up_stacked(metric)
        else:
            self._set_up_sheets(metric)
        self.name = self.metrics[0].name
        self.kl = self.metrics[0].kind == "kl"

    def _set_up_sheets(self, metric: str | Callable[[Any], float] | Metric) -> None:
        """Each pair's clean input on its own circuit sheet, patched with its corrupted run's contributions."""
        base, exact = self.model, self._exact_arg
        cells_of, cleans, corrupts = [], [], []
        for clean, corrupted in self.tokens:
            bad = CircuitSheet(base, corrupted, exact=exact)
            cells = self._patched(clean, bad.contributions())
            m = parse_metric(metric, cells)
            cells_of.append(cells)
            self.metrics.append(m)
            cleans.append(m(cells))
            corrupts.append(m(bad))
        self._cells = cells_of
        self.cleans, self.corrupts = cleans, corrupts  # each pair's, for a distributed discovery's means
        self.clean = float(np.mean(cleans))
        self.corrupted = float(np.mean(corrupts))

    def _patched(self, clean: list[int], patches: np.ndarray) -> Cells:
        """A clean input's circuit run whose patches are `patches` ([sources, T, C])."""
        base = self.model
        cw = circuit_weights(base, len(clean))
        params = dict(cw.params)
        params.update((patch_name(s), patches[k]) for k, s in enumerate(self.components.sources))
        return Cells(Weights(base.config, params, base.tokenizer, cw.graph), clean, exact=self._exact_arg)

    def _set_up_stacked(self, metric: str) -> None:
        """Every pair of one length and metric position as one stacked run: the corrupted inputs' forward
        gives the patches, the clean inputs' forward the state edge tests start from."""
        base, comps = self.model, self.components
        sheets = [Cells(base, clean) for clean, _ in self.tokens]  # the metric's names and positions
        probes = [_At(s, np.zeros(base.config.vocab_size)) for s in sheets]
        first = [parse_metric(metric, p) for p in probes]  # type: ignore[arg-type]  # positions and tokens
        groups: dict[tuple[int, int], list[int]] = {}
        for i, m in enumerate(first):
            groups.setdefault((len(self.tokens[i][0]), m.position or 0), []).append(i)
        self.metrics = list(first)
        self._groups = []
        cleans, corrupts = np.zeros(len(self.tokens)), np.zeros(len(self.tokens))
        for (T, t), idx in groups.items():
            cw = circuit_weights(base, T)
            m0 = first[idx[0]]
            cols = m0.tokens if m0.kind in ("logit", "logit_diff") else None
            st = Stacked(cw.graph, cw.params, comps, t, T, cols)
            zero = switches_of(comps, np.zeros(len(comps)))
            S, C = len(comps.sources), base.config.n_embd
            bad_tok = np.array([self.tokens[i][1] for i in idx])  # [P, T]
            dtype = np.dtype(base.config.dtype)
            Vb = st.forward(bad_tok, np.zeros((S, len(idx), T, C), dtype), zero)
            patches = np.stack([Vb[own_name(s)] for s in comps.sources])  # [S, P, T, C]
            Vc = st.forward(np.array([self.tokens[i][0] for i in idx]), patches, zero)
            st.start(Vc, patches, zero)
            self._groups.append((st, idx))
            for j, i in enumerate(idx):
                if first[i].kind == "kl":  # the clean distribution is the circuit run's own
                    self.metrics[i] = parse_metric(metric, _At(sheets[i], Vc["logit"][j]))  # type: ignore[arg-type]
                f = self.metrics[i].of_row
                assert f is not None
                cleans[i], corrupts[i] = f(Vc["logit"][j]), f(Vb["logit"][j])
        self._sheets = sheets
        self.cleans, self.corrupts = [float(v) for v in cleans], [float(v) for v in corrupts]
        self.clean = float(np.mean(cleans))
        self.corrupted = float(np.mean(corrupts))

    @property
    def cells(self) -> list[Cells]:
        """Each pair's clean input on its circuit sheet, patched from its corrupted run (on the fast path
        made on first use: edge tests and EAP never need them)."""
        if self._cells is None:
            cells = []
            for clean, corrupted in self.tokens:
                bad = CircuitSheet(self.model, corrupted, exact=self._exact_arg)
                cells.append(self._patched(clean, bad.contributions()))
            self._cells = cells
        return self._cells

    @property
    def is_stacked(self) -> bool:
        """Whether the pairs run stacked (fast mode and a spec metric) rather than on a circuit sheet each."""
        return self._groups is not None

    def stacked(self) -> list[Stacked]:
        """The stacked runs (fast path), one per (length, metric position), each at its current switches."""
        if self._groups is None:
            raise QueryError("these runs are per pair (exact mode or a callable metric): use replays().")
        return [st for st, _ in self._groups]

    def groups(self) -> list[tuple[Stacked, list[int]]]:
        """(stacked run, the pairs it holds) for each group (fast path)."""
        if self._groups is None:
            raise QueryError("these runs are per pair (exact mode or a callable metric): use replays().")
        return self._groups

    def __len__(self) -> int:
        return len(self.tokens)

    def replays(self) -> list[EdgeReplay]:
        """Each run's values copied once for edge tests (made on first use; a spec metric's position, and
        its logits alone when it reads a few: a logit or a logit difference)."""
        got = self.__dict__.get("_replays")
        if got is None:
            got = self.__dict__["_replays"] = [
                EdgeReplay(c, m.position or 0, m.tokens if m.kind in ("logit", "logit_diff") else None)
                for c, m in zip(self.cells, self.metrics)]
        return got

    def measure(self) -> float:
        """The metric's mean over the pairs, with the switches as they are."""
        return float(np.mean([m(c) for m, c in zip(self.metrics, self.cells)]))

    def set(self, index: int, value: float) -> None:
        """Switch one edge in every run: its destination's cone is all the next read recomputes."""
        e = self.components.edges[index]
        name = switch_name(e.dest)
        for c in self.cells:
            c.engine.write(name, (e.slot,), value)  # private sheets: no receipt, so no stale marks to keep

    def set_all(self, switches: np.ndarray) -> None:
        """Every switch at once ([edges]); destinations whose switches do not change are left as they are."""
        comps = self.components
        for d in comps.dests:
            i = comps.first[d]
            want = switches[i : i + len(comps.reads[d])]
            name = switch_name(d)
            for c in self.cells:
                if not np.array_equal(c.engine.values[name], want):
                    c.engine.write(name, (slice(None),), want)  # type: ignore[arg-type]  # a whole row: numpy indexing

    def keep_only(self, kept: Sequence[int]) -> None:
        """Every edge but `kept` (indices) patched from the corrupted runs."""
        s = np.ones(len(self.components))
        s[list(kept)] = 0.0
        self.set_all(s)

    def gradient(self, alpha: float = 0.0) -> np.ndarray:
        """∂metric/∂switch of every edge, [edges], mean over the pairs, with every switch at `alpha`:
        one batched forward and backward per block of pairs (`blocks`, `block_gradient`), the blocks'
        sums added in their order; equal to `gradient_by_autodiff` up to the rounding of sums taken in
        another order. A distributed EAP adds the same blocks' sums in the same order: the same bits."""
        total = np.zeros(len(self.components))
        for idx in self.blocks():
            total += self.block_gradient(idx, alpha)
        return total / len(self.tokens)

    def blocks(self) -> list[list[int]]:
        """The pairs (indices) in blocks of at most `BLOCK` of one length and metric position, in order of
        each group's first pair: the unit of one batched sweep, and of a distributed EAP's work."""
        groups: dict[tuple[int, int], list[int]] = {}  # (length, metric position) -> pairs
        for i, ((clean, _), m) in enumerate(zip(self.tokens, self.metrics)):
            groups.setdefault((len(clean), m.position or 0), []).append(i)
        return [idx[b : b + BLOCK] for idx in groups.values() for b in range(0, len(idx), BLOCK)]

    def block_gradient(self, idx: list[int], alpha: float) -> np.ndarray:
        """The switch gradient summed over one block's pairs (`blocks`), [edges]: one `SwitchGradient`
        (on the fast path from the stacked runs' patches, no circuit sheet made)."""
        comps = self.components
        sweeps = self.__dict__.setdefault("_sweeps", {})
        tokens = np.array([self.tokens[i][0] for i in idx])  # [B, T]
        if self._groups is not None:
            st, members = next((st, m) for st, m in self._groups if idx[0] in m)
            assert st.patches is not None
            at = [members.index(i) for i in idx]
            sweep = sweeps.get((st.T, st.t))
            if sweep is None:
                sweep = sweeps[(st.T, st.t)] = SwitchGradient(st.graph, st.params, comps, st.t)
            patches = st.patches[:, at]  # [S, B, T, C]
            sheets = self._sheets
        else:
            first = self.cells[idx[0]]
            T, t = first.T, self.metrics[idx[0]].position or 0
            out = first.graph.ops["logit"]
            if not isinstance(out, Linear) or out.stride or out.heads:  # another output head: the autodiff
                total = np.zeros(len(comps))
                for i in idx:
                    total += self.pair_gradient(i, alpha)
                return total
            sweep = sweeps.get((T, t))
            if sweep is None:
                sweep = sweeps[(T, t)] = SwitchGradient(first.graph, first.model.params, comps, t)
            patches = np.stack([np.stack([self.cells[i].engine.values[patch_name(s)] for i in idx])
                                for s in comps.sources])  # [S, B, T, C]
            sheets = self.cells

        def dlogit(b: int, row: np.ndarray) -> tuple[int, np.ndarray]:
            i = idx[b]
            return self.metrics[i].dlogit(_At(sheets[i], row))  # type: ignore[arg-type]

        return sweep(tokens, patches, alpha, dlogit)  # type: ignore[no-any-return]

    def gradient_by_autodiff(self, alpha: float = 0.0) -> np.ndarray:
        """`gradient` by the model's autodiff on the circuit graph, one pair at a time (the slow
        reference the batched sweep is checked against)."""
        return np.sum([self.pair_gradient(i, alpha) for i in range(len(self.cells))], axis=0) / len(self.cells)

    def pair_gradient(self, i: int, alpha: float) -> np.ndarray:
        """One pair's switch gradient by the autodiff in core: one forward and one backward, [edges]."""
        comps = self.components
        cells, m = self.cells[i], self.metrics[i]
        g = cells.graph
        params = {n: cells.engine.values[n] for n in g.parameters}
        for d in comps.dests:
            params[switch_name(d)] = np.full(len(comps.reads[d]), alpha, cells.engine.dtype)
        V = forward(g, params, np.asarray(cells.tokens)[None], until="logit")
        # The metric's gradient at this point of the path (its logit row from this forward).
        t, dz = m.dlogit(_At(cells, V["logit"][0, m.position or 0]))  # type: ignore[arg-type]
        seed = np.zeros_like(V["logit"])  # [1, T, V]
        seed[0, t] = dz
        G = backward(g, V, {"logit": seed})
        return np.concatenate([G.get(switch_name(d), np.zeros(len(comps.reads[d]))) for d in comps.dests])
