"""A dataset sweep as work: every (pair, site) in one order, costed, and cut into chunks that run anywhere.

A `Plan` is what a worker needs to run any chunk: the model's name or path (never the
loaded model) with the checkpoint's identity (so a worker that kept an older model at the
same path loads it again) and a fingerprint of the caller's weights (so a worker refuses a
file saved again since the caller loaded it, rather than sweep another model), the pairs as
token ids, the metric, the family, and for an ablation sweep how to ablate and the reference
inputs of a mean (each input of an ablation sweep stands as its own pair, `(input, input)`:
the run it ablates is the run its metric compares with). `work` lists the items, `costs`
estimates each one's work from its site's cost (`site_costs`), and `chunks` cuts the items
into consecutive chunks of about equal work. `dfgpt.batch.worker` runs a chunk.

>>> import dfgpt
>>> plan = Plan.of(dfgpt.load("sort"), [("CABACAAAA", "CACACAAAA")], "logit_diff:B,C", "resid_pre")
>>> plan.checkpoint, plan.n_pairs
(('sort', None, ()), 1)
>>> work(plan.n_pairs, [(0, 8), (1, 8)])
[(0, (0, 8)), (0, (1, 8))]
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ClusterError
from ..interventions.metrics import Metric
from ..interventions.sites import Sites
from ..model import Model
from ..models.catalog import shipped
from .pairs import Inputs, Tokens, as_pairs

__all__ = ["CHUNK_COST", "SKIPPED", "Checkpoint", "Chunk", "Item", "Plan", "SiteCosts", "checkpoint", "chunks",
           "costs", "fingerprint", "site_costs", "work"]

Item = tuple[int, tuple[int, ...]]  # (pair index, site key)
# A checkpoint's identity: its name or path, dtype, and per file (relative path, size, mtime in ns,
# inode): a file saved again at the same path changes at least one of them.
Checkpoint = tuple[str, str | None, tuple[tuple[str, int, int, int], ...]]
SiteCosts = dict[tuple[int, ...], tuple[int, float]]  # site key -> (its last row, its cost when run)
FILES = 256  # at most this many files of a checkpoint folder are looked at (a model folder holds a few)


def fingerprint(model: Model) -> str:
    """A short digest of the model's weights: each parameter's name, shape, dtype and at most 1024 of
    its values, evenly spaced. Milliseconds on GPT-2 small; another model's weights differ in it.

    >>> import dfgpt
    >>> fingerprint(dfgpt.load("sort")) == fingerprint(dfgpt.load("sort")) != fingerprint(dfgpt.load("sort-random"))
    True
    """
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(model.params):
        a = np.asarray(model.params[name])
        h.update(f"{name}{a.shape}{a.dtype}".encode())
        h.update(np.ascontiguousarray(a.reshape(-1)[::max(1, a.size // 1024)]).tobytes())
    return h.hexdigest()


def checkpoint(name: str, dtype: str | None) -> Checkpoint:
    """The identity of the checkpoint `dfgpt.load(name, dtype)` reads: a shipped name as it is; a
    path with the size, modification time and inode of its files (a file, with the files beside
    it, where its config and tokenizer live; a folder, with the files in it). A few `stat` calls.

    >>> checkpoint("sort", None)
    ('sort', None, ())
    """
    if not name or name in shipped():
        return name, dtype, ()
    path = Path(name)
    try:
        folder = path if path.is_dir() else path.parent
        files = sorted(p for p in itertools.islice(folder.rglob("*") if path.is_dir() else folder.iterdir(), FILES)
                       if p.is_file())
        stats = [(str(p.relative_to(folder)), os.stat(p)) for p in files]
    except (OSError, ValueError):
        return name, dtype, ()  # unreadable here: `load` on the worker says why
    return name, dtype, tuple((rel, s.st_size, s.st_mtime_ns, s.st_ino) for rel, s in stats)


@dataclass(frozen=True)
class Plan:
    """Everything a chunk needs, small enough to ship: the model by name or path, pairs as ids."""

    model: str  # a shipped name or a path: each worker loads it once per checkpoint identity
    dtype: str | None
    pairs: Tokens
    metric: str | Callable[[Any], float]
    over: str
    positions: str = "each"
    position: int | None = None
    how: str | None = None  # an ablation sweep: "zero" or "mean"; None: activation patching
    reference: Inputs = ()  # the inputs a mean ablation averages over
    token: str = field(default_factory=lambda: uuid.uuid4().hex)  # this sweep's entries in a worker's cache
    checkpoint: Checkpoint = ("", None, ())  # the model file's identity when the sweep was planned
    weights: str = ""  # the caller's model's `fingerprint`: a worker checks the model it loads against it
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
                   checkpoint=checkpoint(name, dtype), weights=fingerprint(model) if name else "", local=model)

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


def work(n_pairs: int, keys: list[tuple[int, ...]]) -> list[Item]:
    """Every (pair, site), pair by pair, each pair's sites in the sweep's order (`keys`, already ordered)."""
    return [(p, k) for p in range(n_pairs) for k in keys]


def site_costs(model: Model, g: Sites, T: int) -> SiteCosts:
    """Per site: (its last row, its cost when run), the same in every pair (see `costs`)."""
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


def costs(plan: Plan, per: SiteCosts, items: list[Item]) -> list[float]:
    """A rough cost per item, to cut chunks of about equal work and to choose where a sweep runs;
    only chunk boundaries and that choice depend on it, never a value.

    A site whose cells all sit before the pair's first differing token holds equal values in both
    runs (the model is causal) and is skipped: `SKIPPED`. Otherwise its cone is the tensors after
    the site's first one, in graph order, each on the rows from the site's first row on; a few-row
    product costs nearly what a one-row one does (fitted on the 4-layer GPT-2 shape: time ∝
    depth × (2T + rows) to 2%), so the cost is the fraction of the graph below the site times
    (3T − first row) / 2T: about 1 for a site halfway down (`site_costs`).
    """
    T = len(plan.pairs[0][1])
    differ = []  # per pair: its first differing position (an ablation compares an input with itself: none skip)
    for a, b in plan.pairs:
        d = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), T)
        differ.append(0 if plan.how is not None else d)
    return [SKIPPED if per[key][0] < differ[p] else per[key][1] for p, key in items]


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
