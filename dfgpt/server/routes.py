"""The explorer's requests: each parses its parameters, takes the session's sheet and answers with dfgpt.server.api.

A handler receives the session (its lock already held, so the sheet is its own for the call)
and the request's parameters as strings (GET) or JSON values (POST); every bad parameter is
a `DfgptError`, which the app turns into a 4xx JSON answer.

>>> import dfgpt
>>> from dfgpt.server.sessions import SessionStore
>>> session = SessionStore({"sort": dfgpt.load("sort-random")}).get(None)
>>> cell(session, {"model": "sort", "text": "CABACA", "name": "logit[5][A]"})["kind"]
'computed'
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..circuits.circuit import Circuit
from ..errors import QueryError
from ..model import Model
from . import api
from .circuit import circuit_json
from .sessions import Session, encode
from .view import View, locate, view_json

__all__ = ["GET", "POST", "tables"]

Params = Mapping[str, Any]
Handler = Callable[[Session, Params], dict[str, Any]]


# -- parameters -----------------------------------------------------------------------------------
def _str(p: Params, key: str, default: str | None = None) -> str:
    v = p.get(key, default)
    if v is None:
        raise QueryError(f"{key}: this request needs {key}=..., "
                         "e.g. /api/cell?model=sort&text=CABACA&name=logit[5][A].")
    if not isinstance(v, str):
        raise QueryError(f"{key}: expected a text, got {type(v).__name__}.")
    return v


def _int(p: Params, key: str, default: int | None = None, lo: int = 0, hi: int = 1 << 31) -> int | None:
    v = p.get(key)
    if v is None or v == "":
        return default
    if isinstance(v, bool):
        raise QueryError(f"{key}: expected a whole number, got {v!r}.")
    try:
        n = int(v) if isinstance(v, (int, str)) else None
    except ValueError:
        n = None
    if n is None or not lo <= n <= hi:
        raise QueryError(f"{key}: expected a whole number in {lo}..{hi}, got {v!r}.")
    return n


def _float(p: Params, key: str, default: float | None = None) -> float | None:
    v = p.get(key)
    if v is None or v == "":
        return default
    try:
        x = float(v) if isinstance(v, (int, float, str)) and not isinstance(v, bool) else math.nan
    except ValueError:
        x = math.nan
    if not math.isfinite(x):
        raise QueryError(f"{key}: expected a finite number, got {v!r}.")
    return x


def _edits(p: Params) -> dict[str, float] | None:
    """The page's edits (cell -> value): a list of [cell, value] pairs, as JSON text in a GET; None: the session's."""
    v = p.get("edits")
    if v is None:
        return None
    example = 'e.g. [["lm_head.w[A][26]", -5]]'
    if isinstance(v, str):
        try:
            v = json.loads(v or "[]")
        except (json.JSONDecodeError, RecursionError, ValueError):
            raise QueryError(f"edits: expected a list of [cell, value] pairs, {example}.") from None
    if not isinstance(v, list) or not all(isinstance(e, list) and len(e) == 2 and isinstance(e[0], str)
                                          for e in v):
        raise QueryError(f"edits: expected a list of [cell, value] pairs, {example}.")
    out: dict[str, float] = {}
    for name, x in v:
        if isinstance(x, bool) or not isinstance(x, (int, float, str)):
            raise QueryError(f"edits: the value of {name} must be a number, not {x!r}.")
        try:
            f = float(x)
        except ValueError:
            raise QueryError(f"edits: the value of {name} must be a number, not {x!r}.") from None
        if not math.isfinite(f):
            raise QueryError(f"edits: the value of {name}, {x!r}, is not a finite number.")
        out[name] = f
    return out


def _sheet(s: Session, p: Params) -> Any:
    return s.sheet(_str(p, "model", "sort"), _str(p, "text"), _edits(p))


def _view_of(p: Params) -> View:
    """The view the page shows, from its address's fields; the sampling controls as `dist` reads them."""
    view = p.get("view")
    temperature, top_k, top_p = _controls(p)
    name = p.get("cell")
    tensor = p.get("tensor")
    if view == "circuit":  # the circuit view's page: the top bar, the cell and the distribution, no grid
        view, tensor = "tensor", None
    return View(view=view if isinstance(view, str) and view else None, block=_int(p, "block", None),
                head=_int(p, "head", None), tensor=tensor if isinstance(tensor, str) and tensor else None,
                lead=_int(p, "lead", 0) or 0, r0=_int(p, "r0", 0) or 0, c0=_int(p, "c0", 0) or 0,
                cell=name if isinstance(name, str) and name else None,
                temperature=temperature, top_k=top_k, top_p=top_p)


