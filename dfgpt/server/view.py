"""One view of the explorer in one answer: the overview, its grids, the selected cell and its cone, the distribution.

The page asks once per interaction (`GET /api/view`, or an edit's POST, which answers its
receipt and the view after it), so a click is one round trip, not six to nine. A part that
cannot be shown (a cell name that does not exist, a head out of range) is an error of that
part only (`errors`, by the field it belongs to), beside the rest of the view: a bad address
is never a dead end.

>>> import dfgpt
>>> sheet = dfgpt.load("sort-random").sheet("CABACA")
>>> v = view_json(sheet, View(view="head", block=1, head=2, cell="h[1].attn.att[2][5][3]"))
>>> [g["name"] for g in v["grids"]], v["cell"]["name"], sum(map(sum, v["grids"][0]["cone"])) > 0
(['h[1].attn.att', 'h[1].attn.score', 'h[1].attn.q', 'h[1].attn.k', 'h[1].attn.v'], 'h[1].attn.att[2][5][3]', True)
>>> view_json(sheet, View(cell="h[1]"))["errors"]["cell"][:17]
"'h[1]' selects mo"
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DfgptError, IndexError_, QueryError
from ..sheet import Sheet
from . import api
from .architecture import BLOCK, architecture_json, block_prefix, tensor_of

__all__ = ["HEAD_PARTS", "INFLUENCE_LIMIT", "View", "locate", "view_json"]

HEAD_PARTS = ("att", "score", "q", "k", "v")  # the grids of a head, in the order the page shows them
INFLUENCE_LIMIT = 20_000_000  # parameters up to which a cell's top influences come with its view (ms, not s)


@dataclass(frozen=True)
class View:
    """What the page shows: the view, the selected cell, the sampling controls (the page's address, parsed)."""

    view: str | None = None  # overview, block, head, tensor; None: the finest the others name
    block: int | None = None
    head: int | None = None
    tensor: str | None = None
    lead: int = 0
    r0: int = 0
    c0: int = 0
    cell: str | None = None
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None


def locate(sheet: Sheet, query: str) -> dict[str, Any]:
    """Where a typed name leads: a tensor, a cell, or a row of a tensor (`wte[50000]`), as the view's fields.

    >>> import dfgpt
    >>> s = dfgpt.load("sort-random").sheet("CABACA")
    >>> locate(s, "wte[C]")["cell"], locate(s, "logit")["tensor"], locate(s, "h[0].attn.att[1][4]")["lead"]
    (None, 'logit', 1)
    """
    q = query.strip()
    if q in sheet.graph.specs:
        return {"view": "tensor", "tensor": q, "lead": 0, "r0": 0, "c0": 0, "cell": None}
    try:
        tensor, idx = sheet.cell(q)
        return {"view": "tensor", **_place(sheet, tensor, list(idx)), "cell": sheet.name(tensor, idx)}
    except IndexError_:
        pass  # fewer indices than axes: a row (or a head) of the tensor, completed below to find which
    for fill in range(1, 4):
        try:
            tensor, idx = sheet.cell(q + "[0]" * fill)
        except DfgptError:
            continue
        return {"view": "tensor", **_place(sheet, tensor, list(idx[: len(idx) - fill]) + [0] * fill), "cell": None}
    sheet.cell(q)  # no completion names a cell: the error of the name as typed
    raise QueryError(f"{q!r} names no tensor, row or cell.")


def _place(sheet: Sheet, tensor: str, idx: list[int]) -> dict[str, Any]:
    """The grid (per-head lead, 64-cell window) that shows the cell at `idx` of `tensor`."""
    axes = sheet.graph.specs[tensor].axes
    lead, row, col = 0, 0, 0
    if len(idx) == 3:
        lead, row, col = idx
    elif len(idx) == 2:
        row, col = idx
    elif len(idx) == 1:
        row, col = (idx[0], 0) if axes[0] == "pos" else (0, idx[0])
    w = api.WINDOW
    return {"tensor": tensor, "lead": lead, "r0": row // w * w, "c0": col // w * w}


def _attention(sheet: Sheet, block: int) -> str:
    """A block's attention sub-layer, by the family's names: `h[1].attn` (GPT-2), `layers[1].self_attn` (Llama)."""
    inner = f"{block_prefix(sheet.graph)}[{block}]."
    return next((n[:-4] for n in sheet.graph.order if n.startswith(inner) and n.endswith(".att")), inner + "attn")


def _grids(sheet: Sheet, v: View, n_layer: int, n_head: int) -> list[dict[str, Any]]:
    if v.view in ("block", "head"):
        b, p = v.block, block_prefix(sheet.graph)
        if b is None or not 0 <= b < n_layer:
            raise IndexError_(f"block {b} is not a block of this model; its blocks are {p}[0] to {p}[{n_layer - 1}].")
        attn = _attention(sheet, b)
        if v.view == "block":
            return [api.tensor_json(sheet, f"{attn}.att", i) for i in range(n_head)]
        if v.head is None or not 0 <= v.head < n_head:
            raise IndexError_(f"head {v.head} is not a head of {p}[{b}]; its heads are 0 to {n_head - 1}.")
        out = []
        for part in HEAD_PARTS:  # grouped-query attention: a key/value head serves n_head // n_kv_head query heads
            kv = sheet.graph.specs[f"{attn}.{part}"].shape(sheet.T)[0]
            out.append(api.tensor_json(sheet, f"{attn}.{part}", v.head // (n_head // kv)))
        return out
    if v.view == "tensor" and v.tensor:
        return [api.tensor_json(sheet, v.tensor, v.lead, v.r0, v.c0)]
    return []


Ranker = Callable[[Sheet, str], dict[str, Any]]  # a cell's top-10 influences as JSON (the session remembers them)
Memo = Callable[[tuple[Any, ...], Callable[[], Any]], Any]  # (key, make) -> the remembered answer, or make()'s


def _rank(sheet: Sheet, name: str) -> dict[str, Any]:
    return api.influence_json(sheet, name, 10, "grad*value")


def _once(key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
    return make()


def _cell(sheet: Sheet, name: str, grids: list[dict[str, Any]], small: bool, rank: Ranker,
          memo: Memo) -> dict[str, Any]:
    """The cell view, its cone outlined on every grid shown, and (small models) its top influences.

    The lists and the cone are structure: they change with the positions and the pins, not with
    values, so they are remembered across edits (`memo`); at GPT-2 size they cost ~0.6 s a cell.
    """
    tensor, idx = sheet.cell(name)
    canon = sheet.name(tensor, idx)
    spec = sheet.graph.specs[tensor]
    pins = tuple(sorted((t, tuple(sorted(p))) for t, p in sheet.engine.pins.items() if p))

    def lists() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, cells in (("precedents", sheet.precedents(canon)), ("dependents", sheet.dependents(canon))):
            out[key], out[f"n_{key}"] = cells[:api.LIST_LIMIT], len(cells)
            # the trace arrows: the tensors the cell reads directly and those that read it, in graph order
            out.setdefault("trace", {})[key] = list(dict.fromkeys(tensor_of(sheet, c) for c in cells))
        return out

    cone: list[Any] = []  # the cell's provenance, made at most once here, and only if nothing remembered serves

    def prov() -> Any:
        if not cone:
            cone.append(sheet.provenance(canon))
        return cone[0]

    key = (canon, sheet.T, pins)
    counts = memo(("counts", *key), lambda: {  # popcount: 38.6M-cell masks at GPT-2 size
        t: int(np.count_nonzero(m)) for t, m in prov().masks.items()})
    out = {"name": canon, "value": api.number(sheet.value(canon)), "formula": sheet.formula(canon),
           **memo(("lists", *key), lists), "kind": spec.kind, "state": sheet.state(canon),
           "tensor": tensor, "index": list(idx), "axes": list(spec.axes), "stage": spec.stage, "text": sheet.text,
           "cone": {"cells": sum(counts.values()), "tensors": {t: n for t, n in counts.items() if n}}}
    for g in grids:  # the cone's window on each grid shown: remembered, the whole cone (100+ MB at GPT-2) is not
        lead = g["lead"][0] if g["lead"] else 0

        def cut(g: dict[str, Any] = g, lead: int = lead) -> list[list[int]]:
            return _window(sheet, prov().masks.get(g["name"]), g, lead)

        g["cone"] = memo(("window", *key, g["name"], lead, g["r0"], g["c0"]), cut)
    out["influence"] = None
    if small and out["kind"] == "computed":
        out["influence"] = rank(sheet, out["name"])
    return out


def _window(sheet: Sheet, full: np.ndarray | None, g: dict[str, Any], lead: int) -> list[list[int]]:
    """A cone mask cut to a grid's window (0/1 per cell), or [] when the cone misses the tensor."""
    if full is None:
        return []
    m = api._as_grid(g["name"], sheet.graph.specs[g["name"]].axes, full, lead)[0]
    return m[g["r0"]:g["r0"] + api.WINDOW, g["c0"]:g["c0"] + api.WINDOW].astype(int).tolist()  # type: ignore[no-any-return]


def view_json(sheet: Sheet, v: View, small: bool | None = None, rank: Ranker = _rank,
              memo: Memo = _once) -> dict[str, Any]:
    """Everything a view shows, for one sheet state; `errors` holds the parts that could not be shown, by field.

    small: whether a computed cell comes with its top influences (default: models of at most
    INFLUENCE_LIMIT parameters); rank: how they are ranked, memo: how a cell's structure is
    remembered (the routes pass the session's, per sheet).
    """
    cfg = sheet.config
    small = sheet.model.n_params <= INFLUENCE_LIMIT if small is None else small
    errors: dict[str, str] = {}
    # the overview (~70 ms at GPT-2 size T = 64: 13 norms of [T, C], the flow) changes only with an edit
    out: dict[str, Any] = {"overview": memo(("overview", sheet.engine.revision, sheet.T),
                                            lambda: api.overview_json(sheet))}
    view, fields = v.view, {}
    if view is None:
        view = "tensor" if (v.cell or v.tensor) else "head" if v.head is not None else (
            "block" if v.block is not None else "overview")
    if view not in ("overview", "block", "head", "tensor"):
        errors["view"] = f"there is no view {view!r}; the views are overview, block, head and tensor."
        view = "overview"
    if view == "tensor" and not v.tensor and v.cell:
        try:
            fields = locate(sheet, v.cell)
        except DfgptError as e:
            errors["cell"] = str(e)
            view = "overview"
    v = View(**{**v.__dict__, "view": view, **{k: x for k, x in fields.items() if k != "view"}})
    grids: list[dict[str, Any]] = []
    try:
        grids = _grids(sheet, v, cfg.n_layer, cfg.n_head)
    except DfgptError as e:
        errors["view"] = str(e)
        v = View(**{**v.__dict__, "view": "overview"})
    cell = None
    if v.cell and "cell" not in errors:
        try:
            cell = _cell(sheet, v.cell, grids, small, rank, memo)
        except DfgptError as e:
            errors["cell"] = str(e)
    try:
        out["dist"] = api.dist_json(sheet, None, v.temperature, v.top_k, v.top_p)
    except DfgptError as e:
        errors["sampling"] = str(e)
        out["dist"] = api.dist_json(sheet, None, 1.0, None, None)
    if v.view == "overview":  # the architecture, with the selected cell's block drawn whole
        m = BLOCK.match(cell["tensor"]) if cell else None
        block = int(m.group(2)) if m else v.block or 0
        out["architecture"] = memo(("architecture", sheet.T, block), lambda: architecture_json(sheet, block))
    out.update(view={"view": v.view, "block": v.block, "head": v.head, "tensor": v.tensor, "lead": v.lead,
                     "r0": v.r0, "c0": v.c0, "cell": cell["name"] if cell else None},
               grids=grids, cell=cell, errors=errors)
    return out
