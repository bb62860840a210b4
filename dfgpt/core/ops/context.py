"""What ops read from outside themselves: an engine's values and sizes, a sheet's cell names.

`RowContext` is what computing rows needs (the engine, or a sweep's replay); `OpContext` adds
what the exact cell index maps need. `Engine` satisfies both as it is. `SheetView` is what an
op's formula text and SymPy reads need from a sheet.

>>> v = SheetView(name=lambda t, i: f"{t}{list(i)}", dims=lambda t: (6, 48), tokens=np.array([0, 2]))
>>> v.name("emb", (1, 3)), v.dims("emb")[1]
('emb[1, 3]', 48)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = ["Key", "OpContext", "RowContext", "SheetView"]

Key = tuple[str, tuple[int, ...]]  # one cell: (tensor, index)


class RowContext(Protocol):
    """What an op's `forward` reads: the values it computes in, at a capacity, exact or fast."""

    @property
    def values(self) -> dict[str, np.ndarray]: ...
    @property
    def cap(self) -> int: ...
    @property
    def exact(self) -> bool: ...


class OpContext(RowContext, Protocol):
    """What an op's cell index maps read: the length, the tokens and each tensor's logical shape."""

    @property
    def T(self) -> int: ...
    @property
    def tokens(self) -> np.ndarray: ...
    def shape(self, name: str) -> tuple[int, ...]: ...


@dataclass(frozen=True)
class SheetView:
    """A sheet as an op's formula text and SymPy reads see it.

    `name(tensor, idx)`: a cell's printed name; `dims(tensor)`: a tensor's full dimensions
    (its spec's); `tokens`: the input's token ids, [T]; `temperature`: the sampling temperature
    (0 is greedy: the logits' softmax is one-hot).
    """

    name: Callable[[str, tuple[int, ...]], str]
    dims: Callable[[str], tuple[int, ...]]
    tokens: np.ndarray
    temperature: float = 1.0