def _page(s: Session, p: Params, sheet: Any) -> dict[str, Any]:
    """The view after a request, with the sheet's state: text, edits, history and the model."""
    name = _str(p, "model", "sort")
    out = view_json(sheet, _view_of(p), rank=lambda sheet, cell: _ranked(s, sheet, cell),
                    memo=lambda key, make: _remembered(s, sheet, key, make))
    out["model"] = api.model_json(name, sheet.model)
    out["text"] = sheet.text
    out["edits"] = [[c, x] for c, x in s.edits.get(name, {}).items()]
    out["history"] = _history(s, p)
    return out


def _history(s: Session, p: Params) -> dict[str, int]:
    undo, redo = s.history.get(_str(p, "model", "sort"), (0, 0))
    return {"undo": undo, "redo": redo}


# -- reads ----------------------------------------------------------------------------------------
def models(s: Session, p: Params) -> dict[str, Any]:
    return {"models": [api.model_json(k, m) for k, m in s.models.items()]}


def overview(s: Session, p: Params) -> dict[str, Any]:
    sheet = _sheet(s, p)
    out = api.overview_json(sheet)
    out["model"] = api.model_json(_str(p, "model", "sort"), sheet.model)
    out["history"] = _history(s, p)
    return out


def cell(s: Session, p: Params) -> dict[str, Any]:
    return api.cell_json(_sheet(s, p), _str(p, "name"))


def cellview(s: Session, p: Params) -> dict[str, Any]:
    return api.cell_detail(_sheet(s, p), _str(p, "name"))


def tensor(s: Session, p: Params) -> dict[str, Any]:
    return api.tensor_json(_sheet(s, p), _str(p, "name"), _int(p, "lead", 0) or 0, _int(p, "r0", 0) or 0,
                           _int(p, "c0", 0) or 0)


def cone(s: Session, p: Params) -> dict[str, Any]:
    return api.cone_json(_sheet(s, p), _str(p, "name"), _str(p, "tensor"), _int(p, "lead", 0) or 0,
                         _int(p, "r0", 0) or 0, _int(p, "c0", 0) or 0)


def influence(s: Session, p: Params) -> dict[str, Any]:
    """`sheet.influence`, remembered per sheet state: a full backward pass costs seconds at GPT-2 scale."""
    return _ranked(s, _sheet(s, p), _str(p, "name"), _int(p, "top", 10, 1, 200) or 10, _str(p, "by", "grad*value"))


def _ranked(s: Session, sheet: Any, name: str, top: int = 10, by: str = "grad*value") -> dict[str, Any]:
    key = (id(sheet), sheet.engine.revision, sheet.T, sheet.name(*sheet.cell(name)), top, by)
    if key not in s.answers:
        s.answers[key] = api.influence_json(sheet, name, top, by)
        while len(s.answers) > 16:
            s.answers.pop(next(iter(s.answers)))
    return s.answers[key]  # type: ignore[return-value]


