"""Fast mode's batches of rows: which rows ran together, so a recompute repeats their bits; and
the bitwise comparison that decides a recomputed row's cut-off.

In fast mode (not exact) a row's bits may depend on the rows computed in the same call (BLAS
blocks a product by its row count), so a recompute repeats a row's bits only when it runs the
same batch. `Store.batch_T` records when that holds for every row: the length T0 at which each
row 0..T0-1 holding a value ran in one batch of rows 0..T0-1 of its tensor (rows past T0 may
have run alone: appends); None before any read, -1 once a row below it ran in another batch.

>>> note_batch(None, 4, np.arange(4)), note_batch(4, 5, np.array([4])), note_batch(4, 4, np.array([2, 3]))
(4, 4, -1)
"""

from __future__ import annotations

import numpy as np

__all__ = ["note_batch", "note_batches", "rows_moved"]


def note_batch(batch_T: int | None, T: int, rows: np.ndarray) -> int | None:
    """`batch_T` after one tensor's kernel ran these rows (sorted) as one batch at length T."""
    n = len(rows)
    if batch_T == -1 or not n:
        return batch_T
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    if lo == 0 and hi == n == T and batch_T in (None, T):
        return T
    if batch_T is None or lo < batch_T:  # a row below the whole prefix ran in another batch
        return -1
    return batch_T


def note_batches(batch_T: int | None, T: int, ran: np.ndarray) -> int | None:
    """`note_batch` for a clean read's rows that ran, [tensors, T] (each tensor's rows one batch).

    >>> note_batches(None, 3, np.array([[True, True, True], [False, False, False]]))
    3
    """
    some = ran.any(axis=1)
    if batch_T == -1 or not some.any():
        return batch_T
    if batch_T is None or batch_T == T:
        return T if bool(ran[some].all()) else -1
    return -1 if bool(ran[:, :batch_T].any()) else batch_T


def rows_moved(new: np.ndarray, old: np.ndarray, ra: int) -> np.ndarray:
    """[rows]: which rows (along axis `ra`) of a recompute differ from their old value.

    Bitwise, so that -0.0 and 0.0 differ (they do downstream: 1/x, signs); and a row holding a
    NaN counts as changed, as `new != old` says of NaN. Bit patterns that differ are unequal
    floats or signed zeros, so this is `((new != old) | (signbit(new) != signbit(old))).any()`
    per row, in one pass over the rows' bits (a GPT-2 logit tensor is 3.2M cells).

    >>> a = np.array([[0.0, 1.0], [2.0, np.nan], [1.0, 1.0]], np.float32)
    >>> rows_moved(a, np.array([[-0.0, 1.0], [2.0, np.nan], [1.0, 1.0]], np.float32), 0).tolist()
    [True, True, False]
    """
    n = new.shape[ra]
    if new.dtype.kind != "f":
        return np.moveaxis(new != old, ra, 0).reshape(n, -1).any(axis=1)  # type: ignore[no-any-return]
    bits = np.dtype(f"u{new.dtype.itemsize}")
    diff = np.moveaxis(new.view(bits) != old.view(bits), ra, 0).reshape(n, -1).any(axis=1)
    if not diff.all():  # rows bitwise the same: changed only if they hold a NaN (NaN != NaN)
        same = np.flatnonzero(~diff)
        rows = np.moveaxis(np.take(new, same, axis=ra), ra, 0)  # [rows, ...]
        diff[same] = np.isnan(rows).reshape(len(same), -1).any(axis=1)
    return diff  # type: ignore[no-any-return]
