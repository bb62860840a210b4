"""Circuit discovery over a dataset of (clean, corrupted) pairs: EAP, EAP-IG and ACDC, each giving a `Circuit`.

- `eap`: edge attribution patching (Syed et al. 2023): each edge's score is the gradient of the
  metric with respect to its switch at the clean run, (corrupted − clean contribution) ·
  ∂metric/∂destination input, averaged over the pairs: one backward per pair.
- `eap_ig`: the same gradient averaged over `steps` points of the path where every switch goes
  from 0 to 1 together (the midpoint rule; Hanna et al. 2024): the scores sum to the metric's
  change from the clean to the corrupted run, up to the quadrature error.
- `acdc` (Conmy et al. 2023): from the clean run, destinations in reverse topological order, each
  one's edges in reverse order: patch the edge from the corrupted run, and keep it patched (the
  edge leaves the circuit) when the distance to the clean run grows by less than `threshold`.
  The distance is the metric itself for `kl` (KL divergence from the clean distribution), else
  |metric − clean metric|. Each test recomputes only the destination's cone.

The caller's sheets and model are only read: discovery runs on private copies (`Runs`), so
whatever interrupts it leaves every sheet as it was.

>>> import dfgpt
>>> pairs = [("CABACAAAA", "CACACAAAA")]
>>> c = acdc(dfgpt.load("sort"), pairs, "kl", threshold=0.01)
>>> c.kept[:2]
['emb -> h[0].head[1].v', 'h[0].head[1] -> h[0].mlp']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import QueryError
from ..interventions.metrics import Metric
from ..models.weights import Weights
from .circuit import Circuit
from .circuit_graph import input_name, switch_name
from .runs import Pair, Runs
from .stacked import switches_of

__all__ = ["acdc", "eap", "eap_ig", "evaluate", "evaluate_each"]

MetricLike = str | Callable[[Any], float] | Metric


def eap(model: Weights, pairs: Sequence[Pair], metric: MetricLike, top: int | None = None,
        threshold: float | None = None, exact: bool | None = None) -> Circuit:
    """Edge attribution patching: every edge scored in one backward per pair; the circuit is the
    `top` edges by |score| (20 by default), or those with |score| ≥ `threshold`."""
    runs = Runs(model, pairs, metric, exact)
    scores = runs.gradient(0.0)
    return _ranked(runs, "eap", scores, top, threshold, {})


def eap_ig(model: Weights, pairs: Sequence[Pair], metric: MetricLike, steps: int = 5, top: int | None = None,
           threshold: float | None = None, exact: bool | None = None) -> Circuit:
    """EAP with integrated gradients: the switch gradient averaged over `steps` points between the
    clean (0) and the corrupted (1) run, every switch together."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise QueryError(f"steps must be an integer >= 1 (points on the path from clean to corrupted), got {steps!r}.")
    runs = Runs(model, pairs, metric, exact)
    scores = np.mean([runs.gradient((j + 0.5) / steps) for j in range(steps)], axis=0)
    return _ranked(runs, "eap-ig", scores, top, threshold, {"steps": steps})


def _ranked(runs: Runs, method: str, scores: np.ndarray, top: int | None, threshold: float | None,
            extra: dict[str, Any]) -> Circuit:
    order = np.argsort(-np.abs(scores), kind="stable")
    if threshold is not None:
        if not isinstance(threshold, (int, float)) or not np.isfinite(threshold):
            raise QueryError(f"threshold must be a finite number, got {threshold!r}.")
        kept = [int(i) for i in order if abs(scores[i]) >= threshold]
    else:
        n = 20 if top is None else top
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise QueryError(f"top must be an integer >= 0 (edges to keep), got {top!r}.")
        kept = [int(i) for i in order[:n]]
    return _circuit(runs, method, scores, kept, [int(i) for i in order],
                    {"top": top, "threshold": threshold, **extra})


