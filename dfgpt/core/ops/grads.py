"""Gradients as the VJPs accumulate them: `Grads`, the parameters' slots carved from one block, and `acc`.

>>> g = Grads({"w": np.zeros((2, 3), np.float32)})
>>> acc(g, {"w": np.zeros((2, 3), np.float32)}, "w", np.ones((2, 3), np.float32))
>>> acc(g, {"w": np.zeros((2, 3), np.float32)}, "w", np.ones((2, 3), np.float32))
>>> g["w"].sum(), g["w"].dtype
(np.float32(12.0), dtype('float32'))
"""

from __future__ import annotations

import numpy as np

from .. import arena

__all__ = ["Arrays", "Grads", "acc", "acc_temperature", "new_slot", "param_sum"]

Arrays = dict[str, np.ndarray]


class Grads(dict[str, np.ndarray]):
    """backward's {tensor: gradient}, the parameters' gradients carved out of one block of memory.

    At GPT-2 size the parameter gradients are ~500 MB on every backward: one block from
    dfgpt.core.arena, reused by the next call once this one's result is dropped, instead
    of ~150 fresh arrays whose page faults cost more than the matmuls. Slots are handed out
    once, untouched until written, so parameters outside the cone cost nothing.
    """

    def __init__(self, params: dict[str, np.ndarray]) -> None:
        super().__init__()
        self._offsets: dict[str, int] = {}
        total = 0
        for name, a in params.items():
            self._offsets[name] = total
            total += -(-a.size // 16) * 16  # slots start 64-byte aligned (float32), as BLAS likes
        self._total = total
        self._blocks: dict[np.dtype, np.ndarray] = {}

    def slot(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
        """An uninitialised array for a parameter's gradient, or None (not a parameter, or taken)."""
        off = self._offsets.pop(name, None)
        if off is None:
            return None
        block = self._blocks.get(dtype)
        if block is None:
            block = self._blocks[dtype] = arena.block(self._total, dtype)
        return block[off : off + int(np.prod(shape))].reshape(shape)


def new_slot(G: Arrays, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
    """A fresh parameter slot for `name` when G is a `Grads` that has none yet, else None."""
    return G.slot(name, shape, np.dtype(dtype)) if isinstance(G, Grads) and name not in G else None


def acc(G: Arrays, V: Arrays, name: str, g: np.ndarray, own: bool = False) -> None:
    """G[name] += g. `own`: g is a fresh array nobody else holds, so G may keep it uncopied."""
    if name in ("tokens", "temperature"):
        return
    if name in G:
        have = G[name]
        if have.shape == np.shape(g) and np.result_type(have, g) == have.dtype:
            have += g  # G's arrays are its own (made below): add in place, no new array per reader
        else:
            G[name] = have + g
    else:
        dtype = np.result_type(g, V[name])
        slot = None if own else new_slot(G, name, np.shape(g), dtype)
        if slot is not None:
            np.copyto(slot, g)
            G[name] = slot
        else:
            G[name] = g if own and g.dtype == dtype and g.flags.c_contiguous else np.array(g, dtype=dtype)


def param_sum(g: np.ndarray, ndim: int) -> np.ndarray:
    """Sum a batched gradient over its leading axes down to a parameter's ndim."""
    return g.reshape(-1, *g.shape[g.ndim - ndim :]).sum(axis=0) if g.ndim > ndim else g


def acc_temperature(G: Arrays, name: str, e: np.ndarray, ge: np.ndarray, z: np.ndarray, tau: float) -> None:
    """∂/∂τ of exp(z) with z = (s - max) / τ is exp(z) · (-z / τ); masked keys (e = 0) add nothing."""
    d = float(np.sum(np.where(e > 0, ge * (-z / tau), 0.0)))
    G[name] = np.asarray(G[name] + d if name in G else d, dtype=np.float64)
