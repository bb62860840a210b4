"""Cell masks: boolean arrays over a tensor's cells, the currency of the ops' index maps."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Mask", "_rowany"]

# numpy bool arrays; numpy's stubs type `.any(axis=...)` as `bool | ndarray`, so this stays loose.
Mask = Any


def _rowany(m: Mask) -> np.ndarray:
    """[T, ...] -> [T]: does any cell of each row appear?

    >>> _rowany(np.array([[False, True], [False, False]])).tolist()
    [True, False]
    """
    return m.reshape(m.shape[0], -1).any(axis=1)
