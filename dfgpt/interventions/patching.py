"""Activation patching, path patching and ablation: pins of one sheet's cells, with a receipt.

`patch(sheet, source, cells)` pins the selected computed cells of `sheet` to their values
in `source` (another sheet of the same model and length). With `receivers`, only those
cells read the source's values (path patching): each receiver is computed from the
patched cells and this sheet's other values, then pinned; every other reader keeps this
sheet's values. `ablate` pins cells to zero, to their mean over reference sheets, or to
their values in one reference chosen with a seed. Every one is one edit of
`dfgpt.edits.edits` (a `Receipt`; `undo` and `redo` work), and a refused call changes
nothing. Only the cone of the pinned cells is recomputed on the next read.

>>> import dfgpt
>>> m = dfgpt.load("sort-random")
>>> clean, corrupted = m.sheet("CABACA"), m.sheet("CABACC")
>>> r = corrupted.patch(clean, "h[2].out[5]")
>>> corrupted.value("logit[5][A]") == clean.value("logit[5][A]")
True
>>> _ = corrupted.undo()
>>> corrupted.value("logit[5][A]") == m.sheet("CABACC").value("logit[5][A]")
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..core.evaluate import Engine
from ..edits.edits import pin_many
from ..edits.receipts import Receipt
from ..errors import EditError, QueryError, show

if TYPE_CHECKING:
    from ..cells import Cells
    from ..core.evaluate import Mask

__all__ = ["ablate", "check_pair", "patch", "scratch", "selection", "site_pins"]

Pins = list[tuple[str, tuple[int, ...], float]]  # (tensor, index, value) per pinned cell


def check_pair(sheet: Cells, other: Cells, what: str = "source", this: str = "this one") -> None:
    """Refuse a sheet of another model (config or weights) or another length."""
    if not hasattr(other, "engine") or not hasattr(other, "graph"):
        raise EditError(f"the {what} must be a sheet (model.sheet(text)), got {type(other).__name__}.")
    if other.config != sheet.config:
        raise EditError(
            f"the {what} sheet is of another model ({other.config.name or 'gpt'}, {other.config.n_layer} layers, "
            f"n_embd {other.config.n_embd}) than {this} ({sheet.config.name or 'gpt'}, {sheet.config.n_layer} "
            f"layers, n_embd {sheet.config.n_embd}); make both sheets with the same model: model.sheet(text)."
        )
    a, b = sheet.engine.values, other.engine.values
    for n in sheet.graph.parameters:
        if a[n] is not b[n] and not np.array_equal(a[n], b[n]):
            raise EditError(
                f"the {what} sheet has other weights than {this} ({n} differs: another checkpoint, or an "
                "edited weight); patch between sheets of the same model with the same weights."
            )
    if other.T != sheet.T:
        raise EditError(
            f"the {what} sheet has {other.T} positions and {this} {sheet.T}: cells of one are not the cells "
            "of the other; patch between inputs of the same length (pad or crop one of them)."
        )


def _masked(sheet: Cells, tensor: str, m: Mask) -> Mask:
    """Drop the causal mask's cells (a key after the position): they read nothing and nothing reads them."""
    axes = sheet.graph.specs[tensor].axes
    if "key" not in axes:
        return m
    pos, key = axes.index("pos"), axes.index("key")
    T = sheet.T
    keep = np.arange(T)[:, None] >= np.arange(T)[None, :]  # [pos, key]
    shape = [1] * m.ndim
    shape[pos], shape[key] = T, T
    return m & keep.reshape(shape)


def selection(sheet: Cells, cells: str | Sequence[str], what: str = "cells") -> dict[str, Mask]:
    """{tensor: mask} of computed cells (without causally masked ones); parameters and tokens refused."""
    texts = [cells] if isinstance(cells, str) else list(cells) if isinstance(cells, (list, tuple)) else None
    if not texts or not all(isinstance(t, str) for t in texts):
        raise EditError(f"{what}: expected a cell selection like 'h[1].out[5]' or a list of them, got {cells!r}.")
    out: dict[str, Mask] = {}
    for text in texts:
        for tensor, m in sheet.masks(text).items():
            if sheet.graph.specs[tensor].kind != "computed":
                raise EditError(
                    f"{what}: {text!r} selects {tensor}, a {sheet.graph.specs[tensor].kind}: patching pins "
                    "activations (computed cells); change a weight or a token with sheet.set instead."
                )
            m = _masked(sheet, tensor, m)
            out[tensor] = out[tensor] | m if tensor in out else m
    out = {k: v for k, v in out.items() if v.any()}
    if not out:
        raise EditError(f"{what}: {cells!r} selects no cell that reads anything (only causally masked ones).")
    return out


