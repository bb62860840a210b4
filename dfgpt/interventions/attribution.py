"""Attribution patching: a sweep approximated to first order, in one backward pass.

The effect of patching a site is approximated by Σ over its cells of (clean − corrupted)
· ∂metric/∂cell, the gradient taken at the corrupted run (pins act as constants: nothing
flows through them). One forward of each sheet and one reverse sweep give every site of
every family; the result is a `Sweep` like the exact one (`method="attribution"`), and
`exact.compare(approx)` reports the correlation and the worst sites.

>>> import dfgpt
>>> m = dfgpt.load("sort")
>>> clean, bad = m.sheet("CABACAAAA"), m.sheet("CACACAAAA")
>>> approx = attribution_patch(clean, bad, "logit_diff:B,C", over="head_out", positions="all")
>>> approx
Sweep(head_out, logit_diff:B,C@8, layer 3 × head 3, attribution)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.autodiff import backward, pinned_cells
from .metrics import Metric, parse_metric
from .patching import check_pair
from .sites import sites
from .sweep import Sweep, result

if TYPE_CHECKING:
    from ..cells import Cells

__all__ = ["attribution_patch", "metric_gradient"]


def metric_gradient(sheet: Cells, metric: Metric) -> dict[str, np.ndarray]:
    """{tensor: ∂metric/∂cell} over the computed tensors, logical shapes, in one reverse sweep."""
    t, dz = metric.dlogit(sheet)  # position, [V]
    eng = sheet.engine
    g = sheet.graph
    specs = g.specs
    Tn = t + 1  # rows after the metric's position are outside its cone (the causal mask)
    rows = np.zeros(eng.T, bool)
    rows[:Tn] = True
    eng.ensure({n: rows for n in g.computed})

    def cut(name: str, a: np.ndarray) -> np.ndarray:
        return a[tuple(slice(0, Tn) if ax in ("pos", "key") else slice(None) for ax in specs[name].axes)]

    V: dict[str, np.ndarray] = {n: eng.values[n] for n in g.parameters}
    V["temperature"] = eng.values["temperature"]
    V["tokens"] = eng.view("tokens")[:Tn][None]
    for n in g.computed:
        V[n] = cut(n, eng.view(n))[None]  # [1, ...]
    seed = np.zeros((1, Tn, sheet.config.vocab_size))
    seed[0, t] = dz
    G = backward(g, V, {"logit": seed}, pinned_cells(eng.pins, V))
    out: dict[str, np.ndarray] = {}
    for n in g.computed:
        full = np.zeros(eng.shape(n))
        if n in G:
            full[tuple(slice(0, k) for k in G[n].shape[1:])] = G[n][0]
        out[n] = full
    return out


def attribution_patch(clean: Cells, corrupted: Cells, metric: str | Callable[[Any], float] | Metric,
                      over: str = "resid_pre", positions: str = "each", position: int | None = None) -> Sweep:
    """The sweep of `dfgpt.sweep` to first order: Σ (clean − corrupted) · gradient per site, plus the
    corrupted metric (so values are on the same scale as the exact sweep's)."""
    check_pair(corrupted, clean, "clean", "the corrupted one")
    m = parse_metric(metric, clean, position)
    g = sites(corrupted, over, positions)
    grads = metric_gradient(corrupted, m)
    clean_v, corr_v = m(clean), m(corrupted)
    values: dict[tuple[int, ...], float] = {}
    for key, site in g.sites.items():
        total = 0.0
        for tensor, mask in site.masks.items():
            clean.compute({tensor: mask})
            corrupted.compute({tensor: mask})
            d = clean.engine.view(tensor)[mask].astype(np.float64) - corrupted.engine.view(tensor)[mask]
            total += float(np.dot(d, grads[tensor][mask]))
        values[key] = corr_v + total
    return result(g, m, clean, corrupted, values, clean_v, corr_v, "attribution")
