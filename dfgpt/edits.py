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

import argparse
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import DfgptError, EditError, QueryError, SequenceLengthError, TokenError

if TYPE_CHECKING:
    from .evaluate import Mask, Pending
    from .model import Model
    from .sheet import Sheet

__all__ = [
    "Receipt",
    "TaskScore",
    "append",
    "redo",
    "register",
    "set_many",
    "task_score",
    "to_model",
    "undo",
    "unpin",
]

OUTPUTS = ("logit", "prob")


@dataclass(frozen=True)
class _Change:
    """One undo-log record: `how` is "write" (parameter / input), "pin" (None: unpinned) or "append"."""

    how: str
    tensor: str
    index: tuple[int, ...]
    old: Any
    new: Any


class _Live:
    """The mutable side of a receipt: counters at the edit, watched outputs, the cone, a freeze."""

    def __init__(self, sheet: Sheet) -> None:
        eng = sheet.engine
        self.sheet = sheet
        self.start = [Counter(eng.total_recomputed), Counter(eng.total_reused), Counter(eng.total_cutoff)]
        self.frozen: dict[str, Any] | None = None
        self.cone: dict[str, int] | Pending | None = None
        # The engine keeps each output row's value from before its first recompute since now.
        self.watch: dict[str, dict[int, np.ndarray | None]] = {name: {} for name in OUTPUTS}
        eng.watch = self.watch
        self.revision = eng.revision

    def stale(self) -> dict[str, int]:
        cone = self.cone
        if cone is None:
            return {}
        if not isinstance(cone, dict):  # a deferred cone: materialise it now
            if cone.counts is None:
                self.sheet.engine.flush_stale()
            assert cone.counts is not None
            self.cone = cone = cone.counts
        return cone

    def numbers(self) -> dict[str, Any]:
        if self.frozen is not None:
            return self.frozen
        eng = self.sheet.engine
        now = (eng.total_recomputed, eng.total_reused, eng.total_cutoff)
        diffs = [+(n - s) for n, s in zip(now, self.start)]  # unary + drops zero entries
        change: dict[str, float | None] = {}
        flipped: bool | None = None
        for name in OUTPUTS:
            # Rows read since the edit; a row verified without a recompute did not change.
            read = eng.verified[name][: eng.T] >= self.revision
            w = self.watch[name]
            rows = {r: v for r, v in w.items() if r < eng.T and v is not None}
            if not any(r not in w or w[r] is not None for r in np.flatnonzero(read).tolist()):
                change[name] = None
                continue
            change[name] = 0.0
            if name == "logit":
                flipped = False
            if not rows:
                continue
            idx = np.fromiter(rows, np.int64, len(rows))
            old = np.stack(list(rows.values()))  # type: ignore[arg-type]
            new = eng.view(name)[idx]
            with np.errstate(invalid="ignore", over="ignore"):  # pins may have made inf or nan
                change[name] = float(np.max(np.abs(new - old)))
            if name == "logit":
                flipped = bool((new.argmax(axis=1) != old.argmax(axis=1)).any())
        return {"counts": diffs, "max_change": change, "flipped": flipped}

    def freeze(self) -> None:
        if self.frozen is None:  # the cone may stay deferred: the engine flushes before it could change
            self.frozen = self.numbers()
            if self.sheet.engine.watch is self.watch:
                self.sheet.engine.watch = {}


