"""A sweep over a dataset: the metric per pair (or input) and per site, that axis first, and the mean.

`r.values[i, ...]` is pair i's sweep (what `dfgpt.sweep` gives for that pair alone, bit for
bit), `r.mean()` the `Sweep` of the mean over pairs (clean and corrupted averaged too), and
`r.pair(i)` pair i's `Sweep`. Sites a failed chunk did not deliver (`partial=True`) are nan,
and listed in `r.failed`.

An `AblationSweep` is the same over a dataset of single inputs (an `input` axis first):
`r.values[i, ...]` is the metric of input i with each site ablated, `r.base[i]` its metric
unablated. An ablation has one run, so its `clean` and `corrupted` are both the unablated
metric, and `top()` ranks the sites by how far ablating moves it.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import IndexError_, QueryError
from ..interventions.sweep import Sweep

__all__ = ["AblationSweep", "PairSweep"]


@dataclass(frozen=True)
class PairSweep:
    """`values[pair, ...]` along `axes` (`pair` first); `clean[pair]`, `corrupted[pair]`: unpatched metrics."""

    family: str
    metric: str
    axes: tuple[str, ...]
    coords: tuple[tuple[Any, ...], ...]
    values: np.ndarray  # [P, *site axes]
    clean: np.ndarray  # [P]
    corrupted: np.ndarray  # [P]
    method: str = "exact"
    inputs: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # per pair: (clean, corrupted) as text
    labels: tuple[dict[str, tuple[str, ...]], ...] = field(default=(), repr=False)  # per pair: axis -> labels
    cells: dict[tuple[int, ...], str] = field(default_factory=dict, repr=False)  # site key -> its cells
    failed: tuple[tuple[int, str], ...] = field(default=(), repr=False)  # (pair, cells) not delivered
    ran_on: str = field(default="this process", repr=False, compare=False)  # where it ran, and why there

    def __repr__(self) -> str:
        shape = " × ".join(f"{a} {n}" for a, n in zip(self.axes, self.values.shape))
        lost = f", {len(self.failed)} sites failed" if self.failed else ""
        return f"{type(self).__name__}({self.family}, {self.metric}, {shape}, {self.method}{lost})"

    @property
    def n_pairs(self) -> int:
        return int(self.values.shape[0])

    def pair(self, i: int) -> Sweep:
        """Pair i's sweep: the same values `dfgpt.sweep(clean_i, corrupted_i, ...)` gives."""
        unit = self.axes[0]
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -self.n_pairs <= i < self.n_pairs:
            raise IndexError_(f"{unit} {i!r} is out of range: this sweep has {unit}s 0..{self.n_pairs - 1}.")
        i = int(i) % self.n_pairs
        return Sweep(self.family, self.metric, self.axes[1:], self.coords[1:], self.values[i],
                     float(self.clean[i]), float(self.corrupted[i]), self.method,
                     self.labels[i] if self.labels else {}, self.cells)

    def mean(self) -> Sweep:
        """The mean over pairs of every site's metric, and of the clean and corrupted metrics."""
        return Sweep(self.family, f"{self.metric} (mean of {self.n_pairs} {self.axes[0]}s)", self.axes[1:],
                     self.coords[1:],
                     self.values.mean(axis=0), float(self.clean.mean()), float(self.corrupted.mean()),
                     self.method, {}, self.cells)

    def value(self, **at: int) -> float:
        """One value by axis name, `pair` included: `r.value(pair=0, layer=1, position=4)`."""
        if set(at) != set(self.axes):
            raise QueryError(f"value takes every axis by name: {', '.join(self.axes)}; got {', '.join(at) or 'none'}.")
        return float(self.values[tuple(at[a] for a in self.axes)])

    def top(self, n: int = 5) -> list[tuple[str, float]]:
        """The sites whose mean moves most from the mean corrupted metric (ties by site order)."""
        return self.mean().top(n)

    def table(self, digits: int = 3) -> str:
        """The mean as text, then each pair's clean and corrupted metric."""
        lines = [self.mean().table(digits), "pair" + "clean".rjust(digits + 9) + "corrupted".rjust(digits + 9)]
        for i in range(self.n_pairs):
            what = f"  {self.inputs[i][0]} / {self.inputs[i][1]}" if self.inputs else ""
            lines.append(f"{i:>4}" + f"{self.clean[i]:+.{digits}f}".rjust(digits + 9)
                         + f"{self.corrupted[i]:+.{digits}f}".rjust(digits + 9) + what)
        if self.failed:
            lines.append(self._failed())
        return "\n".join(lines)

    def _failed(self) -> str:
        return f"{len(self.failed)} sites failed (nan): " + ", ".join(
            f"{self.axes[0]} {p} {c}" for p, c in self.failed[:5]) + (" ..." if len(self.failed) > 5 else "")

    def _repr_html_(self) -> str:
        head = f"<p><b>{html.escape(repr(self))}</b>: the mean over {self.axes[0]}s</p>"
        return head + self.mean()._repr_html_()


@dataclass(frozen=True, repr=False)
class AblationSweep(PairSweep):
    """`values[input, ...]`: each input's metric with each site ablated (zero or mean); `base[input]` unablated."""

    @property
    def base(self) -> np.ndarray:
        """[input]: each input's metric, nothing ablated."""
        return self.clean

    @property
    def texts(self) -> tuple[str, ...]:
        """Each input as text."""
        return tuple(a for a, _ in self.inputs)

    def input(self, i: int) -> Sweep:
        """Input i's ablation sweep (its `clean` and `corrupted` are both its unablated metric)."""
        return self.pair(i)

    def table(self, digits: int = 3) -> str:
        """The mean as text, then each input's unablated metric."""
        mean = self.mean()
        lines = mean.table(digits).splitlines()
        lines[0] = f"{self.method} sweep of {mean.metric} over {self.family} (unablated {mean.clean:+.{digits}f})"
        lines.append("input" + "unablated".rjust(digits + 9))
        for i in range(self.n_pairs):
            what = f"  {self.texts[i]}" if self.inputs else ""
            lines.append(f"{i:>5}" + f"{self.clean[i]:+.{digits}f}".rjust(digits + 9) + what)
        if self.failed:
            lines.append(self._failed())
        return "\n".join(lines)
