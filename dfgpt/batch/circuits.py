"""Circuit discovery over a dataset of pairs, in this process or on Dask: `dfgpt.eap`, `dfgpt.eap_ig`, `dfgpt.acdc`.

The in-process runs are `dfgpt.circuits.discovery`'s; `scheduler=` runs them on a Dask cluster,
with the same values, bit for bit, in the same order:

- EAP and EAP-IG: the pairs' blocks (`Runs.blocks`: at most 8 pairs of one length, the unit of one
  batched switch-gradient sweep) run on the workers, each returning its block's gradient sum at each
  point of the path and its pairs' clean and corrupted metrics; this process adds the sums in block
  order, as `Runs.gradient` does. Then each chunk of pairs returns its pairs' metric with each set of
  kept edges (the curve, the circuit), and this process takes their means in pair order, as
  `discovery.evaluate` does.
- ACDC is sequential over edges. Each worker holds a slice of the pairs (its replays, in the worker's
  cache); per edge one task per slice returns its pairs' metric with the edge patched, this process
  decides as `discovery.acdc` does, and the next task carries the decision. A round trip costs a few
  ms per edge, so ACDC pays on a cluster only when an edge's test over the pairs costs much more
  than that (GPT-2 scale, many pairs); `scheduler=None` estimates it from the first pair and stays
  in process otherwise. A task names how many edges were tried and removed before it; a slice whose
  worker died is rebuilt on another by replaying the removals (a reverted try leaves nothing), so a
  killed worker loses nothing.

Where (`scheduler`, as `sweep_pairs`): None or "auto" runs in process unless the estimated work pays
for an embedded local cluster's start-up; "inline" in process; "local" the embedded cluster; an
address or a `dask.distributed.Client` an existing one. A callable metric, or a model built in
memory, stays in process (a worker loads the model by name or path; ACDC on a cluster reads a spec).

>>> import dfgpt
>>> c = eap(dfgpt.load("sort"), [("CABACAAAA", "CACACAAAA"), ("CBBACAAAA", "CCBACAAAA")], "logit_diff:B,C", top=3)
>>> c.kept
['h[1].mlp -> logits', 'h[0].mlp -> logits', 'h[2].mlp -> logits']
>>> c.ran_on
'this process (2 pairs: one block of at most 8, one task)'
>>> c == eap(dfgpt.load("sort"), [("CABACAAAA", "CACACAAAA"), ("CBBACAAAA", "CCBACAAAA")], "logit_diff:B,C", top=3,
...          scheduler="inline")
True
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..cells import Cells
from ..circuits import discovery
from ..circuits.circuit import Circuit
from ..circuits.components import Components
from ..circuits.runs import BLOCK, Pair, Runs
from ..core.blas import one_blas_thread
from ..errors import ClusterError, QueryError
from ..interventions.metrics import Metric, parse_metric
from ..model import Model
from .cluster import (
    _LOCK,
    AUTO,
    CLUSTER_START,
    _client,
    _workers,
    check_run,
    cores,
    describe,
    progress_default,
    where,
    why_here,
)
from .plan import Plan, checkpoint, fingerprint
from .worker import CACHE, forget, model_of, young_only

__all__ = ["ROUND_TRIP", "acdc", "eap", "eap_ig"]

MetricLike = str | Callable[[Any], float] | Metric
# What one ACDC edge costs in round trips on a cluster: a task per slice submitted and gathered.
# Measured on this 2-core machine with 2 local workers, shared at load 9-14: 19-85 ms a step
# (benchmarks/bench_circuits_dask.py); an idle machine does better, so this is a middle value.
ROUND_TRIP = 0.02
REBUILD = "rebuild"  # a worker's answer when it no longer holds its slice: send the removals again


# -- the plan ----------------------------------------------------------------------------------
def _plan(model: Model, pairs: Sequence[Pair], metric: MetricLike) -> Plan:
    """The discovery as a `Plan` a worker can run: the model by name or path, the pairs as ids (of any length)."""
    if isinstance(metric, Metric):
        metric = metric.fn if metric.kind is None else metric.name
    tokens = tuple((tuple(_ids(model, a)), tuple(_ids(model, b))) for a, b in pairs)
    name, dtype = model.source or ("", None)
    return Plan(name, dtype, tokens, metric, "circuit", checkpoint=checkpoint(name, dtype),
                weights=fingerprint(model) if name else "", local=model)


def _ids(model: Model, x: Any) -> list[int]:
    return list(x.tokens) if isinstance(x, Cells) else model.encode(x)


@dataclass
class _Remote:
    """What `discovery`'s circuit needs of its runs, gathered from the workers: the components, the
    metric's name, the pairs' clean and corrupted means, and `evaluate_curve` on the cluster."""

    components: Components
    name: str
    n: int
    clean: float
    corrupted: float
    evaluate_curve: Callable[..., tuple[list[float], float]]

    def __len__(self) -> int:
        return self.n


# -- on a worker -------------------------------------------------------------------------------
def _runs(plan: Plan, idx: Sequence[int], exact: bool | None) -> Runs:
    return Runs(model_of(plan), [plan.pairs[i] for i in idx], plan.metric, exact)


def _gradients(plan: Plan, blocks: list[list[int]], alphas: list[float], exact: bool | None) -> list[Any]:
    """Per block: its gradient sum at each alpha, and its pairs' clean and corrupted metrics."""
    out = []
    with _LOCK, one_blas_thread(), young_only():
        for idx in blocks:
            runs = _runs(plan, idx, exact)
            sums = [runs.block_gradient(list(range(len(idx))), a) for a in alphas]
            out.append((sums, runs.cleans, runs.corrupts, runs.name))
    return out