@dataclass(frozen=True)
class Receipt:
    """What an edit did: the cells it made stale; what reads since then recomputed.

    `stale` counts the computed cells of the exact downstream cone (`stale_by_tensor` per
    tensor; for a weight edit it is worked out on first access). `recomputed`, `reused`,
    `cutoff`, `max_change` and `flipped` reflect the reads since the edit, until the next
    edit freezes them; `settle()` reads every output first. `max_change` compares each
    output row read since the edit with its value when last computed before it.
    """

    action: str
    cells: tuple[str, ...]
    _live: _Live = field(repr=False, compare=False)

    @property
    def sheet(self) -> Sheet:
        return self._live.sheet

    @property
    def stale_by_tensor(self) -> dict[str, int]:
        """Cells of the downstream cone per computed tensor (new rows, for an append)."""
        return dict(self._live.stale())

    @property
    def stale(self) -> int:
        return int(sum(self._live.stale().values()))

    def _count(self, k: int) -> dict[str, int]:
        return dict(self._live.numbers()["counts"][k])

    @property
    def recomputed_by_tensor(self) -> dict[str, int]:
        return self._count(0)

    @property
    def reused_by_tensor(self) -> dict[str, int]:
        return self._count(1)

    @property
    def cutoff_by_tensor(self) -> dict[str, int]:
        return self._count(2)

    @property
    def recomputed(self) -> int:
        """Cells recomputed by reads since the edit."""
        return int(sum(self._count(0).values()))

    @property
    def reused(self) -> int:
        """Cells a read verified without recomputing them."""
        return int(sum(self._count(1).values()))

    @property
    def cutoff(self) -> int:
        """Recomputed cells whose row came out bit for bit unchanged (propagation stopped there)."""
        return int(sum(self._count(2).values()))

    @property
    def max_change(self) -> dict[str, float | None]:
        """Largest |new - old| per output over the rows recomputed since the edit (None: none)."""
        return dict(self._live.numbers()["max_change"])

    @property
    def flipped(self) -> bool | None:
        """Did the greedy next token change at any recomputed position (None: no logit row read)."""
        return self._live.numbers()["flipped"]

    def settle(self) -> Receipt:
        """Read every logit and probability (if this is still the latest edit), then return self."""
        live = self._live
        if live.frozen is None:
            eng = live.sheet.engine
            eng.ensure({name: np.ones(eng.T, bool) for name in OUTPUTS})
        return self

    def __str__(self) -> str:
        by = self.stale_by_tensor
        top = sorted(by.items(), key=lambda kv: -kv[1])[:4]
        lines = [
            f"{self.action}: {', '.join(self.cells) or '-'}",
            f"  marked stale: {self.stale:,} cells in {len(by)} tensors"
            + (f" (largest: {', '.join(f'{k} {v:,}' for k, v in top)})" if top else ""),
        ]
        n = self._live.numbers()
        if not sum(n["counts"][0].values()) and not sum(n["counts"][1].values()):
            lines.append("  not read since the edit (receipt.settle() reads the outputs)")
            return "\n".join(lines)
        lines.append(
            f"  after reads: recomputed {self.recomputed:,}, reused {self.reused:,}, "
            f"cut-off (recomputed, unchanged) {self.cutoff:,}"
        )
        ch = [f"{k} {v:.6g}" for k, v in n["max_change"].items() if v is not None]
        if ch:
            flip = "yes" if n["flipped"] else "no"
            lines.append(f"  largest change: {', '.join(ch)}; greedy next token flipped: {flip}")
        return "\n".join(lines)


class _Log:
    """A sheet's undo and redo stacks of edit groups, and its latest (open) receipt."""

    def __init__(self) -> None:
        self.undo: list[tuple[str, list[_Change]]] = []
        self.redo: list[tuple[str, list[_Change]]] = []
        self.open: _Live | None = None


def _log(sheet: Sheet) -> _Log:
    log = sheet.__dict__.get("_edit_log")
    if log is None:
        log = sheet.__dict__["_edit_log"] = _Log()
    return log


# -- validation ------------------------------------------------------------------------------
def _number(cell: str, value: Any, dtype: np.dtype) -> float:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise EditError(
            f"{cell}: expected a number, got {value!r} ({type(value).__name__}); "
            f"write e.g. sheet.set({cell!r}, 0.5)."
        )
    v = float(np.asarray(value, dtype=dtype))
    if not math.isfinite(v):
        raise EditError(
            f"{cell}: {value!r} is not a finite {dtype} number; cells hold finite values "
            "(pin a large finite number instead of inf)."
        )
    return v


def _token_id(sheet: Sheet, cell: str, value: Any) -> int:
    vocab, V = sheet.model.vocab, sheet.config.vocab_size
    if isinstance(value, str):
        if value in vocab:
            return vocab.index(value)
        try:
            ids = sheet.model.tokenizer.encode(value) if not sheet.config.vocab else []
        except (KeyError, ValueError, DfgptError):
            ids = []
        if len(ids) == 1:
            return int(ids[0])
        from .errors import suggest

        raise TokenError(
            f"{cell}: {value!r} is not one token of the vocabulary"
            + (f" ({' '.join(vocab[:20])})" if len(vocab) <= 20 else "")
            + f"; give a token text or an id 0..{V - 1}." + suggest(value, vocab[:5000])
        )
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TokenError(f"{cell}: expected a token text or an integer id 0..{V - 1}, got {value!r}.")
    if not 0 <= int(value) < V:
        raise TokenError(f"{cell}: token id {int(value)} is out of range; this vocabulary has ids 0..{V - 1}.")
    return int(value)


