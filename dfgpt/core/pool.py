"""Value blocks for new sheets: one zeroed block per sheet, reused once nobody holds it.

A small model's sheets are made by the thousand (sweeps, the task score), and a third of making
one was allocating its 69 value arrays. A sheet takes every computed tensor as a field view of
one structured block (`Graph.record`); a block of up to `POOL_BYTES` is kept (up to `POOL` per
capacity), and handed out again, zeroed by one fill, once no sheet and no slice holds a view of it.

>>> import dfgpt
>>> g = dfgpt.load("sort-random").graph
>>> pool = BlockPool()
>>> a = pool.views(g.record(16, np.dtype("float64")))
>>> a["logit"][0, 0] = 1.0
>>> del a  # nobody holds the block now: the next sheet gets it back, zeroed
>>> b = pool.views(g.record(16, np.dtype("float64")))
>>> float(b["logit"][0, 0]), len(pool.entries[g.record(16, np.dtype("float64"))])
(0.0, 1)
"""

from __future__ import annotations

import sys
import threading

import numpy as np

__all__ = ["POOL", "POOL_BYTES", "BlockPool"]

POOL = 4  # value blocks kept per graph and capacity for new sheets to reuse
POOL_BYTES = 4 << 20  # only blocks this small: a small model's sheets are made by the thousand, a large one's
                      # block would stay resident after its sheet is gone


class BlockPool:
    """One graph's reusable value blocks, per record dtype (a capacity and a dtype)."""

    def __init__(self) -> None:
        # per record: [block, its bytes as uint8, its field views, its reference count while free]
        self.entries: dict[np.dtype, list[list]] = {}
        self._lock = threading.Lock()  # the server makes sheets on several threads

    def views(self, record: np.dtype) -> dict[str, np.ndarray]:
        """A zeroed array per field of `record`: views of a free pooled block, or of a new one."""
        with self._lock:
            pool = self.entries.setdefault(record, [])
            for entry in pool:
                block, raw, views, refs = entry
                # Free: no sheet holds its views (each is referenced by the pooled dict, the loop and
                # getrefcount's argument only), and no one holds a slice of one (every view of the
                # block, however derived, references the block itself).
                if sys.getrefcount(block) <= refs and all(sys.getrefcount(v) <= 3 for v in views.values()):
                    raw.fill(0)
                    return dict(views)
            block = np.zeros((), record)
            views = {n: block[n] for n in record.names or ()}
            if len(pool) < POOL and record.itemsize <= POOL_BYTES:
                raw = block.reshape(1).view(np.uint8)  # [bytes]: the block, zeroed by one fill
                entry = [block, raw, views, 0]
                pool.append(entry)
                entry[3] = sys.getrefcount(block)  # its references while free, counted as the loop above counts them
            return dict(views)
