"""`dfgpt.sweep` and `dfgpt.attribution_patch` for one pair of sheets or for a dataset of pairs.

`sweep(clean_sheet, corrupted_sheet, metric, over=...)` is the one-pair sweep of
`dfgpt.interventions.sweep`. `sweep(model, pairs, metric, over=...)` sweeps every pair (texts
or token lists of one length, or a `.jsonl` path) and returns a `PairSweep`: the metric per
pair and per site (a `pair` axis first) and its mean. In process by default, one pair after
the other; `scheduler="local"` runs it on an embedded Dask cluster of one worker process per
core (`workers=N` to choose), `scheduler="tcp://host:port"` on an existing cluster. Either way
the values, and their order, are the in-process ones exactly.

>>> import dfgpt
>>> m = dfgpt.load("sort")
>>> pairs = [("CABACAAAA", "CACACAAAA"), ("CBBACAAAA", "CCBACAAAA")]
>>> r = sweep(m, pairs, "logit_diff:B,C", over="resid_pre")
>>> r
PairSweep(resid_pre, logit_diff:B,C@8, pair 2 × layer 3 × position 9, exact)
>>> one = sweep(m.sheet(pairs[1][0]), m.sheet(pairs[1][1]), "logit_diff:B,C", over="resid_pre")
>>> bool((r.pair(1).values == one.values).all()), r.mean().values.shape
(True, (3, 9))
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..cells import Cells
from ..errors import ClusterError, QueryError
from ..interventions import attribution as attr
from ..interventions import sweep as one
from ..interventions.metrics import Metric
from ..interventions.sweep import Sweep, order
from ..model import Model, load
from .chunks import Chunk, Plan, first_sites, forget, metric_name, run_chunk, work
from .cluster import Failed, progress_default, run
from .pairs import read_pairs
from .result import PairSweep

__all__ = ["attribution_patch", "sweep"]

MetricArg = str | Callable[[Any], float] | Metric


def _model(model: Any) -> Model:
    if isinstance(model, Model):
        return model
    if isinstance(model, (str, Path)):
        return load(model)
    raise QueryError(f"a dataset sweep takes the model first (dfgpt.load(...), a name or a path), then the "
                     f"pairs; got {type(model).__name__}. For one pair, pass two sheets: sweep(clean, corrupted, ...).")


def _pairs(pairs: Any) -> Sequence[Any]:
    if isinstance(pairs, Path) or (isinstance(pairs, str) and pairs.endswith((".jsonl", ".json"))):
        return read_pairs(pairs)
    return pairs  # type: ignore[no-any-return]


def sweep(clean: Any, corrupted: Any, metric: MetricArg, over: str = "resid_pre", positions: str = "each",
          position: int | None = None, *, scheduler: Any = None, workers: int | None = None,
          chunk: int | None = None, progress: bool | None = None, retries: int = 2,
          partial: bool = False) -> Any:
    """One pair of sheets: a `Sweep`. A model and pairs: a `PairSweep` (see the module).

    `scheduler`: None (in process), "local", an address or a `dask.distributed.Client`;
    `workers`: local worker processes (default: one per core); `chunk`: sites per task
    (default about four tasks per worker); `progress`: a bar (default: when a terminal or a
    notebook watches); `retries`: of a chunk whose code raised; `partial=True` keeps what
    came back when a chunk failed every retry (nan, listed in `failed`) instead of raising.
    """
    if isinstance(clean, Cells):
        if scheduler is not None or workers is not None:
            raise QueryError("a distributed sweep loads the model on each worker and makes the sheets there: pass "
                             "the model and the pairs, sweep(model, [(clean_text, corrupted_text)], ...), not sheets.")
        return one.sweep(clean, corrupted, metric, over=over, positions=positions, position=position)
    model = _model(clean)
    plan = Plan.of(model, _pairs(corrupted), metric, over, positions, position)
    g = first_sites(plan)
    items = work(plan.n_pairs, order(list(g.sites)))
    failed: list[Failed] = []
    if scheduler is None and workers is None:
        done: list[Chunk] = []
        per = len(g.sites)
        bar = tqdm(total=len(items), unit="site", desc=f"sweep {over}", disable=not progress_default(progress))
        try:
            for i in range(0, len(items), per):  # one pair at a time
                done.append(run_chunk(plan, items[i:i + per]))
                bar.update(per)
        finally:
            bar.close()
            forget(plan.token)
    else:
        done, failed = run(plan, items, "local" if scheduler is None else scheduler, workers, chunk, progress,
                           retries)
    return _assemble(plan, model, g, items, done, failed, partial)


def _assemble(plan: Plan, model: Model, g: Any, items: list[Any], done: list[Chunk], failed: list[Failed],
              partial: bool) -> PairSweep:
    """The chunks' values in place; every site exactly once, or an error saying which were lost."""
    if failed and not partial:
        lost = sum(len(part) for part, _ in failed)
        err = failed[0][1]
        raise ClusterError(f"{len(failed)} chunk(s) ({lost} of {len(items)} sites) failed on every retry; the "
                           f"first: {type(err).__name__}: {err}. Fix the cause and run again, or pass "
                           "partial=True to keep the other sites (the failed ones are nan and listed in .failed).")
    P = plan.n_pairs
    values = np.full((P, *(len(c) for c in g.coords)), np.nan)  # [P, *site axes]
    ends = np.full((P, 2), np.nan)  # [P, (clean, corrupted)]
    seen: Counter[Any] = Counter()
    for ch in done:
        for (p, key), v in zip(ch.items, ch.values):
            seen[(p, key)] += 1
            values[(p, *key)] = v
        for p, e in ch.ends.items():
            ends[p] = e
    twice = [it for it, n in seen.items() if n > 1]
    missing = [it for it in items if it not in seen]
    lost_items = [it for part, _ in failed for it in part]
    if twice or sorted(missing) != sorted(lost_items):
        raise ClusterError(f"the chunks delivered {len(twice)} site(s) twice and {len(missing)} not at all "
                           f"({len(lost_items)} in failed chunks): a scheduler bug; run the sweep again.")
    s0 = model.sheet(list(plan.pairs[0][0]))
    inputs, labels = [], []
    for a, b in plan.pairs:
        inputs.append((model.decode(list(a)), model.decode(list(b))))
        lab = [s0.token_label(x) if x == y else f"{s0.token_label(x)}/{s0.token_label(y)}" for x, y in zip(a, b)]
        labels.append({"position": tuple(f"{t}:{s}" for t, s in enumerate(lab))} if "position" in g.axes else {})
    return PairSweep(g.family, metric_name(plan), ("pair", *g.axes), (tuple(range(P)), *g.coords), values,
                     ends[:, 0].copy(), ends[:, 1].copy(), "exact", tuple(inputs), tuple(labels),
                     {k: s.cells for k, s in g.sites.items()},
                     tuple((p, g.sites[k].cells) for p, k in sorted(missing)))


