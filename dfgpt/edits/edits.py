"""What-if edits of a sheet: set, pin, unpin, undo, redo and append, each with a receipt.

An edit writes in place (a parameter is copied once per sheet, on its first write), marks
exactly its downstream cone stale and returns a `Receipt`. The next read recomputes only
the stale rows it needs, and stops where a recomputed row came out unchanged (cut-off).
The receipt's recompute figures reflect the reads made between the edit and the next
edit; `receipt.settle()` reads every logit and probability, so the figures cover them.

>>> import dfgpt
>>> s = dfgpt.load("sort-random").sheet("CABACA")
>>> before = s.value("logit[5][A]")
>>> r = s.set("h[2].mlp.c_proj.w[0][0]", 0.5)
>>> r.stale < r.settle().recomputed + r.reused
True
>>> _ = s.undo()
>>> s.value("logit[5][A]") == before
True
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DfgptError, EditError, SequenceLengthError, TokenError, show, suggest
from .receipts import OUTPUTS, Live, Receipt

if TYPE_CHECKING:
    from ..cells import Cells
    from ..core.cones import Pending
    from ..core.evaluate import Mask
    from ..models.weights import Weights

__all__ = [
    "Receipt",
    "append",
    "pin_many",
    "redo",
    "set_cells",
    "set_many",
    "to_model",
    "undo",
    "unpin",
]

@dataclass(frozen=True)
class _Change:
    """One undo-log record: `how` is "write" (parameter / input), "pin" (None: unpinned) or "append"."""

    how: str
    tensor: str
    index: tuple[Any, ...]  # a cell's ints; set_cells's numpy index arrays
    old: Any
    new: Any


class _Log:
    """A sheet's undo and redo stacks of edit groups, and its latest (open) receipt."""

    def __init__(self) -> None:
        self.undo: list[tuple[str, list[_Change]]] = []
        self.redo: list[tuple[str, list[_Change]]] = []
        self.open: Live | None = None


def _log(sheet: Cells) -> _Log:
    log = sheet.__dict__.get("_edit_log")
    if log is None:
        log = sheet.__dict__["_edit_log"] = _Log()
    return log


# -- validation ------------------------------------------------------------------------------
def _number(cell: str, value: Any, dtype: np.dtype) -> float:
    if value is np.ma.masked or isinstance(value, np.ma.MaskedArray):
        raise EditError(f"{cell}: a masked value is no number; give the number the cell should hold.")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    # numpy files timedelta64 under its integers, but a duration is no cell value.
    if (isinstance(value, (bool, np.bool_, np.timedelta64, np.datetime64))
            or not isinstance(value, numbers.Real)):
        raise EditError(
            f"{cell}: expected a number, got {show(value)} ({type(value).__name__}); "
            f"write e.g. sheet.set({cell!r}, 0.5)."
        )
    try:
        v = float(np.asarray(float(value), dtype=dtype))
    except OverflowError:
        v = math.inf
    if math.isnan(v):
        raise EditError(f"{cell}: NaN is not a value a cell can hold (it would spread to every cell that reads "
                        "it); give a finite number.")
    if not math.isfinite(v):
        raise EditError(
            f"{cell}: {show(value)} is not a finite {dtype} number; cells hold finite values "
            "(pin a large finite number instead of inf)."
        )
    return v


def _token_id(sheet: Cells, cell: str, value: Any) -> int:
    vocab, V = sheet.model.vocab, sheet.config.vocab_size
    if isinstance(value, str):
        if value in sheet.model.token_ids:  # either spelling: the tokenizer's (ĠJohn) or the displayed (␣John)
            return sheet.model.token_ids[value]
        try:
            ids = sheet.model.tokenizer.encode(value) if not sheet.config.vocab else []
        except (KeyError, ValueError, DfgptError):
            ids = []
        if len(ids) == 1:
            return int(ids[0])
        raise TokenError(
            f"{cell}: {show(value)} is not one token of the vocabulary"
            + (f" ({' '.join(vocab[:20])})" if len(vocab) <= 20 else "")
            + f"; give a token text or an id 0..{V - 1}." + suggest(value, vocab[:5000])
        )
    # np.timedelta64 subclasses np.integer, yet int() refuses it
    if isinstance(value, (bool, np.bool_, np.timedelta64)) or not isinstance(value, (int, np.integer)):
        raise TokenError(f"{cell}: expected a token text or an integer id 0..{V - 1}, got {show(value)}.")
    if not 0 <= int(value) < V:
        raise TokenError(f"{cell}: token id {show(int(value))} is out of range; this vocabulary has ids 0..{V - 1}.")
    return int(value)


