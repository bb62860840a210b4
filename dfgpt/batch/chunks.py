"""A dataset sweep as work: every (pair, site) in one order, cut into chunks, each run anywhere.

A `Plan` is what a worker needs to run any chunk: the model's name or path (never the
loaded model), the pairs as token ids, the metric, the family, and for an ablation sweep how
to ablate and the reference inputs of a mean (each input of an ablation sweep stands as its
own pair, `(input, input)`: the run it ablates is the run its metric compares with). `run_chunk(plan, items)`
loads the model once per process (`cached_model`), keeps each pair's `SiteRunner` for the
next chunk of the same pair, and returns the metric of every site of the chunk, in the
chunk's order, with each touched pair's unpatched metrics, on one BLAS thread (the sums do
not depend on the thread count, and many processes share the cores). The in-process sweep runs the
same function over all the items, so a distributed sweep gives the same values.

>>> import dfgpt
>>> plan = Plan.of(dfgpt.load("sort"), [("CABACAAAA", "CACACAAAA")], "logit_diff:B,C", "resid_pre")
>>> items = work(plan.n_pairs, [(0, 8), (1, 8)])
>>> items
[(0, (0, 8)), (0, (1, 8))]
>>> got = run_chunk(plan, items)
>>> [round(v, 3) for v in got.values], {p: tuple(round(x, 3) for x in e) for p, e in got.ends.items()}
([-10.749, 12.48], {0: (12.503, -10.749)})
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import math
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..cells import Cells
from ..core.blas import one_blas_thread
from ..errors import ClusterError
from ..interventions.metrics import Metric, parse_metric
from ..interventions.patching import check_pair
from ..interventions.sites import Sites, sites
from ..interventions.sweep import SiteRunner
from ..model import Model, load
from .ablation import Ablator, Reference
from .pairs import Inputs, Tokens, as_pairs

__all__ = ["Chunk", "Item", "Plan", "Runner", "cached_model", "chunks", "costs", "first_sites", "forget", "metric_name",
           "run_chunk", "work"]

Item = tuple[int, tuple[int, ...]]  # (pair index, site key)


@dataclass(frozen=True)
class Plan:
    """Everything a chunk needs, small enough to ship: the model by name or path, pairs as ids."""

    model: str  # a shipped name or a path: each worker loads it once
    dtype: str | None
    pairs: Tokens
    metric: str | Callable[[Any], float]
    over: str
    positions: str = "each"
    position: int | None = None
    how: str | None = None  # an ablation sweep: "zero" or "mean"; None: activation patching
    reference: Inputs = ()  # the inputs a mean ablation averages over
    token: str = field(default_factory=lambda: uuid.uuid4().hex)  # this sweep's runners in a worker's cache
    local: Model | None = field(default=None, repr=False, compare=False)  # in process: the model itself

    @classmethod
    def of(cls, model: Model, pairs: Sequence[Any], metric: str | Callable[[Any], float], over: str,
           positions: str = "each", position: int | None = None, how: str | None = None,
           reference: Inputs = ()) -> Plan:
        """A plan for a loaded model (kept for in-process runs; workers load `model.source`)."""
        if isinstance(metric, Metric):
            metric = metric.fn if metric.kind is None else metric.name
        name, dtype = model.source or ("", None)
        return cls(name, dtype, as_pairs(model, pairs), metric, over, positions, position, how, reference,
                   local=model)

    @property
    def n_pairs(self) -> int:
        return len(self.pairs)

    def shipped(self) -> Plan:
        """The plan without the in-process model (what is sent to workers)."""
        if not self.model:
            raise ClusterError(
                "a distributed sweep loads the model on each worker by name or path, and this model was not "
                "loaded by dfgpt.load(name or path) (it was built in memory); save it and load it from its path, "
                "or run the sweep in process (scheduler='inline').")
        return dataclasses.replace(self, local=None)


@dataclass(frozen=True)
class Chunk:
    """A chunk's answer: the metric per item (in order), and per pair touched (clean, corrupted)."""

    items: list[Item]
    values: list[float]
    ends: dict[int, tuple[float, float]]


_MODELS: dict[tuple[str, str | None], Model] = {}
Runner = SiteRunner | Ablator  # `runner.many(keys)`: the metric at each site
_RUNNERS: OrderedDict[tuple[str, int], tuple[Runner, float, float]] = OrderedDict()
_REFERENCES: OrderedDict[str, Reference] = OrderedDict()  # per sweep: a mean ablation's reference values
_SITES: OrderedDict[str, Sites] = OrderedDict()  # per sweep: its sites, the same in every pair
# Small sites kept between sweeps, per model and (length, family, positions): parsing a site's
# cells costs more than replaying it on a small model, and a process often runs many such sweeps.
# Each with its per-site costs (see `costs`), made when first asked for.
SiteCosts = dict[tuple[int, ...], tuple[int, float]]  # site key -> (its last row, its cost when run)
_KEPT: weakref.WeakKeyDictionary[Model, OrderedDict[tuple[int, str, str], tuple[Sites, SiteCosts]]] = \
    weakref.WeakKeyDictionary()