def site_pins(source: Cells, masks: dict[str, Mask], compute: bool = True) -> Pins:
    """The source's values of the selected cells, as pins (computing what is needed, unless the
    caller already did)."""
    if compute:
        source.compute(masks)
    out: Pins = []
    for tensor, m in masks.items():
        vals = source.engine.view(tensor)[m]
        out.extend((tensor, tuple(int(i) for i in idx), float(v)) for idx, v in zip(np.argwhere(m), vals))
    return out


def scratch(sheet: Cells) -> Cells:
    """A private sheet of the same class on a fork of this sheet's engine: its weights (shared until
    written), tokens, temperature, pins and computed values; nothing done to it reaches this sheet.

    >>> import dfgpt
    >>> s = dfgpt.load("sort-random").sheet("CABACA")
    >>> w = scratch(s)
    >>> _ = w.set("h[0].out[5][0]", 1.0)
    >>> w.state("h[0].out[5][0]"), s.state("h[0].out[5][0]")
    ('pinned', 'unset')
    """
    eng = sheet.engine
    c = type(sheet)(sheet.model, sheet.tokens, float(eng.values["temperature"]), eng.exact)
    c.engine = eng.fork()
    return c


def patch(sheet: Cells, source: Cells, cells: str | Sequence[str],
          receivers: str | Sequence[str] | None = None) -> Receipt:
    """Pin the selected cells to their values in `source`; with `receivers`, path patching.

    Path patching: only the receivers read the source's values of `cells` (each receiver
    is computed by its own formula from those values and this sheet's other values, in
    graph order, so a receiver reading another receiver sees it patched); every receiver
    must read a patched cell directly (`sheet.dependents(cells)` lists the candidates).

    >>> import dfgpt
    >>> m = dfgpt.load("sort-random")
    >>> clean, bad = m.sheet("CABACA"), m.sheet("CABACC")
    >>> r = bad.patch(clean, "h[1].out[5]", receivers="h[2].mid[5]")  # the skip path only
    >>> _ = bad.values("logit")
    >>> r.action, bad.state("h[2].mid[5][0]"), bad.state("h[1].out[5][0]")
    ('patch', 'pinned', 'fresh')
    """
    check_pair(sheet, source)
    masks = selection(sheet, cells)
    if receivers is None:
        return pin_many(sheet, "patch", site_pins(source, masks))
    return pin_many(sheet, "patch", _path_pins(sheet, masks, site_pins(source, masks), receivers))


def _path_pins(sheet: Cells, senders: dict[str, Mask], values: Pins, receivers: str | Sequence[str]) -> Pins:
    """The receivers' values when only they read the senders' patched values (see `patch`)."""
    recv = selection(sheet, receivers, "receivers")
    eng = sheet.engine
    for tensor, m in recv.items():  # every receiver reads a patched cell directly
        if tensor in senders and (m & senders[tensor]).any():
            raise EditError(f"receivers: {tensor} cells are both patched and receivers; choose one role.")
        op = sheet.graph.ops[tensor]
        bad = m.copy()
        for k in set(op.ins) & senders.keys():
            written = op.cells_written([senders[k] if i == k else None for i in op.ins], eng)
            bad &= ~written
        if bad.any():
            first = sheet.name(tensor, tuple(int(i) for i in np.argwhere(bad)[0]))
            raise EditError(
                f"receivers: {first} does not read any patched cell directly ({int(bad.sum())} receiver cells "
                "do not), so no path runs from the patched cells into it; pick receivers among "
                "sheet.dependents(cells)."
            )
    work = scratch(sheet)
    w = work.engine
    out: Pins = []
    for tensor in sheet.graph.order:  # graph order: an earlier receiver is pinned before a later one reads it
        if tensor not in recv:
            continue
        m = recv[tensor]
        extra: Pins = []  # this receiver's other inputs, frozen at their values without the patch
        for inp, pm in w.precedents(tensor, m).items():
            if sheet.graph.specs[inp].kind != "computed":
                continue
            if inp in senders:
                pm = pm & ~senders[inp]
            pm = _masked(sheet, inp, pm)
            if pm.any():
                extra += [p for p in site_pins(work, {inp: pm}) if p[1] not in w.pins.get(inp, {})]
        for t, idx, v in extra + values:
            w.pin(t, idx, v)
        got = site_pins(work, {tensor: m})
        for t, idx, _ in extra + values:
            w.pin(t, idx, sheet.engine.pins.get(t, {}).get(idx))
        for t, idx, v in got:
            w.pin(t, idx, v)
        out += got
    return out


