"""The explorer's answers as JSON-ready dicts: each is the Python API's answer for a sheet, unchanged.

Nothing here knows about HTTP; the routes (dfgpt.server.app) parse a request, take the
session's sheet and call one of these. Numbers are the sheet's own floats (JSON keeps every
bit of a float64); a non-finite one (a masked attention score is −inf) is the string
"-inf", "inf" or "nan", which JSON has no number for.

>>> import dfgpt
>>> sheet = dfgpt.load("sort-random").sheet("CABACA")
>>> cell = cell_json(sheet, "logit[5][0]")
>>> cell["name"], cell["value"] == sheet.value("logit[5][A]"), cell["kind"], cell["state"]
('logit[5][A]', True, 'computed', 'fresh')
>>> number(float("-inf"))
'-inf'
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..edits.receipts import Receipt
from ..errors import IndexError_, QueryError, UnknownNameError, suggest
from ..generation.generate import sample_dist
from ..model import Model
from ..sheet import Sheet
from .architecture import BLOCK, block_prefix

__all__ = [
    "WINDOW",
    "cell_detail",
    "cell_json",
    "cone_json",
    "dist_json",
    "influence_json",
    "model_json",
    "number",
    "overview_json",
    "prediction_json",
    "receipt_json",
    "tensor_json",
    "top",
]

WINDOW = 64  # rows and columns of a tensor sent at once (a GPT-2 wte has 50,257 × 768 cells)
LIST_LIMIT = 2000  # precedents / dependents shown in the cell view (the JSON API sends them all)


def number(x: Any) -> float | str:
    """A float for JSON: the number itself, or 'inf' / '-inf' / 'nan'."""
    v = float(x)
    if math.isfinite(v):
        return v
    return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")


def top(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, best first, ties in index order: `np.argsort(-x, kind="stable")[:k]`,
    without sorting all of x (a GPT-2 row has 50,257 logits: ~3 ms sorted, ~0.3 ms this way).

    >>> top(np.array([1.0, 3.0, 3.0, 0.0, 2.0] * 5), 3).tolist()
    [1, 2, 6]
    """
    neg = -np.asarray(x)
    if neg.size <= 4 * k:
        return np.argsort(neg, kind="stable")[:k]  # type: ignore[no-any-return]
    kth = neg[np.argpartition(neg, k - 1)[:k]].max()  # the k-th best value (NaN only if fewer than k numbers)
    cand = np.flatnonzero(neg <= kth)  # every value as good as it, ties included, in index order
    if len(cand) < k:  # NaNs: argsort ranks them last
        return np.argsort(neg, kind="stable")[:k]  # type: ignore[no-any-return]
    return cand[np.argsort(neg[cand], kind="stable")[:k]]  # type: ignore[no-any-return]


def _numbers(a: np.ndarray) -> list[Any]:
    a = np.asarray(a, dtype=np.float64)
    if np.isfinite(a).all():
        return a.tolist()  # type: ignore[no-any-return]
    return [_numbers(r) if a.ndim > 1 else number(r) for r in a] if a.ndim else [number(a)]


def model_json(name: str, model: Model) -> dict[str, Any]:
    c = model.config
    return {"name": name, "title": repr(model), "n_layer": c.n_layer, "n_head": c.n_head, "n_embd": c.n_embd,
            "block_size": c.block_size, "vocab_size": c.vocab_size, "n_params": model.n_params,
            "vocab": list(model.vocab) if c.vocab_size <= 64 and model.vocab else None,
            "tokenizer": "text" if model.vocab else "ids"}


# -- one cell -------------------------------------------------------------------------------------
def cell_json(sheet: Sheet, name: str) -> dict[str, Any]:
    """Exactly what the Python API answers for one cell: name, value, formula, precedents, dependents, kind, state."""
    name = sheet.name(*sheet.cell(name))
    return {"name": name, "value": number(sheet.value(name)), "formula": sheet.formula(name),
            "precedents": sheet.precedents(name), "dependents": sheet.dependents(name),
            "kind": sheet.kind(name), "state": sheet.state(name)}


def cell_detail(sheet: Sheet, name: str) -> dict[str, Any]:
    """The cell view: `cell_json` (lists cut to LIST_LIMIT, with their full lengths) and where the cell sits."""
    out = cell_json(sheet, name)
    tensor, idx = sheet.cell(out["name"])
    spec = sheet.graph.specs[tensor]
    for key in ("precedents", "dependents"):
        out[f"n_{key}"] = len(out[key])
        out[key] = out[key][:LIST_LIMIT]
    out.update(tensor=tensor, index=list(idx), axes=list(spec.axes), stage=spec.stage, text=sheet.text)
    return out


def influence_json(sheet: Sheet, target: str, top: int, by: str) -> dict[str, Any]:
    infl = sheet.influence(target, top=top, by=by)
    return {"target": sheet.name(*sheet.cell(target)), "by": by, "value": number(infl.target_value),
            "items": [{"cell": i.cell, "value": number(i.value), "grad": number(i.grad), "score": number(i.score)}
                      for i in infl],
            "by_block": [{"key": g.key, "score": number(g.score)} for g in infl.by_block()[:8]]}