def attribution_patch(clean: Any, corrupted: Any, metric: MetricArg, over: str = "resid_pre",
                      positions: str = "each", position: int | None = None) -> Any:
    """Attribution patching of one pair of sheets (a `Sweep`), or of a model and pairs (a `PairSweep`,
    in process: one backward pass per pair).

    >>> import dfgpt
    >>> r = attribution_patch(dfgpt.load("sort"), [("CABACAAAA", "CACACAAAA")] * 2, "logit_diff:B,C")
    >>> r, bool((r.values[0] == r.values[1]).all())
    (PairSweep(resid_pre, logit_diff:B,C@8, pair 2 × layer 3 × position 9, attribution), True)
    """
    if isinstance(clean, Cells):
        return attr.attribution_patch(clean, corrupted, metric, over=over, positions=positions, position=position)
    model = _model(clean)
    plan = Plan.of(model, _pairs(corrupted), metric, over, positions, position)
    per: list[Sweep] = [attr.attribution_patch(model.sheet(list(a)), model.sheet(list(b)), plan.metric, over=over,
                                               positions=positions, position=position) for a, b in plan.pairs]
    g = first_sites(plan)
    r = _assemble(plan, model, g, [], [], [], False)
    vals = np.stack([s.values for s in per])  # [P, *site axes]
    return PairSweep(r.family, r.metric, r.axes, r.coords, vals, np.array([s.clean for s in per]),
                     np.array([s.corrupted for s in per]), "attribution", r.inputs, r.labels, r.cells)