def _plan(sheet: Sheet, edits: dict[str, Any]) -> list[_Change]:
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
            if tensor == "temperature" and not v > 0:
                raise EditError(f"temperature must be > 0, got {v!r}; 1.0 is the model's own softmax.")
            out.append(_Change("write", tensor, idx, eng.values[tensor][idx].item(), v))
    return out


# -- applying --------------------------------------------------------------------------------
def _apply(sheet: Sheet, action: str, changes: list[_Change], forward: bool) -> Receipt:
    """Apply a group of changes (or revert it), mark the cone stale, and return its receipt."""
    eng = sheet.engine
    log = _log(sheet)
    if log.open is not None:
        log.open.freeze()
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
    eng.reset_counts()
    live = _Live(sheet)
    if appended:
        # The cone of a new token is its whole new row in every computed tensor (the row
        # was unset, so nothing is marked: its cells are computed on the first read).
        live.cone = {n: eng._row_size(n) for n in sheet.graph.computed}
    elif seeds and all(ch.how == "write" and ch.tensor != "tokens" for ch in changes):
        live.cone = eng.defer_stale(seeds, exclude)  # weights: no mask work until asked
    elif seeds:
        live.cone = {k: int(m.sum()) for k, m in eng.mark_stale(seeds, exclude).items()}
    names = tuple(_describe(sheet, ch, forward) for ch in changes)
    log.open = live
    return Receipt(action, names, live)


def _add(m: Mask | None, shape: tuple[int, ...], idx: tuple[int, ...]) -> Mask:
    if m is None:
        m = np.zeros(shape, bool)
    m[idx] = True
    return m


def _describe(sheet: Sheet, ch: _Change, forward: bool) -> str:
    old, new = (ch.old, ch.new) if forward else (ch.new, ch.old)
    if ch.how == "append":
        return f"tokens[{sheet.T - 1 if forward else sheet.T}] {'+' if forward else '-'} {_tok(sheet, ch.new)!r}"
    name = sheet.name(ch.tensor, ch.index)
    if ch.tensor == "tokens":
        return f"{name} = {_tok(sheet, new)!r} (was {_tok(sheet, old)!r})"
    if ch.how == "pin":
        now = "unpinned" if new is None else f"{new:.6g} (pinned)"
        return f"{name} = {now}, was {'computed' if old is None else f'{old:.6g} (pinned)'}"
    return f"{name} = {new:.6g}, was {old:.6g}"


def _tok(sheet: Sheet, i: int) -> str:
    try:
        return sheet.model.decode([i])
    except (IndexError, KeyError, ValueError):  # a vocabulary without texts: show the id
        return str(i)


def _commit(sheet: Sheet, action: str, changes: list[_Change]) -> Receipt:
    receipt = _apply(sheet, action, changes, forward=True)
    log = _log(sheet)
    log.undo.append((action, changes))
    log.redo.clear()
    return receipt


def set_many(sheet: Sheet, edits: dict[str, Any]) -> Receipt:
    """Edit parameters, tokens, the temperature or pin computed cells, as one atomic edit.

    >>> import dfgpt
    >>> s = dfgpt.load("sort-random").sheet("CABACA")
    >>> _ = s.value("logit")
    >>> r = s.set_many({"tokens[2]": "C", "wpe[1][0]": 0.25})
    >>> s.text, s.state("wpe[1][0]"), s.state("emb[1][0]"), s.state("emb[0][0]")
    ('CACACA', 'edited', 'stale', 'fresh')
    """
    return _commit(sheet, "set", _plan(sheet, edits))


def unpin(sheet: Sheet, cell: str) -> Receipt:
    """Remove a pin: the cell is computed from its formula again on the next read."""
    tensor, idx = sheet.cell(cell)
    old = sheet.engine.pins.get(tensor, {}).get(idx)
    if old is None:
        raise EditError(f"{cell} is not pinned; pin a computed cell with sheet.set({cell!r}, value).")
    return _commit(sheet, "unpin", [_Change("pin", tensor, idx, old, None)])