def _remembered(s: Session, sheet: Any, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
    """A cell's structure (its lists, its cone's counts and windows), remembered per sheet in the session's answers."""
    key = (id(sheet), *key)
    if key not in s.answers:
        s.answers[key] = make()
        while len(s.answers) > 32:
            s.answers.pop(next(iter(s.answers)))
    return s.answers[key]


def _controls(p: Params) -> tuple[float, int | None, float | None]:
    temperature = _float(p, "temperature", 1.0)
    return (1.0 if temperature is None else temperature), _int(p, "top_k", None, 1), _float(p, "top_p", None)


def dist(s: Session, p: Params) -> dict[str, Any]:
    return api.dist_json(_sheet(s, p), _int(p, "pos", None), *_controls(p))


def page(s: Session, p: Params) -> dict[str, Any]:
    """Everything one view shows, in one answer (`dfgpt.server.view`); after a rebuild, the edits' receipt."""
    sheet = _sheet(s, p)
    out = _page(s, p, sheet)
    name = _str(p, "model", "sort")
    restored = s.restored.get(name)
    if restored is not None:
        out["receipt"] = {**api.receipt_json(restored, sheet), "restored": True}  # type: ignore[arg-type]
    else:
        out["receipt"] = s.receipts.get(name)
    return out


def goto(s: Session, p: Params) -> dict[str, Any]:
    """Where a typed name leads (Ctrl+G): a tensor, a row of one, or a cell."""
    return locate(_sheet(s, p), _str(p, "q"))


# -- what-ifs -------------------------------------------------------------------------------------
def _done(s: Session, p: Params, sheet: Any, receipt: Any, undo: int, redo: int) -> dict[str, Any]:
    model = _str(p, "model", "sort")
    s.history[model] = (undo, redo)
    out = api.receipt_json(receipt, sheet)
    out["history"] = {"undo": undo, "redo": redo}
    return _shown(s, p, sheet, out)


def _shown(s: Session, p: Params, sheet: Any, out: dict[str, Any]) -> dict[str, Any]:
    """An action's answer, with the view after it when the page asks (`show`): one request per interaction."""
    s.receipts[_str(p, "model", "sort")] = dict(out)  # shown again by a reload of the same state
    if p.get("show"):
        out["page"] = _page(s, p, sheet)
    return out


def set_cell(s: Session, p: Params) -> dict[str, Any]:
    sheet = _sheet(s, p)
    value = p.get("value")
    if value is None or isinstance(value, (bool, list, dict)):
        raise QueryError("value: give the new value, a number (or a token for tokens[i]), e.g. {\"value\": 0.5}.")
    name = sheet.name(*sheet.cell(_str(p, "name")))
    receipt = sheet.set(name, value)
    model = _str(p, "model", "sort")
    edits = dict(s.edits.get(model, {}))
    if not name.startswith("tokens["):  # a token edit changes the text, which the address holds already
        edits[name] = float(sheet.value(name))  # as stored (a float32 weight rounds): replayed, it is the same
    s.record(model, edits)
    undo, _ = s.history.get(model, (0, 0))
    return _done(s, p, sheet, receipt, undo + 1, 0)


def undo(s: Session, p: Params) -> dict[str, Any]:
    sheet = _sheet(s, p)
    receipt = sheet.undo()
    s.step_back(_str(p, "model", "sort"), undo=True)
    u, r = s.history.get(_str(p, "model", "sort"), (0, 0))
    return _done(s, p, sheet, receipt, max(0, u - 1), r + 1)


def redo(s: Session, p: Params) -> dict[str, Any]:
    sheet = _sheet(s, p)
    receipt = sheet.redo()
    s.step_back(_str(p, "model", "sort"), undo=False)
    u, r = s.history.get(_str(p, "model", "sort"), (0, 0))
    return _done(s, p, sheet, receipt, u + 1, max(0, r - 1))


def new_input(s: Session, p: Params) -> dict[str, Any]:
    """A new input: the same length is a token edit (undoable); another length a new sheet with the edited weights.

    The new sheet keeps the edited weights (`kept_weights`, the tensors that differ from the
    model's) and the sheet's temperature; `kept_edits` says whether anything was kept. Pinned
    activations belong to the old input's positions: they are dropped, and counted.
    """
    name = _str(p, "model", "sort")
    sheet = _sheet(s, p)
    new = _str(p, "new")
    ids = encode(sheet.model, new)  # a bad token or a text too long raises here, before anything changes
    if len(ids) == sheet.T:
        changes = {f"tokens[{i}]": t for i, t in enumerate(ids) if t != sheet.tokens[i]}
        if not changes:
            raise QueryError(f"the input is already {new!r}.")
        receipt = sheet.set_many(changes)
        s.record(name, s.edits.get(name, {}))
        u, _ = s.history.get(name, (0, 0))
        return _done(s, p, sheet, receipt, u + 1, 0)
    engine = sheet.engine
    weights = [t for t in sorted(engine.owned) if t != "temperature" and not (
        engine.values[t] is engine.base[t] or np.array_equal(engine.values[t], engine.base[t]))]
    temperature = float(engine.values["temperature"])  # the sheet's, not the model's: carried over by hand
    model = Model.of(sheet.to_model()) if weights else s.model(name)
    fresh = model.sheet(ids, temperature=temperature)
    s.replace(name, fresh, _kept(sheet, s.edits.get(name, {})))
    return _shown(s, p, fresh, {
            "action": "new input", "text": fresh.text, "kept_edits": bool(weights) or temperature != 1.0,
            "kept_weights": weights, "temperature": temperature,
            "dropped_pins": sum(len(p) for p in engine.pins.values()),  # pinned cells belong to the old positions
            "history": {"undo": 0, "redo": 0},
            "prediction": api.prediction_json(fresh)})


def _kept(sheet: Any, edits: Mapping[str, float]) -> dict[str, float]:
    """The edits a sheet of other positions keeps: weights and the temperature; pinned activations belong to the old."""
    return {c: x for c, x in edits.items() if sheet.kind(c) != "computed"}


def step(s: Session, p: Params) -> dict[str, Any]:
    """Generation, one step: draw the next token as `model.generate` would and append it (an undoable edit)."""
    sheet = _sheet(s, p)
    temperature, top_k, top_p = _controls(p)
    seed = _int(p, "seed", 0) or 0
    token = api.sample(sheet, temperature, top_k, top_p, seed + sheet.T)
    name = _str(p, "model", "sort")
    if sheet.T >= sheet.config.block_size:  # the context is full: keep its last block_size tokens, as generate does
        edits = s.edits.get(name, {})
        fresh = s.model(name).sheet([*sheet.tokens[1:], token])
        kept = _kept(sheet, edits)
        if kept:
            fresh.set_many(kept)
        s.replace(name, fresh, kept)
        label = sheet.token_label(token)
        out = {"action": "append, cropped", "cells": [f"tokens[{fresh.T - 1}] = {label}"], "token": label,
               "cropped": sheet.token_label(sheet.tokens[0]), "dropped_pins": len(edits) - len(kept),
               "text": fresh.text, "prediction": api.prediction_json(fresh), "history": {"undo": 0, "redo": 0}}
        return _shown(s, p, fresh, out)
    receipt = sheet.append(token)
    s.record(name, s.edits.get(name, {}))
    u, _ = s.history.get(name, (0, 0))
    out = _done(s, p, sheet, receipt, u + 1, 0)
    out["token"] = sheet.token_label(token)
    if "page" in out:
        out["page"]["text"] = sheet.text
    return out


GET: dict[str, Handler] = {"models": models, "overview": overview, "cell": cell, "cellview": cellview,
                           "tensor": tensor, "cone": cone, "influence": influence, "dist": dist, "view": page,
                           "goto": goto}
POST: dict[str, Handler] = {"view": page, "set": set_cell, "undo": undo, "redo": redo, "input": new_input, "step": step}


# -- the circuit view -----------------------------------------------------------------------------
def circuit(s: Session, p: Params, loaded: Mapping[str, Circuit] | None = None) -> dict[str, Any]:
    """A circuit over pairs (or a loaded one) with, when the page asks (`show`), the page around it."""
    name = _str(p, "model", "sort")
    out = circuit_json(s.model(name), p, name, loaded)
    if p.get("show"):  # the top bar, the cell panel and the distribution: the page's view without a grid
        out["page"] = _page(s, {**p, "view": "circuit"}, _sheet(s, p))
    return out


def tables(loaded: Mapping[str, Circuit] | None = None) -> tuple[dict[str, Handler], dict[str, Handler]]:
    """The GET and POST handlers, the circuit view's with the circuits `dfgpt serve --circuit` loaded."""
    def found(s: Session, p: Params) -> dict[str, Any]:
        return circuit(s, p, loaded)

    return {**GET, "circuit": found}, {**POST, "circuit": found}
