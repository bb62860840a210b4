"""A softmax's shifted exponential exp((score - max) / τ), shared by its sum and its output."""

from __future__ import annotations

from typing import Any

import numpy as np

from .causal import _mask_later

__all__ = ["_shifted_exp", "greedy", "temperature_of"]


def _shifted_exp(vals: dict[str, np.ndarray], score: str, top: str, temp: str | None, sel: Any,
                 later: Any) -> np.ndarray:
    """exp((score - max) / τ) for rows `sel`: [H, R, cap] for attention (`later` from `_later_of`),
    [R, V] for logits."""
    s, mx = vals[score], vals[top]
    if s.ndim == 3:
        sr, mr = s[:, sel], mx[:, sel][..., None]
    else:
        sr, mr = s[sel], mx[sel][:, None]
    # The maximum is exp(0) even when it is infinite (inf - inf would be nan): a softmax over
    # one key stays 1 however large its score, as the cone's "cannot matter" claims.
    z = sr - mr
    z[sr == mr] = 0.0
    if s.ndim == 3:
        _mask_later(z, later, -np.inf)  # the causal mask
    if temp is not None:
        t = vals[temp]
        if t == 0:  # greedy: exp gives one-hot on the first largest entry (ties to the lowest id)
            return greedy(z)
        if t != 1:  # x / 1 is x, bit for bit
            z /= t
    np.exp(z, out=z)
    return z


def greedy(z: np.ndarray) -> np.ndarray:
    """The temperature-0 softmax numerator: 1 at the first largest entry of each row, 0 elsewhere.

    The limit τ → 0+ of exp(z / τ) / Σ, except that a tie goes to the lowest index (the limit
    would split it), so a temperature-0 sheet's `prob` is exactly what greedy decoding picks.
    [..., V] -> [..., V]
    """
    out = np.zeros_like(z)
    np.put_along_axis(out, np.argmax(z, axis=-1)[..., None], 1.0, axis=-1)
    return out


def temperature_of(ins: tuple[str, ...], V: dict[str, np.ndarray], k: int) -> float:
    """The batched forward's τ: input k's value when the op reads a temperature, else 1."""
    return float(V[ins[k]]) if len(ins) > k else 1.0
