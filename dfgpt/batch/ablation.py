"""An ablation sweep's inner loop: one input's sites, each set to zero or to its mean over reference inputs.

`Ablator(sheet, metric, sites, reference)` gives, for a site's key, the metric of the input
with the site's cells ablated: exactly what `sheet.ablate(cells, how, reference=...)` and then
reading the metric gives, without writing the sheet. A spec metric recomputes the site's cone
on a `Replay`'s copy of the values (row-canonical, so bit for bit a forward's); a callable
metric ablates on a private sheet (the pins `sheet.ablate` makes, in a trial that puts everything
back). Each call leaves the state as it found it, so any chunk of sites in any order gives the
values of the whole sweep.

`Reference(model, inputs, sites)` holds the reference inputs' values of the tensors the sites
hold; `reference.pins(key)` is the site's mean over them, summed as `ablate(how="mean")` sums
it (one `[reference, cell]` array, averaged over its first axis), so the pins are the same bits.

>>> import dfgpt
>>> from dfgpt.interventions.metrics import parse_metric
>>> from dfgpt.interventions.sites import sites
>>> m = dfgpt.load("sort")
>>> s = m.sheet("CABACAAAA")
>>> metric, g = parse_metric("logit_diff:B,C", s), sites(s, "head_out")
>>> zero = Ablator(s, metric, g)
>>> _ = s.ablate(g.sites[(0, 1, 8)].cells)
>>> zero((0, 1, 8)) == metric(s)
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import QueryError
from ..interventions.metrics import Metric
from ..interventions.patching import scratch
from ..interventions.replay import Lockstep, Replay
from ..interventions.sites import Sites
from ..interventions.sweep import blocks

if TYPE_CHECKING:
    from ..cells import Cells
    from ..models.weights import Weights

__all__ = ["HOWS", "Ablator", "Reference"]

HOWS = ("zero", "mean")  # resample ablation over a dataset is patching from another input: dfgpt.sweep

Pins = list[tuple[str, tuple[int, ...], float]]


class Reference:
    """The reference inputs' values of every tensor a site holds, and each site's mean over them."""

    def __init__(self, model: Weights, inputs: Sequence[Sequence[int]], g: Sites) -> None:
        self.g = g
        tensors = {t for site in g.sites.values() for t in site.masks}
        self.arrays: list[dict[str, np.ndarray]] = []  # per reference: {tensor: its values}
        for ids in inputs:
            s = model.sheet(list(ids))  # type: ignore[attr-defined]
            self.arrays.append({t: np.array(s.values(t), dtype=np.float64) for t in tensors})
        self._pins: dict[tuple[int, ...], Pins] = {}

    def pins(self, key: tuple[int, ...]) -> Pins:
        """The site's cells pinned to their mean over the references (computed once per site)."""
        got = self._pins.get(key)
        if got is None:
            masks = self.g.sites[key].masks
            per = np.array([np.concatenate([a[t][m] for t, m in masks.items()]) for a in self.arrays])  # [R, n]
            mean = per.mean(axis=0)  # [n]
            cells = [(t, tuple(int(i) for i in idx)) for t, m in masks.items() for idx in np.argwhere(m)]
            got = self._pins[key] = [(t, idx, float(v)) for (t, idx), v in zip(cells, mean)]
        return got


def zero_pins(masks: dict[str, np.ndarray]) -> Pins:
    """Every selected cell pinned to 0, in the order `ablate(how="zero")` pins them."""
    return [(t, tuple(int(i) for i in idx), 0.0) for t, m in masks.items() for idx in np.argwhere(m)]


class Ablator:
    """One input's ablation sweep, a site at a time: `ablator(key)` is the metric with that site ablated.

    `reference`: None ablates to zero; a `Reference` to the site's mean over its inputs.
    """

    def __init__(self, sheet: Cells, m: Metric, g: Sites, reference: Reference | None = None) -> None:
        self.m, self.g, self.reference = m, g, reference
        self.lockstep: Lockstep | None = None
        self.blocks = blocks(g)
        self.work: Cells | None = None
        if m.of_row is not None and m.position is not None:  # a spec: only logit[position] is read
            cols = m.tokens if m.kind in ("logit_diff", "logit") else None
            self.lockstep = Lockstep(Replay(sheet, {"logit": np.arange(sheet.T) == m.position}, cols))
        else:
            self.work = scratch(sheet)  # a callable may read any cell: pins on a private sheet

    def pins(self, key: tuple[int, ...]) -> Pins:
        if self.reference is None:
            return zero_pins(self.g.sites[key].masks)
        return self.reference.pins(key)

    def __call__(self, key: tuple[int, ...]) -> float:
        return self.many([key])[0]

    def many(self, keys: list[tuple[int, ...]]) -> list[float]:
        """The metric with each site ablated, in the order of `keys` (replayed sites run in lockstep)."""
        lockstep, of_row, at = self.lockstep, self.m.of_row, self.m.position
        if lockstep is not None and of_row is not None and at is not None:
            return lockstep.run([self.pins(k) for k in keys], lambda r: of_row(r.values["logit"][at]),
                                [self.blocks[k] for k in keys])
        return [self._edited(k) for k in keys]

    def _edited(self, key: tuple[int, ...]) -> float:
        work = self.work
        if work is None:  # made in __init__ whenever there is no replay
            raise QueryError("an ablation sweep with a callable metric needs its private sheet.")
        eng = work.engine
        with eng.trial():  # the pins sheet.ablate makes, on the private sheet; all put back on exit
            for t, idx, v in self.pins(key):
                eng.pin(t, idx, v)
            return self.m(work)
