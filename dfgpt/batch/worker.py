"""A worker of a dataset sweep: `run_chunk(plan, items)`, with one cache of what chunks share.

`run_chunk` returns the metric of every site of the chunk, in the chunk's order, with each
touched pair's unpatched metrics, on one BLAS thread (the sums do not depend on the thread
count, and many processes share the cores), with the objects made before the chunk frozen
for the collector (`young_only`). The in-process sweep runs the same function over all the
items, so a distributed sweep gives the same values.

What consecutive chunks share lives in one `Cache` per process, with one eviction rule (the
least recently used entry goes once more than `KEEP` are held), keyed so that a stale entry is
never found:

- the model, by its checkpoint's identity (`plan.checkpoint`: its path with the size,
  modification time and inode of its files), so a checkpoint saved again at the same path is
  loaded again, and a client kept across sweeps sweeps the model on disk; a model whose
  weights are not the caller's (`plan.weights`: the file changed after the caller loaded it)
  is refused, not swept;
- a sweep's sites, by the checkpoint, length, family and positions when their masks are small
  (`KEPT_BYTES`: parsing a site's cells costs more than replaying it on a small model, and a
  process often runs many such sweeps), else by the sweep, with their per-site costs;
- each pair's runner (its sheets and replays, for the next chunk of the same pair) and a mean
  ablation's reference values, by the sweep.

>>> import dfgpt
>>> from dfgpt.batch.plan import Plan, work
>>> plan = Plan.of(dfgpt.load("sort"), [("CABACAAAA", "CACACAAAA")], "logit_diff:B,C", "resid_pre")
>>> got = run_chunk(plan, work(plan.n_pairs, [(0, 8), (1, 8)]))
>>> [round(v, 3) for v in got.values], {p: tuple(round(x, 3) for x in e) for p, e in got.ends.items()}
([-10.749, 12.48], {0: (12.503, -10.749)})
>>> forget(plan.token)
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import weakref
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Any

from ..cells import Cells
from ..core.blas import one_blas_thread
from ..errors import ClusterError
from ..interventions.metrics import parse_metric
from ..interventions.patching import check_pair
from ..interventions.sites import Sites, sites
from ..interventions.sweep import SiteRunner
from ..model import Model, load
from .ablation import Ablator, Reference
from .plan import Chunk, Item, Plan, SiteCosts, fingerprint, site_costs

__all__ = ["CACHE", "KEEP", "KEPT_BYTES", "Cache", "Runner", "first_sites", "forget", "metric_name", "model_of",
           "run_chunk", "sweep_site_costs", "young_only"]

Runner = SiteRunner | Ablator  # `runner.many(keys)`: the metric at each site
KEEP = 8  # entries per process: a model, a sweep's sites and reference, and a few pairs' runners
# The most a sweep's site masks may take to be kept by model (GPT-2 small's head_out at T = 64: 450 MB).
KEPT_BYTES = 8 << 20


class Cache:
    """Entries by key, the least recently used dropped once more than `keep` are held; `forget(token)`
    drops one sweep's entries (every key of a sweep's own entries ends with its token)."""

    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self.entries: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable) -> Any:
        """The entry, now the most recently used, or None."""
        got = self.entries.get(key)
        if got is not None:
            self.entries.move_to_end(key)
        return got

    def put(self, key: Hashable, value: Any) -> Any:
        self.entries[key] = value
        self.entries.move_to_end(key)
        while len(self.entries) > self.keep:
            self.entries.popitem(last=False)
        return value

    def forget(self, token: str) -> None:
        for key in [k for k in self.entries if isinstance(k, tuple) and k[-1] == token]:
            del self.entries[key]

    def __len__(self) -> int:
        return len(self.entries)


CACHE = Cache()


def model_of(plan: Plan) -> Model:
    """The plan's model: in process the caller's own; on a worker, loaded once per checkpoint identity,
    and refused when its weights are not the caller's (the file was saved again after the caller loaded it)."""
    if plan.local is not None:
        return plan.local
    key = ("model", plan.checkpoint)
    got = CACHE.get(key)
    if got is None:
        model = load(plan.model, plan.dtype)
        got = CACHE.put(key, (model, fingerprint(model)))
    if plan.weights and got[1] != plan.weights:
        raise ClusterError(f"the model at {plan.model} is not the one this sweep was given: the file was saved again "
                           "after dfgpt.load read it; load it again (dfgpt.load(path)) and sweep that model, or run "
                           "this one in process (scheduler='inline').")
    return got[0]  # type: ignore[no-any-return]