def acdc(model: Weights, pairs: Sequence[Pair], metric: MetricLike, threshold: float = 0.1,
         exact: bool | None = None) -> Circuit:
    """ACDC: greedy, destinations in reverse topological order; an edge leaves the circuit when patching
    it from the corrupted run moves the distance to the clean run by less than `threshold`.
    Each edge's score is that change (at its test)."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not np.isfinite(threshold):
        raise QueryError(f"threshold must be a finite number, got {threshold!r}.")
    runs = Runs(model, pairs, metric, exact)
    comps = runs.components
    scores = np.zeros(len(comps))
    removed: list[int] = []
    if runs.is_stacked:  # the fast path: every pair stacked, one update per edge
        groups = runs.groups()
        rows = [m.of_row for m in runs.metrics]
        P = len(runs)

        def distance_of(logits: list[np.ndarray]) -> float:
            total = 0.0
            for (_, idx), z in zip(groups, logits):
                for j, i in enumerate(idx):
                    total += rows[i](z[j])  # type: ignore[misc]
            v = total / P
            return v if runs.kl else abs(v - runs.clean)

        current = distance_of([st.logits() for st, _ in groups])
        for dest in reversed(comps.dests):
            n = input_name(dest)
            for e in reversed(comps.into(dest)):
                got = []
                for st, _ in groups:
                    s = st.switches[n].copy()
                    s[e.slot] = 1.0
                    got.append(st.update({dest: s}))
                new = distance_of(got)
                scores[e.index] = new - current
                if new - current < threshold:
                    current = new
                    removed.append(e.index)
                    for st, _ in groups:
                        st.keep()
                else:
                    for st, _ in groups:
                        st.revert()
    elif all(m.of_row is not None for m in runs.metrics):
        reps = runs.replays()
        rows = [m.of_row for m in runs.metrics]

        def distance_of(values: list[float]) -> float:  # type: ignore[misc]
            v = float(np.mean(values))
            return v if runs.kl else abs(v - runs.clean)

        current = distance_of([f(r.values["logit"][r.t]) for f, r in zip(rows, reps)])  # type: ignore[misc]
        for dest in reversed(comps.dests):
            for e in reversed(comps.into(dest)):
                new = distance_of([f(r.try_edge(e, 1.0)) for f, r in zip(rows, reps)])  # type: ignore[misc]
                scores[e.index] = new - current
                if new - current < threshold:
                    current = new
                    removed.append(e.index)
                    for r in reps:
                        r.keep()
                else:
                    for r in reps:
                        r.revert()
    else:  # a callable metric reads a sheet: the engine's incremental reads
        def distance() -> float:
            v = runs.measure()
            return v if runs.kl else abs(v - runs.clean)

        current = distance()
        for dest in reversed(comps.dests):
            for e in reversed(comps.into(dest)):
                runs.set(e.index, 1.0)
                new = distance()
                scores[e.index] = new - current
                if new - current < threshold:
                    current = new
                    removed.append(e.index)
                else:
                    runs.set(e.index, 0.0)
    gone = set(removed)
    kept = [e.index for e in comps.edges if e.index not in gone]
    order = sorted(range(len(comps)), key=lambda i: -scores[i])
    return _circuit(runs, "acdc", scores, kept, order, {"threshold": threshold})


def evaluate(runs: Runs, kept: Sequence[int]) -> float:
    """The metric's mean over the pairs with only `kept` edges (indices) from the clean runs,
    every other edge patched from the corrupted runs."""
    return float(np.mean(evaluate_each(runs, kept)))


def evaluate_each(runs: Runs, kept: Sequence[int]) -> list[float]:
    """Each pair's metric with only `kept` edges (`evaluate` is their mean; a distributed discovery
    takes it over the pairs of every worker)."""
    s = np.ones(len(runs.components))
    s[list(kept)] = 0.0
    if runs.is_stacked:  # the fast path: one stacked forward per group, the state left alone
        each = [0.0] * len(runs)
        sw = switches_of(runs.components, s)
        for st, idx in runs.groups():
            assert st.patches is not None
            tokens = np.array([runs.tokens[i][0] for i in idx])
            z = st.forward(tokens, st.patches, sw)["logit"]  # [P, V]
            for j, i in enumerate(idx):
                each[i] = float(runs.metrics[i].of_row(z[j]))  # type: ignore[misc]
        return each
    if all(m.of_row is not None for m in runs.metrics):
        reps = runs.replays()
        comps = runs.components
        sw = {switch_name(d): s[comps.first[d] : comps.first[d] + len(comps.reads[d])] for d in comps.dests}
        return [m.of_row(r.evaluate(sw)) for m, r in zip(runs.metrics, reps)]  # type: ignore[misc]
    runs.set_all(s)
    return [m(c) for m, c in zip(runs.metrics, runs.cells)]


def _circuit(runs: Runs, method: str, scores: np.ndarray, kept: list[int], order: list[int],
             params: dict[str, Any]) -> Circuit:
    """The Circuit: kept edges and their scores, the metric with only them, and the curve of the
    metric against the number of edges kept (the best-ranked first)."""
    E = len(runs.components)
    ks = sorted({0, E, len(kept), *[min(E, 2**i) for i in range(E.bit_length() + 1)]})
    remote = getattr(runs, "evaluate_curve", None)  # a discovery on Dask evaluates on its workers
    if remote is not None:
        points, value = remote(order, ks, kept)
    else:
        points = [evaluate(runs, order[:k]) for k in ks]
        value = evaluate(runs, kept)
    curve = list(zip(ks, points))
    names = [e.name for e in runs.components.edges]
    return Circuit(
        method=method, metric=runs.name, pairs=len(runs), edges=names, scores=[float(x) for x in scores],
        kept=[names[i] for i in kept], clean=runs.clean, corrupted=runs.corrupted,
        value=value, curve=curve, params={k: v for k, v in params.items() if v is not None},
    )