KEPT_BYTES = 8 << 20  # the most a kept sweep's site masks may take (GPT-2 small's head_out at T = 64: 450 MB)
KEEP = 4  # runners kept per process: a chunk seldom spans more than two pairs


def cached_model(name: str, dtype: str | None) -> Model:
    """The model loaded once per process (a worker's every chunk shares it)."""
    key = (name, dtype)
    if key not in _MODELS:
        _MODELS[key] = load(name, dtype)
    return _MODELS[key]


def model_of(plan: Plan) -> Model:
    return plan.local if plan.local is not None else cached_model(plan.model, plan.dtype)


def first_sites(plan: Plan, sheet: Cells | None = None) -> Sites:
    """The sites of the sweep, made once per sweep and process (kept for the next sweep when
    small): the same cells in every pair (all pairs have one length), so those of `sheet` (any
    of the sweep's) or else of pair 0."""
    got = _SITES.get(plan.token)
    if got is None:
        model = model_of(plan)
        kept = _KEPT.setdefault(model, OrderedDict())
        entry = kept.get(_kept_key(plan))
        if entry is not None:
            got = entry[0]
        else:
            got = sites(sheet if sheet is not None else model.sheet(list(plan.pairs[0][1])), plan.over, plan.positions)
            if sum(m.nbytes for site in got.sites.values() for m in site.masks.values()) <= KEPT_BYTES:
                kept[_kept_key(plan)] = (got, {})
                while len(kept) > 4:
                    kept.popitem(last=False)
        _SITES[plan.token] = got
        while len(_SITES) > 2:
            _SITES.popitem(last=False)
    return got


def _kept_key(plan: Plan) -> tuple[int, str, str]:
    return len(plan.pairs[0][1]), plan.over, plan.positions


def _reference(plan: Plan, g: Sites) -> Reference:
    """A mean ablation's reference values, made once per sweep and process (the sites are the same in every input)."""
    got = _REFERENCES.get(plan.token)
    if got is None:
        got = _REFERENCES[plan.token] = Reference(model_of(plan), plan.reference, g)
        while len(_REFERENCES) > 2:
            _REFERENCES.popitem(last=False)
    return got


def _runner(plan: Plan, p: int) -> tuple[Runner, float, float]:
    key = (plan.token, p)
    got = _RUNNERS.get(key)
    if got is not None:
        _RUNNERS.move_to_end(key)
        return got
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
    _RUNNERS[key] = got
    while len(_RUNNERS) > KEEP:
        _RUNNERS.popitem(last=False)
    return got


def forget(token: str) -> None:
    """Drop one sweep's runners (their sheets) from this process's cache."""
    for key in [k for k in _RUNNERS if k[0] == token]:
        del _RUNNERS[key]
    _REFERENCES.pop(token, None)
    _SITES.pop(token, None)


@contextlib.contextmanager
def _young_only() -> Iterator[None]:
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
    with one_blas_thread(), _young_only():  # in process and on a worker alike: the same kernels, the same sums
        for p, group in itertools.groupby(items, key=lambda it: it[0]):
            run, clean_v, corr_v = _runner(plan, p)
            ends[p] = (clean_v, corr_v)
            values += run.many([key for _, key in group])
    return Chunk(items, values, ends)


def metric_name(plan: Plan) -> str:
    """The metric's printed name, as pair 0 reads it (`logit_diff:B,C@8`)."""
    model = model_of(plan)
    return parse_metric(plan.metric, model.sheet(list(plan.pairs[0][0])), plan.position).name


def work(n_pairs: int, keys: list[tuple[int, ...]]) -> list[Item]:
    """Every (pair, site), pair by pair, each pair's sites in the sweep's order (`keys`, already ordered)."""
    return [(p, k) for p in range(n_pairs) for k in keys]


def costs(plan: Plan, g: Sites, items: list[Item]) -> list[float]:
    """A rough cost per item, to cut chunks of about equal work; only chunk boundaries depend on it.

    A site whose cells all sit before the pair's first differing token holds equal values in both
    runs (the model is causal) and is skipped: `SKIPPED`. Otherwise its cone is the tensors after
    the site's first one, in graph order, each on the rows from the site's first row on; a few-row
    product costs nearly what a one-row one does (fitted on the 4-layer GPT-2 shape: time ∝
    depth × (2T + rows) to 2%), so the cost is the fraction of the graph below the site times
    (3T − first row) / 2T: about 1 for a site halfway down.
    """
    T = len(plan.pairs[0][1])
    model = model_of(plan)
    memo = _KEPT.get(model)
    entry = memo.get(_kept_key(plan)) if memo is not None else None
    kept = entry[1] if entry is not None and entry[0] is g else None  # these sites are kept: so are their costs
    per = kept if kept else _site_costs(model, g, T)
    if kept is not None and not kept:
        kept.update(per)
    differ = []  # per pair: its first differing position (an ablation compares an input with itself: none skip)
    for a, b in plan.pairs:
        d = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), T)
        differ.append(0 if plan.how is not None else d)
    return [SKIPPED if per[key][0] < differ[p] else per[key][1] for p, key in items]