# -- a tensor as a grid ---------------------------------------------------------------------------
def _labels(sheet: Sheet, axis: str, ids: range) -> list[str]:
    if axis == "vocab":
        return [sheet.token_label(i) for i in ids]
    return [str(i) for i in ids]


def _tensor(sheet: Sheet, tensor: str) -> str:
    if not isinstance(tensor, str) or tensor not in sheet.graph.specs:
        raise UnknownNameError(f"{tensor!r} is not a tensor of this model." + suggest(str(tensor), sheet.graph.specs))
    return tensor


def _as_grid(tensor: str, axes_: tuple[str, ...], a: np.ndarray, lead: int) -> tuple[np.ndarray, list[str], list[int]]:
    """(2-D array, [row axis, column axis], leading indices) of a tensor (or a mask of it) as drawn."""
    axes: list[str] = list(axes_)
    fixed: list[int] = []
    if a.ndim == 3:
        if not 0 <= lead < a.shape[0]:
            raise IndexError_(f"{tensor}: {axes[0]} {lead} is out of range 0..{a.shape[0] - 1}.")
        a, fixed, axes = a[lead], [lead], axes[1:]
    if a.ndim == 0:
        return a.reshape(1, 1), ["", ""], fixed
    if a.ndim == 1:  # a value per position reads down, a vector of weights across
        if axes[0] == "pos":
            return a.reshape(-1, 1), [axes[0], ""], fixed
        return a.reshape(1, -1), ["", axes[0]], fixed
    return a, axes, fixed


def tensor_json(sheet: Sheet, tensor: str, lead: int = 0, r0: int = 0, c0: int = 0,
                window: int = WINDOW) -> dict[str, Any]:
    """A window of at most `window` × `window` cells of a tensor (one head of a per-head tensor)."""
    spec = sheet.graph.specs[_tensor(sheet, tensor)]
    full = np.asarray(sheet.values(tensor))  # the tensor's own dtype: a float64 copy of GPT-2's wte is 300 MB
    a, axes, fixed = _as_grid(tensor, spec.axes, full, lead)
    n_rows, n_cols = a.shape
    if not (0 <= r0 < n_rows and 0 <= c0 < n_cols):
        raise IndexError_(f"{tensor}: window start ({r0}, {c0}) is outside its {n_rows} × {n_cols} cells.")
    rows, cols = range(r0, min(n_rows, r0 + window)), range(c0, min(n_cols, c0 + window))
    win = np.asarray(a[rows.start:rows.stop, cols.start:cols.stop], dtype=np.float64)
    prefix = tensor + "".join(f"[{i}]" for i in fixed)
    return {
        "name": tensor, "kind": spec.kind, "axes": list(spec.axes), "shape": list(full.shape),
        "lead": fixed, "prefix": prefix, "row_axis": axes[0], "col_axis": axes[1], "r0": r0, "c0": c0,
        "n_rows": n_rows, "n_cols": n_cols, "rows": _labels(sheet, axes[0], rows) if axes[0] else [""],
        "cols": _labels(sheet, axes[1], cols) if axes[1] else [""], "values": _numbers(win),
        "absmax": _absmax(a), "doc": spec.doc, "stage": spec.stage,
    }


def _absmax(a: np.ndarray) -> float | str:
    """The largest |value| among the finite ones (0 if none): two passes without a copy when all are finite."""
    if not a.size:
        return 0.0
    top = float(max(a.max(), -a.min()))
    if math.isfinite(top):
        return top
    fin = a[np.isfinite(a)]  # a masked score is -inf: only then the slow way
    return float(np.abs(fin).max()) if fin.size else 0.0


def cone_json(sheet: Sheet, name: str, tensor: str, lead: int = 0, r0: int = 0, c0: int = 0,
              window: int = WINDOW) -> dict[str, Any]:
    """Which cells of a tensor window are in the cone of `name` (what it reads), and the cone per tensor."""
    prov = sheet.provenance(name)
    _tensor(sheet, tensor)
    full = prov.masks.get(tensor)
    mask: list[list[bool]] = []
    if full is not None:
        m = _as_grid(tensor, sheet.graph.specs[tensor].axes, full, lead)[0]
        mask = m[r0:r0 + window, c0:c0 + window].tolist()
    return {"name": sheet.name(*sheet.cell(name)), "tensor": tensor, "mask": mask, "cells": len(prov),
            "tensors": {t: int(m.sum()) for t, m in prov.masks.items() if m.any()}}


# -- the model at a glance ------------------------------------------------------------------------
def prediction_json(sheet: Sheet, pos: int | None = None) -> dict[str, Any]:
    """The next-token logits and probabilities at one position (default: the last), best first, top 10."""
    t = sheet.T - 1 if pos is None else pos
    if not (isinstance(t, int) and 0 <= t < sheet.T):
        raise IndexError_(f"position {t} is out of range 0..{sheet.T - 1}.")
    logits, probs = sheet.value(f"logit[{t}]"), sheet.value(f"prob[{t}]")
    order = top(logits, 10)
    return {"pos": t, "tokens": [{"token": sheet.token_label(int(v)), "id": int(v), "logit": number(logits[v]),
                                  "prob": number(probs[v])} for v in order]}


