"""`dfgpt.sweep`, `sweep_pairs`, `ablation_sweep` and `attribution_patch`: one pair of sheets or a dataset.

`sweep(clean_sheet, corrupted_sheet, metric, over=...)` is the one-pair sweep of
`dfgpt.interventions.sweep`: two sheets. `sweep_pairs(model, pairs, metric, over=...)` sweeps
every pair of a dataset (a list of (clean, corrupted) texts or token lists of one length;
`dfgpt.read_pairs(path)` reads a `.jsonl` file) under a loaded model and returns a `PairSweep`:
the metric per pair and per site (a `pair` axis first) and its mean. Each argument has one
type: `sweep(model, pairs, ...)` still works for now, but new code calls `sweep_pairs`.
`ablation_sweep(model, inputs, metric, over=..., how="zero" | "mean")` ablates each site of
each input (zero, or its mean over `reference`, by default the inputs themselves) and returns
an `AblationSweep` (an `input` axis first).

Where a dataset runs (`scheduler`): by default in this process, and on an embedded Dask
cluster of one worker process per core only when the work would pay for the cluster's
start-up (the first pair is timed and the rest estimated by `plan.costs`); `"local"` always
starts that cluster (`workers=N` to size it), `"tcp://host:port"` or a
`dask.distributed.Client` uses an existing one, `"inline"` keeps it in this process. The
result says where it ran (`r.ran_on`, and the progress line), and either way the values, and
their order, are the in-process ones exactly.

>>> import dfgpt
>>> m = dfgpt.load("sort")
>>> pairs = [("CABACAAAA", "CACACAAAA"), ("CBBACAAAA", "CCBACAAAA")]
>>> r = sweep_pairs(m, pairs, "logit_diff:B,C", over="resid_pre")
>>> r, r.ran_on.split(" (")[0]
(PairSweep(resid_pre, logit_diff:B,C@8, pair 2 × layer 3 × position 9, exact), 'this process')
>>> one = sweep(m.sheet(pairs[1][0]), m.sheet(pairs[1][1]), "logit_diff:B,C", over="resid_pre")
>>> bool((r.pair(1).values == one.values).all()), r.mean().values.shape
(True, (3, 9))
>>> a = ablation_sweep(m, ["CABACAAAA", "CBBACAAAA"], "logit_diff:B,C", over="head_out", how="mean",
...                    scheduler="inline")
>>> a, a.base.shape
(AblationSweep(head_out, logit_diff:B,C@8, input 2 × layer 3 × head 3 × position 9, mean ablation), (2,))
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..cells import Cells
from ..errors import ClusterError, QueryError, SequenceLengthError
from ..interventions import attribution as attr
from ..interventions import sweep as one
from ..interventions.metrics import Metric
from ..interventions.sweep import Sweep, blocks, order
from ..model import Model, load
from .ablation import HOWS
from .cluster import AUTO, CLUSTER_START, LOCAL, Failed, check_run, cores, progress_default, run, where, why_here
from .pairs import Inputs, as_inputs, read_inputs, read_pairs
from .plan import Chunk, Item, Plan, costs, work
from .result import AblationSweep, PairSweep
from .worker import first_sites, forget, metric_name, run_chunk, sweep_site_costs

__all__ = ["ablation_sweep", "as_model", "attribution_patch", "dataset_inputs", "sweep", "sweep_pairs"]

MetricArg = str | Callable[[Any], float] | Metric


def as_model(model: Any) -> Model:
    """The model of a dataset call: a `Model`, or a shipped name or path loaded by `dfgpt.load`."""
    if isinstance(model, Model):
        return model
    if isinstance(model, (str, Path)):
        return load(model)
    raise QueryError(f"a dataset call takes the model first (dfgpt.load(...), a name or a path), then the "
                     f"pairs or inputs; got {type(model).__name__}. For one pair, pass two sheets: "
                     "sweep(clean, corrupted, ...).")


def _is_path(data: Any) -> bool:
    return isinstance(data, Path) or (isinstance(data, str) and data.endswith((".jsonl", ".json", ".txt")))


def _pairs(pairs: Any) -> Sequence[Any]:
    return read_pairs(pairs) if _is_path(pairs) else pairs  # type: ignore[no-any-return]


def dataset_inputs(data: Any) -> Sequence[Any]:
    """A dataset of single inputs: a list as it is, a path read by `read_inputs`."""
    return read_inputs(data) if _is_path(data) else data  # type: ignore[no-any-return]


def sweep(clean: Any, corrupted: Any, metric: MetricArg, over: str = "resid_pre", positions: str = "each",
          position: int | None = None, *, scheduler: Any = None, workers: int | None = None,
          chunk: int | None = None, progress: bool | None = None, retries: int = 2,
          partial: bool = False) -> Any:
    """One pair of sheets: their `Sweep` (see `dfgpt.interventions.sweep`).

    `sweep(model, pairs, ...)` is kept for a while and is `sweep_pairs(model, pairs, ...)` (a
    name or path for the model and a `.jsonl` path for the pairs still work there); new code
    calls `sweep_pairs`, whose arguments each have one type.
    """
    if isinstance(clean, Cells):
        if not isinstance(corrupted, Cells):
            raise QueryError(f"sweep(clean, corrupted, ...) takes two sheets of one model; the corrupted one is "
                             f"{type(corrupted).__name__}: pass model.sheet(corrupted_text). For a dataset, "
                             "dfgpt.sweep_pairs(model, [(clean_text, corrupted_text), ...], ...).")
        if where(scheduler, workers, 1) is not None:
            raise QueryError("a distributed sweep loads the model on each worker and makes the sheets there: pass "
                             "the model and the pairs, sweep_pairs(model, [(clean_text, corrupted_text)], ...), "
                             "not sheets.")
        return one.sweep(clean, corrupted, metric, over=over, positions=positions, position=position)
    return sweep_pairs(as_model(clean), _pairs(corrupted), metric, over, positions, position, scheduler=scheduler,
                       workers=workers, chunk=chunk, progress=progress, retries=retries, partial=partial)


def sweep_pairs(model: Model, pairs: Sequence[tuple[Any, Any]], metric: MetricArg, over: str = "resid_pre",
                positions: str = "each", position: int | None = None, *, scheduler: Any = None,
                workers: int | None = None, chunk: int | None = None, progress: bool | None = None,
                retries: int = 2, partial: bool = False) -> PairSweep:
    """Sweep every (clean, corrupted) pair of a dataset under `model`: a `PairSweep` (see the module).

    `pairs`: (clean, corrupted) texts or token lists, all of one length (`dfgpt.read_pairs(path)`
    reads a file). `scheduler`: None or "auto" (in process, or an embedded local cluster when
    the work pays for its start-up), "inline" (in process), "local" (the embedded cluster), an
    address or a `dask.distributed.Client`; `workers`: local worker processes (default: one per
    core); `chunk`: sites per task (default about four tasks per worker); `progress`: a bar
    (default: when a terminal or a notebook watches); `retries`: of a chunk whose code raised;
    `partial=True` keeps what came back when a chunk failed every retry (nan, listed in
    `failed`) instead of raising.

    >>> import dfgpt
    >>> r = sweep_pairs(dfgpt.load("sort"), [("CABACAAAA", "CACACAAAA")], "logit_diff:B,C", over="head_out")
    >>> r.values.shape, r.ran_on
    ((1, 3, 3, 9), 'this process (one pair)')
    """
    if not isinstance(model, Model):
        raise QueryError(f"sweep_pairs takes a loaded model first, got {type(model).__name__}: "
                         "dfgpt.sweep_pairs(dfgpt.load(name or path), pairs, ...).")
    if isinstance(pairs, (str, Path)):
        raise QueryError(f"sweep_pairs takes a list of (clean, corrupted) pairs, got a {type(pairs).__name__} "
                         f"({str(pairs)[:60]!r}); a file of pairs is read by dfgpt.read_pairs(path): "
                         "sweep_pairs(model, dfgpt.read_pairs(path), ...).")
    check_run(scheduler, workers, chunk, retries)
    plan = Plan.of(model, pairs, metric, over, positions, position)
    return _run(plan, model, scheduler, workers, chunk, progress, retries, partial)


def _in_process(plan: Plan, items: list[Item], per: int, progress: bool | None, auto: bool,
                why: str) -> tuple[list[Chunk], str, float]:
    """The items run here pair by pair; with `auto`, the first pair is timed and the rest estimated
    (`plan.costs`): when they would take long enough to pay for a local cluster's start-up, the
    rest is left for it. (The chunks done, where they ran, the estimated seconds left; 0 when done.)"""
    done: list[Chunk] = []
    what = "sweep" if plan.how is None else "ablate"
    bar = tqdm(total=len(items), unit="site", desc=f"{what} {plan.over} in this process",
               disable=not progress_default(progress))
    try:
        for i in range(0, len(items), per):  # one pair at a time
            t = time.perf_counter()
            done.append(run_chunk(plan, items[i:i + per]))
            bar.update(per)
            if auto and i == 0:
                cost = costs(plan, sweep_site_costs(plan, first_sites(plan)), items)
                rest = (time.perf_counter() - t) * sum(cost[per:]) / max(sum(cost[:per]), 1e-9)  # seconds
                W = cores()
                if rest > CLUSTER_START * W / (W - 1):  # what W workers save pays for the start-up
                    return done, "", rest
                why = (f" (about {rest:.1f} s of work left after the first pair: a local cluster would not pay "
                       f"for its {CLUSTER_START:g} s start-up)")
                bar.set_description(f"{what} {plan.over} in this process{why}")
    finally:
        bar.close()
    return done, "this process" + why, 0.0


def _run(plan: Plan, model: Model, scheduler: Any, workers: int | None, chunk: int | None, progress: bool | None,
         retries: int, partial: bool) -> PairSweep:
    """Every (pair, site) of the plan, in process or on Dask (see `where`), assembled in order."""
    ran = ""
    try:
        g = first_sites(plan)
        items = work(plan.n_pairs, order(list(g.sites)))
        failed: list[Failed] = []
        done: list[Chunk] = []
        at = where(scheduler, workers, plan.n_pairs, bool(plan.model))
        left, say = items, ""
        if at is None or at == AUTO:
            why = "" if at == AUTO else why_here(scheduler, plan.n_pairs, bool(plan.model))
            done, ran, rest = _in_process(plan, items, len(g.sites), progress, at == AUTO, why)
            left = items[sum(len(c.items) for c in done):]
            say = f" (about {rest:.0f} s of work left after the first pair, in this process)"
        if left:
            group = blocks(g)
            cost = None if chunk is not None else costs(plan, sweep_site_costs(plan, g), left)
            try:
                got, failed, ran = run(plan, left, LOCAL if at == AUTO else at, workers, chunk, progress, retries,
                                       cost, [(p, group[k]) for p, k in left], say if at == AUTO else "")
            except ClusterError as e:
                if at != AUTO:
                    raise
                # Nobody asked for the cluster that would have paid: the rest runs here, with the same values.
                got, ran, _ = _in_process(plan, left, len(g.sites), progress, False,
                                          f" (the local cluster did not start: {e})")
            done += got
    finally:
        forget(plan.token)  # this process's runners and sites of the sweep (a worker keeps its own)
    return _assemble(plan, model, g, items, done, failed, partial, ran)


def ablation_sweep(model: Any, inputs: Any, metric: MetricArg, over: str = "resid_pre", how: str = "zero",
                   reference: Any = None, positions: str = "each", position: int | None = None, *,
                   scheduler: Any = None, workers: int | None = None, chunk: int | None = None,
                   progress: bool | None = None, retries: int = 2, partial: bool = False) -> AblationSweep:
    """Ablate each site of `over` in each input and measure `metric`: an `AblationSweep` (see the module).

    `inputs`: texts or token lists of one length, or a file (`read_inputs`). `how="zero"` sets the
    site's cells to 0; `how="mean"` to their mean over `reference` (texts or token lists of the
    same length; default: the inputs), the values `sheet.ablate(cells, how, reference)` pins, so
    `r.values[i, *site]` is input i's metric after that ablation, bit for bit. The metric reads
    each input's own run (`kl`: against the input unablated). Resample ablation is activation
    patching from another input: `dfgpt.sweep_pairs(model, [(other, input), ...], ...)`. The other
    arguments are `sweep`'s.

    >>> import dfgpt
    >>> r = ablation_sweep(dfgpt.load("sort"), ["CABACAAAA"], "logit_diff:B,C", over="head_out")
    >>> r.values.shape, r.method
    ((1, 3, 3, 9), 'zero ablation')
    """
    check_run(scheduler, workers, chunk, retries)
    if how not in HOWS:
        raise QueryError(f"how must be {' or '.join(map(repr, HOWS))}, got {how!r}; resample ablation over a "
                         "dataset is patching from another input: "
                         "dfgpt.sweep_pairs(model, [(other, input), ...], ...).")
    m = as_model(model)
    ids = as_inputs(m, dataset_inputs(inputs))
    refs: Inputs = ()
    if how == "mean":
        refs = ids if reference is None else as_inputs(m, dataset_inputs(reference))
        if len(refs[0]) != len(ids[0]):
            raise SequenceLengthError(f"the reference inputs have {len(refs[0])} tokens and the inputs {len(ids[0])}: "
                                      "a mean ablation averages the same cells, so give references of the same length.")
    elif reference is not None:
        raise QueryError("reference is what how='mean' averages over; how='zero' takes none: drop it.")
    plan = Plan.of(m, [(x, x) for x in ids], metric, over, positions, position, how, refs)
    r = _run(plan, m, scheduler, workers, chunk, progress, retries, partial)
    return AblationSweep(r.family, r.metric, ("input", *r.axes[1:]), r.coords, r.values, r.clean, r.corrupted,
                         f"{how} ablation", r.inputs, r.labels, r.cells, r.failed, r.ran_on)


def _assemble(plan: Plan, model: Model, g: Any, items: list[Any], done: list[Chunk], failed: list[Failed],
              partial: bool, ran_on: str = "this process") -> PairSweep:
    """The chunks' values in place; every site exactly once, or an error saying which were lost."""
    if failed and not partial:
        lost = sum(len(part) for part, _ in failed)
        err = failed[0][1]
        raise ClusterError(f"{len(failed)} chunk(s) ({lost} of {len(items)} sites) failed on every retry; the "
                           f"first: {type(err).__name__}: {err}. Fix the cause and run again, or pass "
                           "partial=True to keep the other sites (the failed ones are nan and listed in .failed).")
    P = plan.n_pairs
    shape = (P, *(len(c) for c in g.coords))
    values = np.full(shape, np.nan)  # [P, *site axes]
    ends = np.full((P, 2), np.nan)  # [P, (clean, corrupted)]
    seen = np.zeros(values.size, np.int64)  # [P · sites]: how often each arrived
    for ch in done:
        at = _flat(ch.items, shape)
        values.flat[at] = ch.values
        seen += np.bincount(at, minlength=values.size)
        for p, e in ch.ends.items():
            ends[p] = e
    want, in_failed = _flat(items, shape), np.sort(_flat([it for part, _ in failed for it in part], shape))
    twice, missing = int((seen > 1).sum()), np.sort(want[seen[want] == 0])
    if twice or not np.array_equal(missing, in_failed):
        raise ClusterError(f"the chunks delivered {twice} site(s) twice and {missing.size} not at all "
                           f"({in_failed.size} in failed chunks): a scheduler bug; run the sweep again.")
    s0 = model.sheet(list(plan.pairs[0][0]))
    inputs, labels = [], []
    for a, b in plan.pairs:
        inputs.append((model.decode(list(a)), model.decode(list(b))))
        lab = [s0.token_label(x) if x == y else f"{s0.token_label(x)}/{s0.token_label(y)}" for x, y in zip(a, b)]
        labels.append({"position": tuple(f"{t}:{s}" for t, s in enumerate(lab))} if "position" in g.axes else {})
    return PairSweep(g.family, metric_name(plan), ("pair", *g.axes), (tuple(range(P)), *g.coords), values,
                     ends[:, 0].copy(), ends[:, 1].copy(), "exact", tuple(inputs), tuple(labels),
                     {k: s.cells for k, s in g.sites.items()},
                     tuple((int(p), g.sites[tuple(int(i) for i in k)].cells)
                           for p, *k in zip(*np.unravel_index(missing, shape))), ran_on)


def _flat(items: list[Any], shape: tuple[int, ...]) -> np.ndarray:
    """(pair, site key) items as flat indices into a [P, *site axes] array (one loop, not one per use)."""
    if not items:
        return np.zeros(0, np.int64)
    return np.ravel_multi_index(np.array([(p, *k) for p, k in items]).T, shape)


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
    model = as_model(clean)
    plan = Plan.of(model, _pairs(corrupted), metric, over, positions, position)
    per: list[Sweep] = [attr.attribution_patch(model.sheet(list(a)), model.sheet(list(b)), plan.metric, over=over,
                                               positions=positions, position=position) for a, b in plan.pairs]
    g = first_sites(plan)
    forget(plan.token)
    r = _assemble(plan, model, g, [], [], [], False)
    vals = np.stack([s.values for s in per])  # [P, *site axes]
    return PairSweep(r.family, r.metric, r.axes, r.coords, vals, np.array([s.clean for s in per]),
                     np.array([s.corrupted for s in per]), "attribution", r.inputs, r.labels, r.cells)