def undo(sheet: Sheet) -> Receipt:
    """Revert the latest edit (values come back bit for bit in exact mode)."""
    log = sheet.__dict__.get("_edit_log")
    if log is None or not log.undo:
        raise EditError("nothing to undo: this sheet has no edits (or every edit is already undone).")
    action, changes = log.undo.pop()
    log.redo.append((action, changes))
    return _apply(sheet, f"undo {action}", changes, forward=False)


def redo(sheet: Sheet) -> Receipt:
    """Apply again the latest undone edit."""
    log = sheet.__dict__.get("_edit_log")
    if log is None or not log.redo:
        raise EditError("nothing to redo: redo follows undo, and a new edit clears the redo list.")
    action, changes = log.redo.pop()
    log.undo.append((action, changes))
    return _apply(sheet, f"redo {action}", changes, forward=True)


def append(sheet: Sheet, token: str | int) -> Receipt:
    """Add one position (token text or id); earlier rows stay valid under the causal mask."""
    if sheet.T >= sheet.config.block_size:
        raise SequenceLengthError(
            f"the sheet already holds {sheet.T} tokens, the model's context (block_size "
            f"{sheet.config.block_size}); start a sheet from a shorter input."
        )
    tid = _token_id(sheet, f"tokens[{sheet.T}]", token)
    return _commit(sheet, "append", [_Change("append", "tokens", (sheet.T,), None, tid)])


def to_model(sheet: Sheet) -> Model:
    """A model with the sheet's current weights (pins and tokens belong to the sheet, not the model)."""
    from .model import Model

    m = sheet.model
    params = {n: np.array(sheet.engine.values[n], copy=True) for n in sheet.graph.parameters}
    return Model(m.config, params, m.tokenizer, m.graph)


# -- the sort task ----------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskScore:
    """Greedy sorting of all 3^6 inputs under a sheet's weights."""

    correct: int
    total: int
    broken: tuple[str, ...]  # "input -> output" for every input not sorted
    newly_broken: tuple[str, ...]  # of those, the ones the model's own weights sort

    @property
    def accuracy(self) -> float:
        return self.correct / self.total

    def __str__(self) -> str:
        s = f"sort task: {self.correct}/{self.total} inputs sorted ({self.accuracy:.1%})"
        if self.newly_broken:
            s += f"; broken by the edits: {len(self.newly_broken)}, e.g. {', '.join(self.newly_broken[:5])}"
        return s


def _sort_ids(cfg: Any) -> list[int]:
    vocab = tuple(cfg.vocab)
    if not {"A", "B", "C"} <= set(vocab) or cfg.block_size < 11:
        raise QueryError(
            "task_score scores the sort task (6 letters A/B/C, 5 fed back): it needs a model "
            f"with tokens A, B, C and block_size >= 11, not vocab {vocab[:10]} / block_size "
            f"{cfg.block_size}; load it with dfgpt.load('sort')."
        )
    return [vocab.index(c) for c in "ABC"]


