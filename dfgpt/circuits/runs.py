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
from .circuit_graph import CircuitWeights, circuit_weights, patch_name, switch_name
from .circuit_sheet import CircuitSheet
from .components import Components
from .replay import EdgeReplay

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
        self.engine, self.config, self.row = cells.engine, cells.config, row

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
        self.cells: list[Cells] = []
        self.metrics: list[Metric] = []
        cleans, corrupts = [], []
        for i, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise QueryError(f"pair {i} must be (clean, corrupted), got {show(pair)}.")
            clean, corrupted = (_tokens(base, x) for x in pair)
            if len(clean) != len(corrupted):
                raise QueryError(f"pair {i}: the clean input has {len(clean)} positions and the corrupted one "
                                 f"{len(corrupted)}; edges carry every position, so a pair must have one length.")
            bad = CircuitSheet(base, corrupted, exact=exact)
            cw = circuit_weights(base, len(clean))
            patches = bad.contributions()  # [sources, T, C]
            params = dict(cw.params)
            params.update((patch_name(s), patches[k]) for k, s in enumerate(self.components.sources))
            cells = Cells(Weights(base.config, params, base.tokenizer, cw.graph), clean, exact=exact)
            m = parse_metric(metric, cells)
            self.cells.append(cells)
            self.metrics.append(m)
            cleans.append(m(cells))
            corrupts.append(m(bad))
        self.name = self.metrics[0].name
        self.kl = self.metrics[0].kind == "kl"
        self.cleans, self.corrupts = cleans, corrupts  # each pair's, for a distributed discovery's means
        self.clean = float(np.mean(cleans))
        self.corrupted = float(np.mean(corrupts))

    def __len__(self) -> int:
        return len(self.cells)

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
        return total / len(self.cells)

    def blocks(self) -> list[list[int]]:
        """The pairs (indices) in blocks of at most `BLOCK` of one length and metric position, in order of
        each group's first pair: the unit of one batched sweep, and of a distributed EAP's work."""
        groups: dict[tuple[int, int], list[int]] = {}  # (length, metric position) -> pairs
        for i, (cells, m) in enumerate(zip(self.cells, self.metrics)):
            groups.setdefault((cells.T, m.position or 0), []).append(i)
        return [idx[b : b + BLOCK] for idx in groups.values() for b in range(0, len(idx), BLOCK)]

    def block_gradient(self, idx: list[int], alpha: float) -> np.ndarray:
        """The switch gradient summed over one block's pairs (`blocks`), [edges]: one `SwitchGradient`."""
        comps = self.components
        first = self.cells[idx[0]]
        T, t = first.T, self.metrics[idx[0]].position or 0
        out = first.graph.ops["logit"]
        if not isinstance(out, Linear) or out.stride or out.heads:  # another output head: the autodiff
            total = np.zeros(len(comps))
            for i in idx:
                total += self.pair_gradient(i, alpha)
            return total
        sweeps = self.__dict__.setdefault("_sweeps", {})
        sweep = sweeps.get((T, t))
        if sweep is None:
            sweep = sweeps[(T, t)] = SwitchGradient(first.graph, first.model.params, comps, t)
        tokens = np.array([self.cells[i].tokens for i in idx])  # [B, T]
        patches = [np.stack([self.cells[i].engine.values[patch_name(s)] for i in idx])
                   for s in comps.sources]  # S × [B, T, C]

        def dlogit(b: int, row: np.ndarray) -> tuple[int, np.ndarray]:
            i = idx[b]
            return self.metrics[i].dlogit(_At(self.cells[i], row))  # type: ignore[arg-type]

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
