"""Where a sweep patches: the families TransformerLens users know, as cell selections.

| family | cells of one site (layer l, position p, head h) | axes |
|---|---|---|
| `resid_pre` | `emb[p]` (l = 0), `h[l-1].out[p]` | layer, position |
| `resid_mid` | `h[l].mid[p]` | layer, position |
| `resid_post` | `h[l].out[p]` | layer, position |
| `attn_out` | `h[l].attn.out[p]` | layer, position |
| `mlp_out` | `h[l].mlp.out[p]` | layer, position |
| `head_out` (`z`) | head h's slice of `h[l].attn.y[p]` (its weighted values, before `c_proj`) | layer, head, position |
| `q`, `k`, `v` | `h[l].attn.q[h][p]` ... | layer, head, position |
| `pattern` | `h[l].attn.att[h][p]` (query p's row) | layer, head, position |

Every model family finds its own tensors through its graph's roles (`graph.roles`): in Llama
`resid_mid` is `layers[l].mid`, `q` is `layers[l].self_attn.q` (before the rotary turn, as
TransformerLens's `hook_q`); with grouped-query attention the `k` and `v` sites are per key/value
head (the `head` axis has num_key_value_heads entries: a patch of one is a patch for every query
head that reads it).

With `positions="all"` the position axis goes: one site holds every position. Any other
selection is taken as it is written: a path wildcard (`h[*].mid[5]`) gives a `tensor` axis,
and each index written `*` an axis of its own (`h[2].attn.att[*][5]` gives `head`);
`:` and slices stay inside one site.

>>> import dfgpt
>>> s = dfgpt.load("sort-random").sheet("CAB")
>>> g = sites(s, "resid_pre")
>>> g.axes, [len(c) for c in g.coords], g.sites[(1, 2)].cells
(('layer', 'position'), [3, 3], 'h[0].out[2]')
>>> g = sites(s, "h[2].attn.att[*][2]")
>>> g.axes, g.coords
(('tensor', 'head'), (('h[2].attn.att',), (0, 1, 2)))
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.names import parse
from ..errors import DfgptError, EditError, QueryError, suggest
from .patching import selection

if TYPE_CHECKING:
    from ..cells import Cells
    from ..core.evaluate import Mask

__all__ = ["FAMILIES", "Site", "Sites", "sites"]

RESID = {"resid_pre": None, "resid_mid": "h[{l}].mid", "resid_post": "h[{l}].out",
         "attn_out": "h[{l}].attn.out", "mlp_out": "h[{l}].mlp.out"}
HEADS = {"head_out": "h[{l}].attn.y", "z": "h[{l}].attn.y", "q": "h[{l}].attn.q", "k": "h[{l}].attn.k",
         "v": "h[{l}].attn.v", "pattern": "h[{l}].attn.att"}
FAMILIES = tuple(RESID) + tuple(HEADS)


@dataclass(frozen=True)
class Site:
    """One patch of a sweep: its coordinates, its cells as a name, and their masks."""

    key: tuple[int, ...]
    cells: str
    masks: dict[str, Mask]


@dataclass(frozen=True)
class Sites:
    """The sites of a family: named axes, the coordinate labels along each, and the sites by key."""

    family: str
    axes: tuple[str, ...]
    coords: tuple[tuple[Any, ...], ...]
    sites: dict[tuple[int, ...], Site]


# TransformerLens's site families and the role of a block (dfgpt.core.roles.LayerRoles) each is
ROLE = {"resid_mid": "resid_mid", "resid_post": "resid_post", "attn_out": "attn_out", "mlp_out": "mlp_out",
        "head_out": "z", "z": "z", "q": "q", "k": "k", "v": "v", "pattern": "pattern"}


def _tensor(sheet: Cells, family: str, layer: int) -> str:
    """The tensor of a site family in one block: from the graph's roles, else GPT-2's names."""
    roles = sheet.graph.roles
    if family == "resid_pre":
        return roles.layers[layer].resid_pre if roles is not None else sheet.graph.block_input(layer)
    if roles is not None:
        got = getattr(roles.layers[layer], ROLE[family])
        if got is not None:
            return str(got)
    return (RESID.get(family) or HEADS[family]).format(l=layer)  # type: ignore[union-attr]


def _family(sheet: Cells, family: str, all_pos: bool) -> Sites:
    cfg, T = sheet.config, sheet.T
    L, hs = cfg.n_layer, cfg.head_size
    H = cfg.kv_heads if family in ("k", "v") else cfg.n_head  # k and v: per key/value head
    if family in ("resid_mid", "mlp_out") and not cfg.mlp:
        raise QueryError(f"family {family!r} needs an MLP, and this model has none; use resid_pre or resid_post.")
    pos = [slice(None)] if all_pos else list(range(T))
    out: dict[tuple[int, ...], Site] = {}
    for layer in range(L):
        if family in RESID:
            tensor = _tensor(sheet, family, layer)
            for i, p in enumerate(pos):
                text = f"{tensor}[{'' if all_pos else p}]".replace("[]", "")
                key: tuple[int, ...] = (layer,) if all_pos else (layer, i)
                out[key] = Site(key, text, selection(sheet, text))
            continue
        tensor = _tensor(sheet, family, layer)
        for h in range(H):
            for i, p in enumerate(pos):
                ps = ":" if all_pos else str(p)
                if family in ("head_out", "z"):
                    text = f"{tensor}[{ps}][{h * hs}:{(h + 1) * hs}]"
                else:
                    text = f"{tensor}[{h}][{ps}]"
                key = (layer, h) if all_pos else (layer, h, i)
                out[key] = Site(key, text, selection(sheet, text))
    labels: list[tuple[Any, ...]] = [tuple(range(L))]
    if family in HEADS:
        labels.append(tuple(range(H)))
    if not all_pos:
        labels.append(tuple(range(T)))
    axes: tuple[str, ...] = ("layer", "head", "position") if family in HEADS else ("layer", "position")
    if all_pos:
        axes = axes[:-1]
    return Sites(family, axes, tuple(labels), out)


_AXIS = {"pos": "position", "key": "key", "head": "head", "embd": "dim", "vocab": "token", "hidden": "unit"}


def _custom(sheet: Cells, text: str) -> Sites:
    try:
        sel = parse(text)
    except DfgptError as e:  # a name that does not parse: say so as a sweep error
        raise QueryError(f"over={text!r} is neither a family nor a cell selection: {e}") from None
    n = len(sel.index)
    raw = re.findall(r"\[([^\]]*)\]", text)
    stars = [a for a, r in enumerate(raw[len(raw) - n:] if n else []) if r.strip() == "*"]
    picked = sheet.select(text)
    specs = sheet.graph.specs
    axis_names = ["tensor"] + [_AXIS.get(specs[picked[0][0]].axes[a], specs[picked[0][0]].axes[a]) for a in stars]
    sizes = [max(sheet.engine.shape(t)[a] for t, _ in picked) for a in stars]
    out: dict[tuple[int, ...], Site] = {}
    for ti, (tensor, idx) in enumerate(picked):
        shape = sheet.engine.shape(tensor)
        for combo in itertools.product(*(range(shape[a]) for a in stars)):
            fixed = list(idx)
            for a, v in zip(stars, combo):
                fixed[a] = v
            m = np.zeros(shape, bool)
            m[tuple(fixed)] = True
            parts = [sheet.name(tensor, tuple(int(v) for v in fixed))] if all(isinstance(v, int) for v in fixed) else []
            name = parts[0] if parts else tensor + "".join(
                f"[{v}]" if isinstance(v, int) else "[:]" if v == slice(None) else f"[{v.start}:{v.stop}]"
                for v in fixed)
            try:
                masks = selection(sheet, name)
            except EditError:  # a site of only causally masked cells: nothing to patch there
                continue
            out[(ti, *combo)] = Site((ti, *combo), name, masks)
    if not out:
        raise QueryError(f"over={text!r} selects no computed cell to patch.")
    coords = (tuple(t for t, _ in picked), *(tuple(range(s)) for s in sizes))
    return Sites(text, tuple(axis_names), coords, out)


def sites(sheet: Cells, over: str, positions: str = "each") -> Sites:
    """The sites of a family (see the module table) or of a selection with `*` axes."""
    if positions not in ("each", "all"):
        raise QueryError(f"positions must be 'each' (one site per position) or 'all', got {positions!r}.")
    if not isinstance(over, str) or not over.strip():
        raise QueryError(f"over must be a family ({', '.join(FAMILIES)}) or a cell selection, got {over!r}.")
    over = over.strip()
    if over in FAMILIES:
        return _family(sheet, over, positions == "all")
    if "[" not in over and "." not in over:
        raise QueryError(f"unknown family {over!r}: expected one of {', '.join(FAMILIES)} or a cell "
                         "selection such as 'h[*].mid[5]'." + suggest(over, FAMILIES))
    return _custom(sheet, over)