def _plan(sheet: Cells, edits: dict[str, Any]) -> list[_Change]:
    """Validate every entry before touching anything: a bad one raises and changes nothing."""
    if not isinstance(edits, dict) or not edits:
        raise EditError("set_many takes a non-empty {cell: value} dict, e.g. {'wpe[0][0]': 0.5}.")
    eng = sheet.engine
    out: list[_Change] = []
    for cell, value in edits.items():
        if not isinstance(cell, str):
            raise EditError(f"cell names are strings like 'wpe[0][0]', got {cell!r}.")
        tensor, idx = sheet.cell(cell)
        kind = sheet.graph.specs[tensor].kind
        if tensor == "tokens":
            out.append(_Change("write", tensor, idx, int(eng.values[tensor][idx]), _token_id(sheet, cell, value)))
        elif kind == "computed":
            axes = sheet.graph.specs[tensor].axes
            if "key" in axes and idx[axes.index("key")] > idx[axes.index("pos")]:
                raise EditError(
                    f"{cell} is masked by the causal mask (key after position): it reads nothing and "
                    "nothing reads it; pin a cell with key <= position."
                )
            old = eng.pins.get(tensor, {}).get(idx)
            out.append(_Change("pin", tensor, idx, old, _number(cell, value, eng.dtype)))
        else:
            v = _number(cell, value, eng.dtype)
            if tensor == "temperature" and not (v >= 0 and math.isfinite(v)):
                raise EditError(f"temperature must be a finite number >= 0 (0 = greedy), got {v!r}; "
                                "1.0 is the model's own softmax.")
            out.append(_Change("write", tensor, idx, eng.values[tensor][idx].item(), v))
    return out


# -- applying --------------------------------------------------------------------------------
def _apply(sheet: Cells, action: str, changes: list[_Change], forward: bool) -> Receipt:
    """Apply a group of changes (or revert it), mark the cone stale, and return its receipt."""
    eng = sheet.engine
    log = _log(sheet)
    if log.open is not None:
        log.open.freeze()
    # A pin on an output row changes it without a recompute: keep the row as it was, so the
    # receipt compares it like any recomputed row.
    pinned_outputs: dict[str, dict[int, np.ndarray]] = {}
    for ch in changes:
        if ch.how == "pin" and ch.tensor in OUTPUTS:
            row = ch.index[sheet.graph.row_axis[ch.tensor]]  # outputs always have a position axis
            if eng.verified[ch.tensor][row] >= 0:
                pinned_outputs.setdefault(ch.tensor, {}).setdefault(row, np.array(eng.view(ch.tensor)[row]))
    T0 = eng.T
    unset = {n: m for n, v in eng.verified.items() if (m := v[:T0] == -1).any()}  # rows never computed
    # every output row current (verified since the last write), and in fast mode computed in the batch a
    # recompute would use: the receipt's "before" is what they hold (dfgpt.edits.receipts)
    held = (eng.exact or eng.batch_T == T0) and all(bool((eng.verified_at(n) >= eng.revision).all())
                                                   for n in OUTPUTS)
    appended, cone = _write(sheet, changes, forward)
    eng.reset_counts()
    live = Live(sheet, pinned_outputs, unset)
    if T0 != eng.T:  # an append or its undo: under the causal mask the rows both lengths have keep their values
        live.kept_rows = min(T0, eng.T)
    else:
        live.before = lambda: _outputs_before(sheet, changes, forward)
        live.held = held
    live.cone = {n: eng.row_size(n) for n in sheet.graph.computed} if appended else cone
    names = tuple(_describe(sheet, ch, forward) for ch in changes)
    log.open = live
    return Receipt(action, names, live)


def _write(sheet: Cells, changes: list[_Change], forward: bool) -> tuple[bool, dict[str, int] | Pending | None]:
    """Apply the changes (or revert them) and mark their downstream cone stale: (appended, the cone)."""
    eng = sheet.engine
    seeds: dict[str, Mask] = {}
    exclude: dict[str, Mask] = {}
    appended = False
    for ch in changes if forward else reversed(changes):
        value = ch.new if forward else ch.old
        if ch.how == "append":
            if forward:
                eng.append(value)
            else:
                eng.pop()  # a removed row's cells are gone, not stale
            appended = forward
            continue
        if ch.how == "pin":
            eng.pin(ch.tensor, ch.index, value)
            if value is not None:  # a pinned cell is a constant, not stale
                exclude[ch.tensor] = _add(exclude.get(ch.tensor), eng.shape(ch.tensor), ch.index)
        else:
            eng.write(ch.tensor, ch.index, value)
        seeds[ch.tensor] = _add(seeds.get(ch.tensor), eng.shape(ch.tensor), ch.index)
    if appended:
        # The cone of a new token is its whole new row in every computed tensor (the row
        # was unset, so nothing is marked: its cells are computed on the first read).
        return True, None
    if seeds and all(ch.how == "write" and ch.tensor != "tokens" for ch in changes):
        return False, eng.defer_stale(seeds, exclude)  # weights: no mask work until asked
    if seeds:
        return False, {k: int(m.sum()) for k, m in eng.mark_stale(seeds, exclude).items()}
    return False, None