def _evaluations(plan: Plan, idx: list[int], order: np.ndarray, ks: list[int], kept: np.ndarray,
                 exact: bool | None) -> list[list[float]]:
    """Per set of kept edges (the `ks` best of `order`, then `kept`): each pair's metric."""
    with _LOCK, one_blas_thread(), young_only():
        runs = _runs(plan, idx, exact)
        sets = [order[:k].tolist() for k in ks] + [kept.tolist()]
        return [discovery.evaluate_each(runs, s) for s in sets]


def _acdc_step(plan: Plan, part: int, idx: list[int], tried: int, n_removed: int, edge: int | None,
               removed: np.ndarray | None, exact: bool | None) -> Any:
    """One ACDC edge test on one slice of the pairs: settle the previous try (kept when the removals grew
    by it), then patch `edge` and return each pair's metric. Without the slice in this worker's cache
    (another worker, or a new one) it is made again from `removed`, or `REBUILD` is answered."""
    key = ("acdc", part, plan.token)
    with _LOCK, one_blas_thread(), young_only():
        st = CACHE.get(key)
        if st is not None and st["tried"] == tried and n_removed in (st["removed"], st["removed"] + 1):
            if st["pending"] is not None:
                for r in st["reps"]:
                    if n_removed == st["removed"] + 1:
                        r.keep()
                    else:
                        r.revert()
        elif removed is None and n_removed:
            return REBUILD
        else:
            runs = _runs(plan, idx, exact)
            reps = runs.replays()
            for e in [] if removed is None else removed.tolist():
                for r in reps:
                    r.try_edge(runs.components.edges[e], 1.0)
                    r.keep()
            st = CACHE.put(key, {"runs": runs, "reps": reps, "rows": [m.of_row for m in runs.metrics]})
        st.update(tried=tried + (edge is not None), removed=n_removed, pending=edge)
        runs, reps, rows = st["runs"], st["reps"], st["rows"]
        if edge is None:  # the start: each pair's metric with no edge patched, and its two ends
            return ([f(r.values["logit"][r.t]) for f, r in zip(rows, reps)], runs.cleans, runs.corrupts, runs.name,
                    runs.kl)
        e = runs.components.edges[edge]
        return [f(r.try_edge(e, 1.0)) for f, r in zip(rows, reps)]