def _forward_last(cfg: Any, P: dict[str, np.ndarray], ids: np.ndarray, start: int, cache: list) -> np.ndarray:
    """A batched plain-numpy forward of new positions `start..` with a key/value cache.

    [B, n] ids -> [B, V] logits of the last position; `cache` holds per layer [B, H, t, hs] keys
    and values, extended in place (so greedy decoding computes each position once).
    """
    B, n = ids.shape
    H, C = cfg.n_head, cfg.n_embd

    def ln(x: np.ndarray, p: str) -> np.ndarray:  # [B, n, C] -> [B, n, C]
        if not cfg.layer_norm:
            return x
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        y = (x - mu) / np.sqrt(var + cfg.ln_eps) * P[f"{p}.g"]
        return y + P[f"{p}.b"] if cfg.bias else y

    def lin(x: np.ndarray, p: str) -> np.ndarray:  # [B, n, K] -> [B, n, N]
        W = P[f"{p}.w"]
        y = x @ (W.T if cfg.layout == "out_in" else W)
        return y + P[f"{p}.b"] if cfg.bias else y

    from .ops import gelu

    x = P["wte"][ids] + P["wpe"][start : start + n]
    T = start + n
    causal = np.tril(np.ones((T, T), bool))[start:]  # [n, T]
    for layer in range(cfg.n_layer):
        p = f"h[{layer}]"
        qkv = lin(ln(x, f"{p}.ln_1"), f"{p}.attn.c_attn")  # [B, n, 3C]
        q, k, v = (qkv[..., i * C : (i + 1) * C].reshape(B, n, H, -1).transpose(0, 2, 1, 3) for i in range(3))
        if layer < len(cache):
            k = cache[layer][0] = np.concatenate([cache[layer][0], k], axis=2)
            v = cache[layer][1] = np.concatenate([cache[layer][1], v], axis=2)
        else:
            cache.append([k, v])
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(C // H)  # [B, H, n, T]
        s = np.where(causal, s, -np.inf)
        e = np.exp(s - s.max(-1, keepdims=True))
        y = (e / e.sum(-1, keepdims=True)) @ v  # [B, H, n, hs]
        x = x + lin(y.transpose(0, 2, 1, 3).reshape(B, n, C), f"{p}.attn.c_proj")
        if cfg.mlp:
            x = x + lin(gelu(lin(ln(x, f"{p}.ln_2"), f"{p}.mlp.c_fc"), cfg.gelu), f"{p}.mlp.c_proj")
    head = P["wte"] if cfg.tied else P["lm_head.w"]
    return ln(x[:, -1:], "ln_f")[:, 0] @ head.T  # [B, C] @ [C, V]


def _greedy_sort(cfg: Any, P: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """[729, 6] inputs and [729, 6] greedy outputs (5 predictions fed back)."""
    abc = np.array(_sort_ids(cfg))
    grid = np.indices((3,) * 6).reshape(6, -1).T  # every A/B/C string, in lexicographic order
    ids = abc[grid]
    cache: list = []
    step, start, outs = ids, 0, []
    for _ in range(6):
        nxt = _forward_last(cfg, P, step, start, cache).argmax(axis=1)
        outs.append(nxt)
        start += step.shape[1]
        step = nxt[:, None]
    return ids, np.stack(outs, axis=1)


def task_score(sheet: Sheet) -> TaskScore:
    """Re-score all 729 sort inputs under the sheet's current weights (vectorised, a few ms).

    >>> import dfgpt
    >>> dfgpt.load("sort-random").sheet("CABACA").task_score().total
    729
    """
    cfg = sheet.config
    P = {n: sheet.engine.values[n] for n in sheet.graph.parameters}
    ids, out = _greedy_sort(cfg, P)
    want = np.sort(ids, axis=1)
    ok = (out == want).all(axis=1)
    base_ok = ok
    if any(P[n] is not sheet.model.params[n] for n in P):
        _, base = _greedy_sort(cfg, sheet.model.params)
        base_ok = (base == want).all(axis=1)
    dec = sheet.model.decode

    def show(i: int) -> str:
        return f"{dec(ids[i].tolist())} -> {dec(out[i].tolist())}"

    return TaskScore(
        int(ok.sum()),
        len(ok),
        tuple(show(i) for i in np.flatnonzero(~ok)),
        tuple(show(i) for i in np.flatnonzero(~ok & base_ok)),
    )


# -- command line -----------------------------------------------------------------------------
def _cli_set(args: argparse.Namespace) -> int:
    from .catalog import load

    sheet = load(args.model).sheet(args.text)
    tensor, _ = sheet.cell(args.cell)
    value: Any = args.value
    if tensor == "tokens":
        value = int(value) if value.isdigit() else value
    else:
        try:
            value = float(value)
        except ValueError:
            raise EditError(f"{args.cell}: expected a number, got {args.value!r}.") from None
    before = sheet.task_score() if args.score else None
    sheet.values("prob")  # computed before the edit, so the receipt shows what changed
    receipt = sheet.set(args.cell, value).settle()
    print(receipt)
    if args.score:
        after = sheet.task_score()
        print(f"before: {before}")
        print(f"after:  {after}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from .cli import model_arg

    p = sub.add_parser("set", help="edit a weight, token or cell; print what was recomputed")
    p.add_argument("cell", help="e.g. 'h[2].mlp.c_proj.w[0][0]', 'tokens[2]', 'h[0].attn.att[0][5][3]'")
    p.add_argument("value", help="a number, or a token for tokens[t]")
    p.add_argument("--text", default="CABACA", help="the input (default CABACA)")
    p.add_argument("--score", action="store_true", help="re-score the sort task before and after")
    model_arg(p)
    p.set_defaults(func=_cli_set)