def _outputs_before(sheet: Cells, changes: list[_Change], forward: bool) -> dict[str, np.ndarray]:
    """Every output row as it was before the edit: the edit reverted in a trial, which leaves nothing behind.

    Cheap once the outputs are read after the edit: the trial recomputes only the edit's cone.
    """
    eng = sheet.engine
    with eng.trial():
        _write(sheet, changes, not forward)
        eng.ensure({name: np.ones(eng.T, bool) for name in OUTPUTS})
        return {name: np.array(eng.view(name)) for name in OUTPUTS}  # [T, V] each


def _add(m: Mask | None, shape: tuple[int, ...], idx: tuple[int, ...]) -> Mask:
    if m is None:
        m = np.zeros(shape, bool)
    m[idx] = True
    return m


def _describe(sheet: Cells, ch: _Change, forward: bool) -> str:
    old, new = (ch.old, ch.new) if forward else (ch.new, ch.old)
    if ch.how == "append":
        return f"tokens[{sheet.T - 1 if forward else sheet.T}] {'+' if forward else '-'} {_tok(sheet, ch.new)!r}"
    if any(isinstance(i, np.ndarray) for i in ch.index):  # set_cells: a block of one tensor
        return f"{ch.tensor}: {np.size(ch.new):,} cells"
    name = sheet.name(ch.tensor, ch.index)
    if ch.tensor == "tokens":
        return f"{name} = {_tok(sheet, new)!r} (was {_tok(sheet, old)!r})"
    if ch.how == "pin":
        now = "unpinned" if new is None else f"{new:.6g} (pinned)"
        return f"{name} = {now}, was {'computed' if old is None else f'{old:.6g} (pinned)'}"
    return f"{name} = {new:.6g}, was {old:.6g}"


def _tok(sheet: Cells, i: int) -> str:
    return sheet.model.token_text(i)


def _commit(sheet: Cells, action: str, changes: list[_Change]) -> Receipt:
    receipt = _apply(sheet, action, changes, forward=True)
    log = _log(sheet)
    log.undo.append((action, changes))
    log.redo.clear()
    return receipt


def pin_many(sheet: Cells, action: str, pins: list[tuple[str, tuple[int, ...], float]]) -> Receipt:
    """Pin computed cells, given as (tensor, index, value), as one edit named `action` (a patch, an
    ablation): one receipt, and one undo that restores each cell's previous pin or computation.

    What `sheet.patch` and `sheet.ablate` make of their selections; the caller has checked the
    cells (computed, within the sheet's length: `dfgpt.interventions.patching.selection` does it),
    and values are pinned as given.

    >>> import dfgpt
    >>> s = dfgpt.load("sort-random").sheet("CABACA")
    >>> r = pin_many(s, "zero two", [("h[0].out", (5, 0), 0.0), ("h[0].out", (5, 1), 0.0)])
    >>> r.action, r.cells[0], s.value("h[0].out[5][1]")
    ('zero two', 'h[0].out[5][0] = 0 (pinned), was computed', 0.0)
    >>> _ = undo(s); s.state("h[0].out[5][1]")
    'stale'
    """
    old = sheet.engine.pins
    changes = [_Change("pin", t, idx, old.get(t, {}).get(idx), v) for t, idx, v in pins]
    return _commit(sheet, action, changes)