# -- in this process or on the cluster ----------------------------------------------------------
class _Cluster:
    """A client for one discovery: its workers, a progress bar, and tasks gathered in order."""

    def __init__(self, plan: Plan, scheduler: Any, workers: int | None, progress: bool | None, retries: int,
                 say: str) -> None:
        self.shipped = plan.shipped()  # refuses a model with no name or path before starting anything
        self.client, self.cluster, self.own = _client(scheduler, workers)
        try:
            self.addresses = _workers(self.client)
        except BaseException:
            self.close()
            raise
        self.ran_on = describe(self.client, self.cluster, len(self.addresses)) + say
        self.retries, self.progress, self.token = retries, progress, plan.token
        self.futures: dict[str, Any] = {}  # by key: the tasks not gathered yet (an interrupt cancels them)

    def submit(self, fn: Callable[..., Any], *args: Any, at: int = 0) -> Any:
        f = self.client.submit(fn, self.shipped, *args, retries=self.retries, pure=False,
                               workers=[self.addresses[at % len(self.addresses)]], allow_other_workers=True)
        self.futures[f.key] = f
        return f

    def gather(self, futures: list[Any]) -> list[Any]:
        try:
            got = self.client.gather(futures)
        except BaseException:
            self.client.cancel(list(self.futures.values()))  # Ctrl-C, or a task that failed every retry
            raise
        for f in futures:
            self.futures.pop(f.key, None)
            f.release()
        return list(got)

    def bar(self, total: int, what: str) -> Any:
        return tqdm(total=total, unit="task", desc=f"{what} on {self.ran_on}",
                    disable=not progress_default(self.progress))

    def close(self) -> None:
        try:
            self.client.run(forget, self.token)
        except Exception:
            pass
        if self.own:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _gradient_remote(c: _Cluster, plan: Plan, blocks: list[list[int]], alphas: list[float],
                     exact: bool | None) -> tuple[list[np.ndarray], list[float], list[float], str]:
    """Every block on the cluster (a task per block), its sums added in block order per alpha."""
    futures = [c.submit(_gradients, [idx], alphas, exact, at=i * len(c.addresses) // len(blocks))
               for i, idx in enumerate(blocks)]
    E = len(Components(model_of(plan).config))
    totals = [np.zeros(E) for _ in alphas]
    cleans: list[float] = [0.0] * len(plan.pairs)
    corrupts = list(cleans)
    name = ""
    with c.bar(len(blocks), "gradients") as bar:
        for idx, f in zip(blocks, futures):
            [(sums, cl, co, name)] = c.gather([f])[0]
            for t, s in zip(totals, sums):
                t += s
            for j, i in enumerate(idx):
                cleans[i], corrupts[i] = cl[j], co[j]
            bar.update(1)
    return [t / len(plan.pairs) for t in totals], cleans, corrupts, name


def _curve_remote(c: _Cluster, plan: Plan, exact: bool | None) -> Callable[..., tuple[list[float], float]]:
    """`evaluate_curve` on the cluster: each chunk of pairs returns each pair's metric per set of kept
    edges; the means are taken here in pair order, as `discovery.evaluate` takes them."""
    def curve(order: Sequence[int], ks: list[int], kept: Sequence[int]) -> tuple[list[float], float]:
        n = len(plan.pairs)
        parts = max(1, min(n, 2 * len(c.addresses)))
        cuts = [n * k // parts for k in range(parts + 1)]
        o, kk = np.asarray(order, np.int64), np.asarray(kept, np.int64)
        futures = [c.submit(_evaluations, list(range(a, b)), o, ks, kk, exact, at=i)
                   for i, (a, b) in enumerate(itertools.pairwise(cuts)) if b > a]
        per: list[list[list[float]]] = []
        with c.bar(len(futures), "the curve") as bar:
            for f in futures:
                per += c.gather([f])
                bar.update(1)
        means = [float(np.mean([v for chunk in per for v in chunk[j]])) for j in range(len(ks) + 1)]
        return means[:-1], means[-1]

    return curve


def _acdc_remote(c: _Cluster, plan: Plan, threshold: float, exact: bool | None) -> Circuit:
    """ACDC with each worker holding a slice of the pairs (see the module), decided here as in process."""
    n, W = len(plan.pairs), len(c.addresses)
    parts = min(n, W)
    slices = [list(range(n * k // parts, n * (k + 1) // parts)) for k in range(parts)]
    comps = Components(model_of(plan).config)
    removed: list[int] = []

    def step(tried: int, edge: int | None) -> list[Any]:
        futures = [c.submit(_acdc_step, k, idx, tried, len(removed), edge, None, exact, at=k)
                   for k, idx in enumerate(slices)]
        got = c.gather(futures)
        for k, idx in enumerate(slices):
            if isinstance(got[k], str) and got[k] == REBUILD:  # its worker died: made again from the removals
                again = c.submit(_acdc_step, k, idx, tried, len(removed), edge, np.asarray(removed, np.int64),
                                 exact, at=k + 1)
                got[k] = c.gather([again])[0]
        return got

    start = step(0, None)
    values0 = [v for s in start for v in s[0]]
    cleans = [v for s in start for v in s[1]]
    corrupts = [v for s in start for v in s[2]]
    clean, kl = float(np.mean(cleans)), start[0][4]

    def distance_of(values: list[float]) -> float:
        v = float(np.mean(values))
        return v if kl else abs(v - clean)

    scores = np.zeros(len(comps))
    current = distance_of(values0)
    tried = 0
    with c.bar(len(comps), "acdc") as bar:
        for dest in reversed(comps.dests):
            for e in reversed(comps.into(dest)):
                new = distance_of([v for s in step(tried, e.index) for v in s])
                tried += 1
                scores[e.index] = new - current
                if new - current < threshold:
                    current = new
                    removed.append(e.index)
                bar.update(1)
    gone = set(removed)
    kept = [e.index for e in comps.edges if e.index not in gone]
    order = sorted(range(len(comps)), key=lambda i: -scores[i])
    runs = _Remote(comps, start[0][3], n, clean, float(np.mean(corrupts)), _curve_remote(c, plan, exact))
    return discovery._circuit(runs, "acdc", scores, kept, order, {"threshold": threshold})  # type: ignore[arg-type]


# -- the façade --------------------------------------------------------------------------------
def _where(model: Any, pairs: Any, metric: Any, scheduler: Any, workers: Any, retries: Any) -> tuple[Any, str]:
    """(where it runs: None in process, AUTO to estimate, else a scheduler; why it runs here)."""
    check_run(scheduler, workers, None, retries)
    n = len(pairs) if isinstance(pairs, Sequence) and not isinstance(pairs, (str, bytes)) else 0
    spec = isinstance(metric, str) or (isinstance(metric, Metric) and metric.kind is not None)
    shippable = isinstance(model, Model) and bool(model.source)
    at = where(scheduler, workers, n, shippable and spec)
    if at is not None and at != AUTO and not spec:
        raise ClusterError("discovery on a cluster reads a metric spec ('logit_diff:A,C', 'kl', ...), not a Python "
                           "callable: give a spec, or run it in this process (scheduler='inline').")
    if at is None and shippable and not spec and n > 1 and scheduler is None:
        return None, " (a Python metric: a cluster reads a spec)"
    return at, ("" if at is not None else why_here(scheduler, n, shippable))


def _estimate(model: Model, pairs: Sequence[Pair], metric: MetricLike, exact: bool | None, alphas: int,
              acdc_edges: bool) -> float:
    """Seconds the discovery would take in process, from the first pair's run (a small part of the work)."""
    t0 = time.perf_counter()
    first = Runs(model, list(pairs[:1]), metric, exact)
    per_pair = time.perf_counter() - t0
    if acdc_edges:  # a few edge tests on the first pair, tried and reverted
        reps = first.replays()
        edges = first.components.edges[-16:]
        t0 = time.perf_counter()
        for e in edges:
            reps[0].try_edge(e, 1.0)
            reps[0].revert()
        per_edge = (time.perf_counter() - t0) / len(edges)
        return per_pair * len(pairs) + per_edge * len(pairs) * len(first.components)
    t0 = time.perf_counter()
    first.block_gradient([0], 0.0)
    grad = time.perf_counter() - t0
    return len(pairs) * (per_pair + alphas * grad + 15 * per_pair / 2)  # the runs, the gradients, the curve


def _pays(seconds: float, acdc_edges: int = 0) -> bool:
    """Whether W local workers save more than the cluster's start-up (and ACDC's round trips) cost."""
    W = cores()
    saved = seconds * (W - 1) / W - acdc_edges * ROUND_TRIP
    return saved > CLUSTER_START


def _discover(kind: str, model: Any, pairs: Any, metric: MetricLike, run_here: Callable[[], Circuit],
              exact: bool | None, scheduler: Any, workers: int | None, progress: bool | None, retries: int,
              alphas: list[float], finish: Callable[[Any, np.ndarray], Circuit] | None,
              threshold: float = 0.0) -> Circuit:
    at, why = _where(model, pairs, metric, scheduler, workers, retries)
    if at == AUTO and kind != "acdc" and len(pairs) <= BLOCK:
        at, why = None, f" ({len(pairs)} pairs: one block of at most {BLOCK}, one task)"
    if at == AUTO:
        edges = len(Components(model.config)) if kind == "acdc" else 0
        secs = _estimate(model, pairs, metric, exact, len(alphas), kind == "acdc")
        if _pays(secs, edges):
            at = "local"
        else:
            at, why = None, (f" (about {secs:.1f} s of work: a local cluster would not pay for its "
                             f"{CLUSTER_START:g} s start-up" + (" and its round trips per edge" if edges else "") + ")")
    if at is None:
        circuit = run_here()
        return replace(circuit, ran_on="this process" + why)
    plan = _plan(model, pairs, metric)
    c = _Cluster(plan, at, workers, progress, retries, "")
    try:
        if kind == "acdc":
            circuit = _acdc_remote(c, plan, threshold, exact)
        else:
            grads, cleans, corrupts, name = _gradient_remote(c, plan, _blocks(model, plan, metric), alphas, exact)
            remote = _Remote(Components(model.config), name, len(plan.pairs), float(np.mean(cleans)),
                             float(np.mean(corrupts)), _curve_remote(c, plan, exact))
            assert finish is not None
            circuit = finish(remote, np.mean(grads, axis=0) if len(grads) > 1 else grads[0])
    finally:
        c.close()
    return replace(circuit, ran_on=c.ran_on)


def _blocks(model: Model, plan: Plan, metric: MetricLike) -> list[list[int]]:
    """`Runs.blocks` of the plan's pairs, without making their runs: by length and metric position."""
    groups: dict[tuple[int, int], list[int]] = {}
    positions: dict[int, int] = {}
    for i, (a, _) in enumerate(plan.pairs):
        T = len(a)
        if T not in positions:
            positions[T] = parse_metric(metric, model.sheet(list(a))).position or 0
        groups.setdefault((T, positions[T]), []).append(i)
    return [idx[b : b + BLOCK] for idx in groups.values() for b in range(0, len(idx), BLOCK)]


def eap(model: Model, pairs: Sequence[Pair], metric: MetricLike, top: int | None = None,
        threshold: float | None = None, exact: bool | None = None, *, scheduler: Any = None,
        workers: int | None = None, progress: bool | None = None, retries: int = 2) -> Circuit:
    """`discovery.eap` over the pairs, in process or on Dask (see the module); the circuit says where (`ran_on`)."""
    def finish(runs: Any, scores: np.ndarray) -> Circuit:
        return discovery._ranked(runs, "eap", scores, top, threshold, {})

    return _discover("eap", model, pairs, metric, lambda: discovery.eap(model, pairs, metric, top, threshold, exact),
                     exact, scheduler, workers, progress, retries, [0.0], finish)


def eap_ig(model: Model, pairs: Sequence[Pair], metric: MetricLike, steps: int = 5, top: int | None = None,
           threshold: float | None = None, exact: bool | None = None, *, scheduler: Any = None,
           workers: int | None = None, progress: bool | None = None, retries: int = 2) -> Circuit:
    """`discovery.eap_ig` over the pairs, in process or on Dask (see the module)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise QueryError(f"steps must be an integer >= 1 (points on the path from clean to corrupted), got {steps!r}.")

    def finish(runs: Any, scores: np.ndarray) -> Circuit:
        return discovery._ranked(runs, "eap-ig", scores, top, threshold, {"steps": steps})

    return _discover("eap-ig", model, pairs, metric,
                     lambda: discovery.eap_ig(model, pairs, metric, steps, top, threshold, exact),
                     exact, scheduler, workers, progress, retries, [(j + 0.5) / steps for j in range(steps)], finish)


def acdc(model: Model, pairs: Sequence[Pair], metric: MetricLike, threshold: float = 0.1,
         exact: bool | None = None, *, scheduler: Any = None, workers: int | None = None,
         progress: bool | None = None, retries: int = 2) -> Circuit:
    """`discovery.acdc` over the pairs, in process or on Dask (see the module)."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not np.isfinite(threshold):
        raise QueryError(f"threshold must be a finite number, got {threshold!r}.")
    return _discover("acdc", model, pairs, metric, lambda: discovery.acdc(model, pairs, metric, threshold, exact),
                     exact, scheduler, workers, progress, retries, [], None, threshold)