def _stage_of(sheet: Sheet, name: str) -> str:
    m = BLOCK.match(name)  # h[3] (GPT-2), layers[3] (Llama, NeoX)
    if m:
        return m.group(0)
    return "embedding" if sheet.graph.specs[name].stage == "embedding" else "output"


def overview_json(sheet: Sheet) -> dict[str, Any]:
    """Stages from the embedding through the blocks to the output, and the flow of this input through them."""
    g, cfg = sheet.graph, sheet.config
    stages: dict[str, list[dict[str, Any]]] = {}
    for t in g.order:
        spec = g.specs[t]
        if t == "temperature":
            continue
        stages.setdefault(_stage_of(sheet, t), []).append(
            {"name": t, "kind": spec.kind, "shape": list(spec.shape(sheet.T)), "part": spec.stage})
    prefix = block_prefix(g)
    names = ["emb"] + [f"{prefix}[{i}].out" for i in range(cfg.n_layer)]
    resid = [sheet.values(n) for n in names]
    norms = [np.linalg.norm(r, axis=-1) for r in resid]
    eng = sheet.engine  # the outputs read in place: copies of GPT-2's [T, 50,257] logits and probabilities cost ~5 ms
    eng.ensure_whole("logit")
    eng.ensure_whole("prob")
    probs, nxt = eng.view("prob"), np.argmax(eng.view("logit"), axis=-1)
    flow = [{"pos": t, "token": sheet.token_label(sheet.tokens[t]), "next": sheet.token_label(int(nxt[t])),
             "p": number(probs[t, nxt[t]]), "norms": [number(n[t]) for n in norms]} for t in range(sheet.T)]
    return {"text": sheet.text, "tokens": [sheet.token_label(i) for i in sheet.tokens], "T": sheet.T,
            "stages": [{"stage": k, "tensors": v} for k, v in stages.items()], "flow": flow,
            "norm_max": number(max(float(n.max()) for n in norms)),
            "resid": names, "prefix": prefix, "prediction": prediction_json(sheet)}


# -- what-ifs and generation ------------------------------------------------------------------------
def receipt_json(receipt: Receipt, sheet: Sheet) -> dict[str, Any]:
    """An edit's receipt after reading every output (settle): what went stale, what was recomputed or reused."""
    receipt.settle()
    by = receipt.stale_by_tensor
    # the effect first: asked before it, the counts would also compare the rows read so far (~20 ms at GPT-2)
    change, flipped = receipt.max_change, receipt.flipped
    return {"action": receipt.action, "cells": list(receipt.cells), "stale": receipt.stale,
            "recomputed": receipt.recomputed, "reused": receipt.reused, "cutoff": receipt.cutoff,
            "max_change": {k: (None if v is None else number(v)) for k, v in change.items()},
            "flipped": flipped, "stale_by_tensor": by, "text": sheet.text,
            "prediction": prediction_json(sheet)}


def dist_json(sheet: Sheet, pos: int | None, temperature: float, top_k: int | None,
              top_p: float | None) -> dict[str, Any]:
    """The next-token distribution `model.generate` samples from at one position, for these controls."""
    t = sheet.T - 1 if pos is None else pos
    if not 0 <= t < sheet.T:
        raise IndexError_(f"position {t} is out of range 0..{sheet.T - 1}.")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise QueryError(f"temperature must be a finite number >= 0, got {temperature!r}.")
    if top_k is not None and top_k < 1:
        raise QueryError(f"top_k must be at least 1 or empty, got {top_k}.")
    if top_p is not None and not 0 < top_p <= 1:
        raise QueryError(f"top_p must be in (0, 1] or empty, got {top_p}.")
    logits = np.array(sheet.value(f"logit[{t}]"), dtype=np.float64)
    if temperature == 0:  # greedy, as generate does it
        dist = np.zeros_like(logits)
        dist[int(np.argmax(logits))] = 1.0
    else:
        dist = sample_dist(logits, temperature, top_k, top_p)
    order = top(dist, 20)
    return {"pos": t, "temperature": temperature, "top_k": top_k, "top_p": top_p,
            "tokens": [{"token": sheet.token_label(int(v)), "id": int(v), "p": number(dist[v]),
                        "logit": number(logits[v])} for v in order],
            "kept": int((dist > 0).sum()), "vocab_size": int(dist.size)}


def sample(sheet: Sheet, temperature: float, top_k: int | None, top_p: float | None, seed: int) -> int:
    """One token drawn like `model.generate` draws it (greedy at temperature 0), seeded."""
    d = dist_json(sheet, None, temperature, top_k, top_p)
    if temperature == 0:
        return int(d["tokens"][0]["id"])
    logits = np.array(sheet.value(f"logit[{sheet.T - 1}]"), dtype=np.float64)
    dist = sample_dist(logits, temperature, top_k, top_p)
    rng = np.random.default_rng(seed)
    return min(int(np.searchsorted(np.cumsum(dist), rng.random() * dist.sum(), side="right")),
               int(np.flatnonzero(dist)[-1]))