def _reference(sheet: Cells, r: Cells | str | Sequence[int]) -> Cells:
    """A reference sheet; a text or token list (a dataset's input) is run under this sheet's weights."""
    if hasattr(r, "engine"):
        return r  # type: ignore[return-value]
    eng = sheet.engine
    temperature = float(eng.values["temperature"])
    c = type(sheet)(sheet.model, sheet.model.encode(r), temperature, eng.exact)  # type: ignore[arg-type]
    params = {n: eng.values[n] for n in sheet.graph.parameters}  # shared: an engine copies a weight it writes
    c.engine = Engine(sheet.graph, params, np.array(c.tokens), temperature, eng.exact)
    return c


def ablate(sheet: Cells, cells: str | Sequence[str], how: str = "zero",
           reference: Sequence[Cells | str | Sequence[int]] | None = None, seed: int = 0) -> Receipt:
    """Pin cells to 0 ("zero"), their mean over `reference` sheets ("mean"), or their values in one
    reference sheet drawn with `seed` ("resample"); one edit with a receipt. A reference may be
    a text or a list of token ids (a dataset of inputs), run under this sheet's weights.

    >>> import dfgpt
    >>> m = dfgpt.load("sort-random")
    >>> s = m.sheet("CABACA")
    >>> _ = s.ablate("h[2].attn.out[5]")
    >>> s.value("h[2].attn.out[5][0]"), s.value("h[2].mid[5][0]") == s.value("h[1].out[5][0]")
    (0.0, True)
    >>> _ = s.ablate("h[2].attn.out[4]", how="mean", reference=[m.sheet("AAAAAA"), m.sheet("CCCCCC")])
    >>> v = s.value("h[2].attn.out[4][0]")
    >>> _ = s.undo(); _ = s.ablate("h[2].attn.out[4]", how="mean", reference=["AAAAAA", [2, 2, 2, 2, 2, 2]])
    >>> s.value("h[2].attn.out[4][0]") == v
    True
    """
    if how not in ("zero", "mean", "resample"):
        raise QueryError(f"ablate: how must be 'zero', 'mean' or 'resample', got {how!r}.")
    if how == "zero" and reference is not None:  # as ablation_sweep: a reference would be ignored silently
        raise QueryError("ablate: reference is what how='mean' averages over and how='resample' draws from; "
                         "how='zero' takes none: drop it, or say how='mean'.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise QueryError(f"ablate: seed must be an integer >= 0 (it picks the resampled reference), got {show(seed)}.")
    masks = selection(sheet, cells)
    if how == "zero":
        pins = [(t, tuple(int(i) for i in idx), 0.0) for t, m in masks.items() for idx in np.argwhere(m)]
        return pin_many(sheet, f"ablate {how}", pins)
    refs = [_reference(sheet, r) for r in reference] if isinstance(reference, (list, tuple)) else None
    if not refs:
        raise QueryError(
            f"ablate how={how!r} needs reference=[sheets] (inputs of the same length to take "
            "values from), e.g. reference=[model.sheet('AAAAAA'), model.sheet('CCCCCC')]."
        )
    for r in refs:
        check_pair(sheet, r, "reference")
    if how == "resample":
        pick = int(np.random.default_rng(seed).integers(len(refs)))
        return pin_many(sheet, f"ablate {how}", site_pins(refs[pick], masks))
    per = [site_pins(r, masks) for r in refs]
    mean = np.mean(np.array([[v for _, _, v in p] for p in per]), axis=0)
    pins = [(t, idx, float(v)) for (t, idx, _), v in zip(per[0], mean)]
    return pin_many(sheet, f"ablate {how}", pins)
