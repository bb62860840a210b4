"""Scratch memory that stays mapped between calls, so the second backward pays no page faults.

A backward at GPT-2 size writes ~500 MB of parameter gradients and influence as much again
of scores. Fresh memory from the kernel arrives zeroed page by page; on a virtual machine
that zeroing costs more than the arithmetic (1–2 s of system time against 0.5 s of
matmuls). `block` hands out 1-D arrays from a small pool of blocks that are kept once
their last user lets go, so a repeated influence or grad call reuses the pages it faulted
in before. A block is free when nothing but the pool refers to it: every numpy view of it
holds a reference to it, so CPython's reference count says whether a result built on it
(a Gradient, an Influence) is still alive.

>>> a = block(1000, np.float32)
>>> a.size, a.dtype
(1000, dtype('float32'))
>>> first = id(a.base)
>>> del a
>>> b = block(900, np.float32)  # the same pages again, now that nobody holds them
>>> id(b.base) == first
True
>>> c = block(900, np.float32)  # b still holds that block: a new one
>>> id(c.base) == first
False
"""

from __future__ import annotations

import sys
import threading

import numpy as np

__all__ = ["KEEP_BYTES", "block", "held", "release"]

KEEP_BYTES = 2 << 30  # free blocks kept for reuse, most recently used first (a GPT-2 influence keeps ~1.2 GB)
_SLACK = 1.125  # room for a slightly larger request next time (a cone one row longer)

_blocks: list[np.ndarray] = []
_lock = threading.Lock()  # the explorer serves requests on worker threads


def _free(i: int) -> bool:
    # the list's reference and getrefcount's argument: nobody else holds the block
    return sys.getrefcount(_blocks[i]) <= 2


def block(size: int, dtype: np.dtype | type) -> np.ndarray:
    """A 1-D uninitialised array of `size` elements of `dtype`, from a reused block when one is free.

    Reuse takes a free block of the same dtype at least `size` long and at most twice it
    (a small call does not pin a huge block); otherwise a new block is made, and the least
    recently used free blocks beyond `KEEP_BYTES` are let go. A request larger than `KEEP_BYTES`
    (TinyLlama's 4 GB of scores) is a plain array, freed with its last user.
    """
    dt = np.dtype(dtype)
    if size * dt.itemsize > KEEP_BYTES:  # never kept once free: pooling it would only hold its memory longer
        return np.empty(max(size, 1), dt)[:size]
    with _lock:
        best = None
        for i in range(len(_blocks)):  # by index: a loop variable would hold a reference itself
            if _blocks[i].dtype == dt and size <= _blocks[i].size <= 2 * max(size, 1) and _free(i):
                if best is None or _blocks[i].size < _blocks[best].size:
                    best = i
        if best is not None:
            b = _blocks.pop(best)
            _blocks.append(b)  # most recently used last
            return b[:size]
        b = np.empty(max(int(size * _SLACK), 1), dt)
        _blocks.append(b)
        _trim(KEEP_BYTES)
        return b[:size]


def _trim(keep: int) -> None:
    kept = 0
    for i in reversed(range(len(_blocks))):  # most recently used first
        if _free(i):
            kept += _blocks[i].nbytes
            if kept > keep:
                del _blocks[i]


def release() -> int:
    """Let go of every free block (bytes released); blocks still in use stay with their users.

    >>> release() >= 0
    True
    """
    with _lock:
        before = sum(b.nbytes for b in _blocks)
        _trim(0)
        return before - sum(b.nbytes for b in _blocks)


def held() -> tuple[int, int]:
    """(bytes in blocks still in use, bytes in free blocks kept for reuse)."""
    with _lock:
        used = sum(_blocks[i].nbytes for i in range(len(_blocks)) if not _free(i))
        return used, sum(b.nbytes for b in _blocks) - used