def _sites_key(plan: Plan) -> tuple[Any, ...]:
    """Where a sweep's small sites are kept: by the checkpoint (a model built in memory has none: by a
    weak reference, equal only to one of the same live object), length, family and positions."""
    model: Any = plan.checkpoint if plan.model or plan.local is None else weakref.ref(plan.local)
    return "sites", model, len(plan.pairs[0][1]), plan.over, plan.positions


def _kept(plan: Plan) -> tuple[Sites, SiteCosts] | None:
    for key in (_sites_key(plan), ("sites", plan.token)):
        got = CACHE.get(key)
        if got is not None:
            return got  # type: ignore[no-any-return]
    return None


def first_sites(plan: Plan, sheet: Cells | None = None) -> Sites:
    """The sites of the sweep, made once per sweep and process (kept for the next sweep when small):
    the same cells in every pair (all pairs have one length), so those of `sheet` (any of the
    sweep's) or else of pair 0."""
    got = _kept(plan)
    if got is not None:
        return got[0]
    model = model_of(plan)
    g = sites(sheet if sheet is not None else model.sheet(list(plan.pairs[0][1])), plan.over, plan.positions)
    small = sum(m.nbytes for site in g.sites.values() for m in site.masks.values()) <= KEPT_BYTES
    CACHE.put(_sites_key(plan) if small else ("sites", plan.token), (g, {}))
    return g


def sweep_site_costs(plan: Plan, g: Sites) -> SiteCosts:
    """Per site of the sweep's sites `g`: (its last row, its cost), made once with the kept sites."""
    got = _kept(plan)
    if got is None or got[0] is not g:
        return site_costs(model_of(plan), g, len(plan.pairs[0][1]))
    if not got[1]:
        got[1].update(site_costs(model_of(plan), g, len(plan.pairs[0][1])))
    return got[1]


def _reference(plan: Plan, g: Sites) -> Reference:
    """A mean ablation's reference values, made once per sweep and process (the sites are the same in every input)."""
    key = ("reference", plan.token)
    got = CACHE.get(key)
    return got if got is not None else CACHE.put(key, Reference(model_of(plan), plan.reference, g))


def _runner(plan: Plan, p: int) -> tuple[Runner, float, float]:
    key = ("runner", p, plan.token)
    got = CACHE.get(key)
    if got is not None:
        return got  # type: ignore[no-any-return]
    model = model_of(plan)
    clean, corrupted = (model.sheet(list(t)) for t in plan.pairs[p])
    m = parse_metric(plan.metric, clean, plan.position)
    g = first_sites(plan, corrupted)  # parsing a site's cells costs more than its replay on a small model
    if plan.how is None:
        check_pair(corrupted, clean, "clean", "the corrupted one")
        clean_v, corr_v = m(clean), m(corrupted)
        got = (SiteRunner(clean, corrupted, m, g, corr_v), clean_v, corr_v)
    else:  # an ablation: the input is both runs; its unablated metric is both ends
        v = m(clean)
        got = (Ablator(clean, m, g, _reference(plan, g) if plan.how == "mean" else None), v, v)
    return CACHE.put(key, got)  # type: ignore[no-any-return]


def forget(token: str) -> None:
    """Drop one sweep's runners (their sheets), reference and unkept sites from this process's cache."""
    CACHE.forget(token)


@contextlib.contextmanager
def young_only() -> Iterator[None]:
    """Collections during a chunk look only at what the chunk made.

    A chunk makes runners (sheets, replays and their copies) that live long enough to reach
    the oldest generation, so every few sweeps Python collects it whole: every object of the
    process, the model's and Dask's included, 50-60 ms on a worker, a quarter of a `sort`
    sweep. Frozen for the chunk, the objects made before it are not looked at; unfrozen after
    it, so they are collected as before. Left alone if something else froze objects already.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def run_chunk(plan: Plan, items: list[Item]) -> Chunk:
    """The metric at each (pair, site) of `items`, exactly as the whole sweep computes it."""
    values: list[float] = []
    ends: dict[int, tuple[float, float]] = {}
    with one_blas_thread(), young_only():  # in process and on a worker alike: the same kernels, the same sums
        for p, group in itertools.groupby(items, key=lambda it: it[0]):
            run, clean_v, corr_v = _runner(plan, p)
            ends[p] = (clean_v, corr_v)
            values += run.many([key for _, key in group])
    return Chunk(items, values, ends)


def metric_name(plan: Plan) -> str:
    """The metric's printed name, as pair 0 reads it (`logit_diff:B,C@8`)."""
    model = model_of(plan)
    return parse_metric(plan.metric, model.sheet(list(plan.pairs[0][0])), plan.position).name