def set_cells(sheet: Cells, cells: dict[str, tuple[tuple[np.ndarray, ...], np.ndarray]],
              edits: dict[str, Any] | None = None) -> Receipt:
    """Write many cells of some parameters, {tensor: (numpy index, values)}, with `edits`, as one edit.

    One undo record a tensor, not one a cell: a circuit's patch writes 12,288 cells a source at
    GPT-2's width, T = 16, which as named cells cost seconds to plan and describe.

    >>> import dfgpt, numpy as np
    >>> s = dfgpt.load("sort-random").sheet("CABACA")
    >>> before, _ = s.value("wpe[2][0]"), s.value("logit")
    >>> r = set_cells(s, {"wpe": ((np.array([1, 2]), np.array([0, 0])), np.array([0.25, 0.5]))})
    >>> r.cells, s.value("wpe[2][0]"), s.state("emb[1][0]")
    (('wpe: 2 cells',), 0.5, 'stale')
    >>> _ = s.undo(); s.value("wpe[2][0]") == before
    True
    """
    changes = _plan(sheet, edits) if edits else []
    eng = sheet.engine
    for tensor, (idx, new) in cells.items():
        spec = sheet.graph.specs.get(tensor)
        if spec is None or spec.kind != "parameter":
            raise EditError(f"set_cells writes parameters, and {tensor!r} is not a parameter of this sheet; "
                            "pin computed cells with set or set_many.")
        try:
            old = eng.values[tensor][idx].copy()
            value = np.asarray(new, eng.dtype).reshape(old.shape)
        except (IndexError, ValueError, TypeError) as e:
            raise EditError(f"set_cells: the index and values for {tensor} {eng.shape(tensor)} do not fit ({e}); "
                            "give a numpy index into the tensor and one value per cell it selects.") from None
        if not np.isfinite(value).all():
            raise EditError(f"set_cells: the values for {tensor} must be finite numbers.")
        changes.append(_Change("write", tensor, idx, old, value))
    if not changes:
        raise EditError("set_cells takes at least one cell to write.")
    return _commit(sheet, "set", changes)


def set_many(sheet: Cells, edits: dict[str, Any]) -> Receipt:
    """Edit parameters, tokens, the temperature or pin computed cells, as one atomic edit.

    >>> import dfgpt
    >>> s = dfgpt.load("sort-random").sheet("CABACA")
    >>> _ = s.value("logit")
    >>> r = s.set_many({"tokens[2]": "C", "wpe[1][0]": 0.25})
    >>> s.text, s.state("wpe[1][0]"), s.state("emb[1][0]"), s.state("emb[0][0]")
    ('CACACA', 'edited', 'stale', 'fresh')
    """
    return _commit(sheet, "set", _plan(sheet, edits))


def unpin(sheet: Cells, cell: str) -> Receipt:
    """Remove a pin: the cell is computed from its formula again on the next read."""
    tensor, idx = sheet.cell(cell)
    old = sheet.engine.pins.get(tensor, {}).get(idx)
    if old is None:
        raise EditError(f"{cell} is not pinned; pin a computed cell with sheet.set({cell!r}, value).")
    return _commit(sheet, "unpin", [_Change("pin", tensor, idx, old, None)])


def undo(sheet: Cells) -> Receipt:
    """Revert the latest edit (values come back bit for bit in exact mode)."""
    return _replay(sheet, forward=False)


def redo(sheet: Cells) -> Receipt:
    """Apply again the latest undone edit."""
    return _replay(sheet, forward=True)


def _replay(sheet: Cells, forward: bool) -> Receipt:
    """Move the latest edit group from the undo stack to the redo stack (or back) and apply it."""
    log = sheet.__dict__.get("_edit_log")  # not made here: a refused undo leaves the sheet as it was
    src, dst = ((log.redo, log.undo) if forward else (log.undo, log.redo)) if log else ([], [])
    if not src:
        raise EditError(
            "nothing to redo: redo follows undo, and a new edit clears the redo list." if forward
            else "nothing to undo: this sheet has no edits (or every edit is already undone)."
        )
    action, changes = src.pop()
    dst.append((action, changes))
    return _apply(sheet, f"{'redo' if forward else 'undo'} {action}", changes, forward=forward)


def append(sheet: Cells, token: str | int) -> Receipt:
    """Add one position (token text or id); earlier rows stay valid under the causal mask."""
    if sheet.T >= sheet.config.block_size:
        raise SequenceLengthError(
            f"the sheet already holds {sheet.T} tokens, the model's context (block_size "
            f"{sheet.config.block_size}); start a sheet from a shorter input."
        )
    tid = _token_id(sheet, f"tokens[{sheet.T}]", token)
    return _commit(sheet, "append", [_Change("append", "tokens", (sheet.T,), None, tid)])


def to_model(sheet: Cells) -> Weights:
    """A model with the sheet's current weights (pins and tokens belong to the sheet, not the model)."""
    m = sheet.model
    params = {n: np.array(sheet.engine.values[n], copy=True) for n in sheet.graph.parameters}
    return type(m)(m.config, params, m.tokenizer, m.graph)  # the sheet's model class: a Model stays a Model