def _site_costs(model: Model, g: Sites, T: int) -> SiteCosts:
    """Per site: (its last row, its cost when run)."""
    graph = model.graph
    at = {n: i for i, n in enumerate(graph.computed)}
    per: SiteCosts = {}
    for key, site in g.sites.items():
        rows = [np.flatnonzero(np.moveaxis(m, graph.row_axis[t], 0).reshape(T, -1).any(axis=1))
                for t, m in site.masks.items()]
        first = min((int(r[0]) for r in rows if r.size), default=0)
        last = max((int(r[-1]) for r in rows if r.size), default=T - 1)
        depth = (len(at) - min(at.get(t, 0) for t in site.masks)) / len(at)
        per[key] = last, SKIPPED + depth * (3 * T - first) / (2 * T)
    return per


SKIPPED = 0.05  # a skipped site (its pins made and compared) against about 1 for a site recomputed
# A chunk's least work, in `costs` units: about 70 ms on `sort`, the smallest model, where each task
# costs the scheduler and the caller about 4 ms (a unit is a site's replay: more time on larger models).
CHUNK_COST = 100.0


def chunks(items: list[Item], workers: int, size: int | None = None, cost: Sequence[float] | None = None,
           block: Sequence[Any] | None = None) -> list[list[Item]]:
    """Consecutive runs of `size` items; by default about four chunks per worker, so a slow or lost
    chunk costs little, yet each is many sites long to amortise scheduling: of about equal `cost`
    when given (see `costs`), else of equal length. With costs, a small sweep gets fewer chunks, down
    to one per worker, so that each holds about `CHUNK_COST` or more. `block`: per item, the group of
    sites it is replayed with (`sweep.blocks`, with its pair); chunks are cut only between blocks, at
    the boundary nearest each equal share of the cost (without costs, a cut inside a block moves to
    its end).

    >>> [len(c) for c in chunks([(0, (i,)) for i in range(10)], workers=1)]
    [3, 3, 3, 1]
    >>> [len(c) for c in chunks([(0, (i,)) for i in range(8)], workers=1, cost=[200, 200, 50, 50, 50, 50, 50, 50])]
    [1, 1, 2, 4]
    >>> [len(c) for c in chunks([(0, (i,)) for i in range(8)], workers=2, cost=[30] * 8)]  # 240 units: 1 per worker
    [4, 4]
    >>> [len(c) for c in chunks([(0, (i,)) for i in range(10)], workers=1, block=[0] * 4 + [1] * 4 + [2] * 2)]
    [4, 4, 2]
    >>> [len(c) for c in chunks([(0, (i,)) for i in range(9)], workers=1, cost=[100] * 9, block=[0] * 6 + [1] * 3)]
    [6, 3]
    """
    w = max(1, workers)
    cuts = [0]
    if size is None and cost is not None and len(cost) == len(items) and sum(cost) > 0:
        before = np.concatenate([[0.0], np.cumsum(np.asarray(cost, float))])  # [items + 1]: the cost before each
        n = w * min(4, max(1, int(before[-1] // (w * CHUNK_COST))))
        # Where a chunk may start: a block's first item. The nearest to each share, not the first
        # past it: that would make every chunk but the last longer, the first worker's most of all.
        can = np.array([j for j in range(1, len(items)) if block is None or block[j] != block[j - 1]], np.int64)
        for k in range(1, n):
            if can.size == 0:
                break
            i = int(np.searchsorted(before[can], before[-1] * k / n))
            near = [int(can[j]) for j in (i - 1, i) if 0 <= j < can.size]
            cuts.append(min(near, key=lambda j: (abs(before[j] - before[-1] * k / n), j)))
        cuts = sorted(set(cuts))
    else:
        step = size if size is not None else max(1, math.ceil(len(items) / (4 * w)))
        cuts += list(range(step, len(items), step))
        if block is not None:
            cuts = [next((j for j in range(c, len(items)) if j == 0 or block[j] != block[j - 1]), len(items))
                    for c in cuts]
    cuts.append(len(items))
    return [items[a:b] for a, b in itertools.pairwise(dict.fromkeys(cuts)) if b > a]
