"""Diagrams of every stage, drawn from the very graph that computes: `draw(...)` -> graphviz.Digraph.

Node ids are the stable tensor and cell names, attributes are written in a fixed order,
and values are printed with 4 significant digits, so the same input gives byte-identical
DOT. Rendering (SVG, PNG, PDF) happens only on request, through Graphviz's `dot`.

>>> import dfgpt
>>> from dfgpt.views.render import draw, text_view
>>> m = dfgpt.load("sort-random")
>>> '"h[*].attn.att"' in draw(m).source  # the blocks collapsed into one cluster
True
>>> print(text_view(m, "h[0].attn").splitlines()[2])
h[0].attn.q            3×T×16     linear       h[0].ln_1.out, h[0].attn.c_attn.w, h[0].attn.c_attn.b
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import graphviz
import numpy as np
from graphviz.quoting import quote

from ..core.graph import Graph
from ..errors import CheckpointError, DfgptError, NameError_, QueryError, UnknownNameError, suggest
from ..model import Model, load
from ..sheet import Sheet
from .attention_map import attention_map, head_diagram
from .cellgraph import draw_cells
from .colors import (
    COLORS,
    Canvas,
    RenderError,
    Row,
    block_table,
    edge,
    fmt,
    kind_fill,
    legend,
    op_kind,
    shape_kind,
    shape_text,
    summary,
    tensor_label,
    tensor_shape,
    write,
)

__all__ = ["LEVELS", "draw", "main", "stages", "text_view", "write_docs"]

LEVELS = ("model", "block", "head", "cell")


# -- stages and tensors ---------------------------------------------------------------------
def _family(graph: Graph) -> tuple[str, str | None, str]:
    """The family's block stem, final norm and attention stage, read from its roles:
    ('h', 'ln_f', 'attn') for GPT-2, ('layers', 'norm', 'self_attn') for Llama."""
    roles = graph.roles
    if roles is None:
        return "h", "ln_f", "attn"
    stem = roles.layers[0].resid_post.split("[", 1)[0]
    final = roles.final_norm.rsplit(".", 1)[0] if "." in roles.final_norm else None
    final = None if final is None or final.startswith(f"{stem}[") else final  # no final norm: a block's output
    return stem, final, roles.layers[0].attn_out.split(".")[1]


def _block_re(graph: Graph) -> re.Pattern[str]:
    """A block tensor's name: its layer and the rest (`layers[3].mlp.act` -> 3, 'mlp.act')."""
    return re.compile(rf"^{re.escape(_family(graph)[0])}\[(\d+)\]\.(.+)$")


def _is_head_stage(graph: Graph, key: str) -> bool:
    """An attention stage of one block ('h[0].attn', 'layers[0].self_attn')."""
    stem, _, attn = _family(graph)
    return re.fullmatch(rf"{re.escape(stem)}\[\d+\]\.{re.escape(attn)}", key) is not None


def _stage_keys(name: str, graph: Graph) -> list[str]:
    """The clusters a tensor sits in, outermost first: ['h[0]', 'h[0].attn'], ['ln_f'], []."""
    stem, final, _ = _family(graph)
    parts = name.split(".")
    if parts[0].startswith(f"{stem}["):
        return [parts[0]] + ([f"{parts[0]}.{parts[1]}"] if len(parts) > 2 else [])
    return [parts[0]] if parts[0] == final else []


def stages(graph: Graph) -> dict[str, list[str]]:
    """Every stage a drawing or text view accepts, in reading order, with its tensors in graph order."""
    out: dict[str, list[str]] = {}
    for name in graph.order:
        for key in [graph.specs[name].stage, *_stage_keys(name, graph)]:
            out.setdefault(key, [])
            if name not in out[key]:
                out[key].append(name)
    stem, final, _ = _family(graph)
    subs: list[str] = []  # a block's stages in the order the graph computes them (ln_1, attn, ln_2, mlp)
    for key in out:
        m = re.match(rf"^{re.escape(stem)}\[\d+\]\.(\w+)$", key)
        if m and m.group(1) not in subs:
            subs.append(m.group(1))

    def rank(key: str) -> tuple[int, int, int]:
        m = re.match(rf"^{re.escape(stem)}\[(\d+)\](?:\.(\w+))?$", key)
        if m:
            sub = m.group(2)
            return (1, int(m.group(1)), 0 if sub is None else 1 + subs.index(sub))
        return (0 if key == "embedding" else 2 if key == final else 3, 0, 0)

    return {k: out[k] for k in sorted(out, key=rank)}


def _stage(graph: Graph, target: str) -> list[str]:
    st = stages(graph)
    if target not in st:
        raise UnknownNameError(
            f"{target!r} is not a stage of this model; stages are {', '.join(st)}." + suggest(target, st)
        )
    return st[target]


def text_view(obj: Model | Sheet, stage: str | None = None) -> str:
    """One line per tensor of a stage (all by default): name, shape, op kind, input names."""
    graph, T = obj.graph, (obj.T if isinstance(obj, Sheet) else None)
    names = graph.order if stage in (None, "model") else _stage(graph, stage)
    lines = []
    for n in names:
        op = graph.ops.get(n)
        ins = ", ".join(op.ins) if op is not None else "-"
        lines.append(f"{n:<22} {shape_text(tensor_shape(graph, n, T)):<10} {op_kind(graph, n):<12} {ins}")
    return "\n".join(lines) + "\n"


# -- tensor-level drawings -------------------------------------------------------------------
def _tensor_diagram(
    graph: Graph,
    names: list[str],
    T: int | None,
    title: str,
    rename: Any = None,
    decorate: Any = None,
) -> graphviz.Digraph:
    """Tensors as nodes (external inputs dashed), op inputs as edges, stages as clusters."""
    rename = rename or (lambda n: n)
    cv = Canvas(title)  # top to bottom: a model is a tall stack, a block a column of steps
    inside = {rename(n) for n in names}
    stem = _family(graph)[0]
    every = f"{stem}[*]"
    for n in names:
        nid = rename(n)
        clusters = tuple(rename(k) for k in _stage_keys(n, graph))
        if clusters and clusters[0] == every:
            cv.labels[every] = f"block {stem}[0..{graph.config.n_layer - 1}]  × {graph.config.n_layer}"
        attrs = {"label": tensor_label(graph, n, nid, T), "fillcolor": kind_fill(graph, n)}
        if decorate is not None:
            attrs.update(decorate(n))
        cv.node(nid, clusters, **attrs)
    for n in names:
        op = graph.ops.get(n)
        for i in op.ins if op is not None else ():
            if rename(i) not in inside:
                attrs = {"label": tensor_label(graph, i, i, T), "fillcolor": COLORS["external"], "style": "dashed"}
                if decorate is not None:
                    attrs.update(decorate(i))
                cv.node(i, (), **attrs)
            a, b = rename(i), rename(n)
            if a == f"{every}.out" and b.startswith(every):  # block l reads block l-1: one loop edge
                if not any(k[0] == a and k[1].startswith(every) for k in cv.edges):
                    cv.edge(a, b, style="dashed", constraint="false", label="next block")
            else:
                cv.edge(a, b)
    return cv.finish()


_KINDS = ("input", "parameter", "computed")
_PER_ROW = 6  # blocks side by side in the expanded model, the cone and the receipt


def _draw_model(model: Model | Sheet, expand: bool, annotate: Any = None, title: str = "model",
                keys: tuple[str, ...] = _KINDS) -> graphviz.Digraph:
    graph = model.graph
    T = model.T if isinstance(model, Sheet) else None
    if expand or annotate is not None:
        plain = annotate or (lambda n: ("", {"fillcolor": kind_fill(graph, n)}))
        return _stacked(graph, T, title, plain, keys, collapse=annotate is not None)
    # Every block maps onto one set of ids, so block l reading h[l-1].out becomes the loop edge.
    stem = re.escape(_family(graph)[0])
    dot = _tensor_diagram(graph, list(graph.order), T, title,
                          rename=lambda n: re.sub(rf"^{stem}\[\d+\]", f"{_family(graph)[0]}[*]", n))
    dot.attr("graph", ranksep="0.22")
    legend(dot, keys)
    return dot


def _stacked(graph: Graph, T: int | None, title: str, annotate: Any, keys: tuple[str, ...],
             collapse: bool) -> graphviz.Digraph:
    """The whole model at tensor level: the embedding and output as nodes, top to bottom; each
    block one table of its tensors (with `collapse`, a run of alike blocks one table), the
    blocks in order in rows of six, left to right."""
    cv = Canvas(title)
    body: list[list[Row]] = [[] for _ in range(graph.config.n_layer)]
    block, stem = _block_re(graph), _family(graph)[0]
    for n in graph.order:
        note, attrs = annotate(n)
        m = block.match(n)
        if m is None:
            cv.node(n, tuple(_stage_keys(n, graph)), label=tensor_label(graph, n, n, T, note), **attrs)
        else:
            body[int(m.group(1))].append((m.group(2), shape_kind(graph, n, T), note,
                                          attrs.get("fillcolor", COLORS["outside"]), attrs.get("color", "")))
    runs: list[tuple[int, int]] = []
    for layer, rows in enumerate(body):
        if collapse and runs and rows == body[runs[-1][0]]:
            runs[-1] = (runs[-1][0], layer)
        else:
            runs.append((layer, layer))
    gid = {layer: f"{stem}[{a}]" if a == b else f"{stem}[{a}..{b}]" for a, b in runs for layer in range(a, b + 1)}
    for a, b in runs:
        cv.node(gid[a], label=block_table(gid[a], a, b, body[a]), shape="plaintext", style="")

    def where(n: str) -> str:
        m = block.match(n)
        return gid[int(m.group(1))] if m else n

    heads = [gid[a] for a, _ in runs]
    wraps = {(heads[r - 1], heads[r]) for r in range(_PER_ROW, len(heads), _PER_ROW)}
    for n in graph.order:
        op = graph.ops.get(n)
        for i in op.ins if op is not None else ():
            tail, head = where(i), where(n)
            cv.edge(tail, head, **({"constraint": "false"} if (tail, head) in wraps else {}))
    dot = cv.finish()
    for r in range(0, len(heads), _PER_ROW):  # a row of blocks; the next row under its first
        dot.body.append(f"\t{{rank=same; {' '.join(quote(x) for x in heads[r: r + _PER_ROW])}}}\n")
        if r:
            edge(dot, heads[r - _PER_ROW], heads[r], style="invis", weight="10")
    legend(dot, keys)
    return dot


def _draw_block(sheet: Sheet, target: str) -> graphviz.Digraph:
    graph = sheet.graph
    names = _stage(graph, target)

    def values(n: str) -> dict[str, str]:
        return {"label": tensor_label(graph, n, n, sheet.T, summary(sheet.values(n)))}

    dot = _tensor_diagram(graph, names, sheet.T, target, decorate=values)
    legend(dot, ("parameter", "computed", "external"))
    return dot


def _draw_head(sheet: Sheet, target: str) -> graphviz.Digraph:
    graph = sheet.graph
    stage = target if _is_head_stage(graph, target) else f"{target}.{_family(graph)[2]}"
    if not _is_head_stage(graph, stage) or stage not in stages(graph):
        heads = [s for s in stages(graph) if _is_head_stage(graph, s)]
        raise UnknownNameError(
            f"level 'head' draws an attention stage; {target!r} is not one. Choose one of {', '.join(heads)}."
        )
    return head_diagram(sheet, stage, _stage(graph, stage))


def _counts(x: Any) -> int:
    return int(np.count_nonzero(x)) if isinstance(x, np.ndarray) else int(x)


def _draw_cone(prov: Any, influence: Any = None) -> graphviz.Digraph:
    """The architecture, expanded, with each tensor's share of the cone; influence as pen width."""
    sheet = getattr(prov, "sheet", None)
    if not isinstance(sheet, Sheet):
        raise QueryError("draw(provenance) needs a provenance result with a `.sheet`; got "
                         f"{type(prov).__name__}.")
    masks = {k: np.asarray(v, bool) for k, v in prov.masks.items()}
    weight = _influence_by_tensor(influence) if influence is not None else {}
    top = max(weight.values(), default=0.0) or 1.0
    ranges = prov.by_tensor() if callable(getattr(prov, "by_tensor", None)) else {}  # 'rows 0–5 of 11'

    def annotate(n: str) -> tuple[str, dict[str, str]]:
        total = int(np.prod(sheet.engine.shape(n)))
        got = int(masks[n].sum()) if n in masks else 0
        where = getattr(ranges.get(n), "ranges", "")
        where = "" if "spanned" in where else where  # "63 of the 108 cells spanned": the count says it
        text = f"{got}/{total} cells in the cone" + (f"\\n{where}" if where and where != "all" else "")
        if weight.get(n):
            text += f"\\ninfluence {weight[n] / total_weight:.0%}"
        attrs = {"fillcolor": kind_fill(sheet.graph, n) if got else COLORS["outside"],
                 "color": COLORS["cone"] if got else "#bbbbbb",
                 "penwidth": fmt(1.0 + 5.0 * weight.get(n, 0.0) / top) if weight else ("2" if got else "1")}
        return text, attrs

    total_weight = sum(weight.values()) or 1.0
    return _draw_model(sheet, True, annotate, title="provenance", keys=(*_KINDS, "outside", "cone"))


def _influence_by_tensor(infl: Any) -> dict[str, float]:
    """{tensor: total |score|} from `.by_tensor()` groups (key, abs_score), a mapping, or items."""
    groups = infl.by_tensor() if hasattr(infl, "by_tensor") else infl
    if isinstance(groups, dict):
        return {str(k): float(np.abs(np.asarray(getattr(v, "abs_score", v), float)).sum())
                for k, v in groups.items()}
    out: dict[str, float] = {}
    for g in groups:
        key = getattr(g, "key", None) or getattr(g, "tensor", None)
        score = getattr(g, "abs_score", None)
        score = getattr(g, "score", None) if score is None else score
        if key is None or score is None:
            raise QueryError(f"cannot read an influence from {type(g).__name__}; pass sheet.influence(...), "
                             "or {tensor: score}.")
        out[str(key)] = out.get(str(key), 0.0) + abs(float(score))
    return out


_STATES = ("stale", "recomputed", "reused", "unchanged", "pinned")
# Cells a read computed for the first time after the edit: counted in the label, not coloured, since
# the edit did not make them stale (on a fresh sheet that is the whole model).
_FIRST = "computed_first"
_PRIORITY = ("pinned", "recomputed", "stale", "reused", "unchanged")


def _per_tensor(receipt: Any, state: str) -> dict[str, int]:
    """{tensor: cells} of one state: `<state>_by_tensor`, or `<state>` when it is a mapping."""
    for attr in (f"{state}_by_tensor", state) + (("cutoff_by_tensor",) if state == "unchanged" else ()):
        got = getattr(receipt, attr, None)
        if isinstance(got, dict):
            return {k: _counts(v) for k, v in got.items()}
    return {}


def _draw_receipt(receipt: Any, sheet: Sheet | None = None) -> graphviz.Digraph:
    """Each tensor coloured by what the edit did to it, with counts per state; edited tensors outlined."""
    sheet = sheet or getattr(receipt, "sheet", None) or getattr(getattr(receipt, "_live", None), "sheet", None)
    if not isinstance(sheet, Sheet):
        raise QueryError("draw(receipt) needs the receipt's sheet: draw(receipt, sheet=sheet).")
    per = {s: _per_tensor(receipt, s) for s in (*_STATES, _FIRST)}
    edited = set()
    for c in getattr(receipt, "cells", ()):  # "wpe[2][1] = 0.5, was -0.058": the name comes first
        try:
            edited.add(sheet.select(str(c).split(" = ")[0].strip())[0][0])
        except DfgptError:
            continue

    def annotate(n: str) -> tuple[str, dict[str, str]]:
        got = [(s, per[s][n]) for s in _STATES if per[s].get(n)]
        if per[_FIRST].get(n):
            got.append(("first computed", per[_FIRST][n]))
        text = ", ".join(f"{s} {c}" for s, c in got) or ("edited" if n in edited else "untouched")
        # The colour is the most telling state present, whatever the counts.
        main = next((s for s in _PRIORITY if per[s].get(n)), None)
        attrs = {"fillcolor": COLORS[main] if main else COLORS["outside"]}
        if n in edited:
            attrs.update(color=COLORS["cone"], penwidth="3")
        return text, attrs

    return _draw_model(sheet, True, annotate, title="receipt", keys=(*_PRIORITY, "untouched", "cone"))


# -- the one entry point ---------------------------------------------------------------------
def draw(
    obj: Any,
    target: str | None = None,
    level: str | None = None,
    depth: int = 2,
    max_nodes: int = 200,
    expand: bool = False,
    influence: Any = None,
    sheet: Sheet | None = None,
) -> graphviz.Digraph:
    """A diagram of a model, a sheet's stage or cell, a provenance cone or an edit receipt.

    Level defaults from the target: none -> "model", "h[0]" -> "block", "h[0].attn" ->
    "head", a single cell -> "cell".
    """
    if isinstance(obj, Model):
        if level not in (None, "model") or target not in (None, "model"):
            raise QueryError(f"a Model draws only its architecture; to draw {target or level!r}, "
                             "draw a sheet: draw(model.sheet('CABACA'), target, level=...).")
        return _draw_model(obj, expand)
    if not isinstance(obj, Sheet):
        if hasattr(obj, "masks"):
            return _draw_cone(obj, influence)
        if hasattr(obj, "stale"):
            return _draw_receipt(obj, sheet)
        raise QueryError(f"cannot draw a {type(obj).__name__}; draw a Model, a Sheet, a provenance "
                         "result (with .masks) or an edit receipt (with .stale).")
    if level is not None and level not in LEVELS:
        raise QueryError(f"unknown level {level!r}; levels are {', '.join(LEVELS)} "
                         "(and text_view() for text)." + suggest(level, LEVELS))
    if level is None:
        level = _guess_level(obj, target)
    if level == "model":
        return _draw_model(obj, expand)
    if target is None:
        raise QueryError(f"level {level!r} needs a target, e.g. 'h[0]', 'h[0].attn' or 'logit[5][A]'.")
    if level == "block":
        return _draw_block(obj, target)
    if level == "head":
        return _draw_head(obj, target)
    return draw_cells(obj, target, depth=depth, max_nodes=max_nodes)


def _guess_level(sheet: Sheet, target: str | None) -> str:
    if target in (None, "model"):
        return "model"
    if not isinstance(target, str):
        raise RenderError(f"a drawing target is a stage or cell name such as 'h[0]' or 'logit[5][A]', got {target!r}.")
    if target in stages(sheet.graph):
        return "head" if _is_head_stage(sheet.graph, target) else "block"
    try:
        sheet.cell(target)
    except NameError_ as e:  # not a tensor at all: perhaps a misspelt stage
        st = stages(sheet.graph)
        raise UnknownNameError(
            f"{target!r} is neither a stage nor one cell: {e} Stages are {', '.join(st)}; "
            "cells are named like 'logit[5][A]'." + suggest(target, st)
        ) from None
    return "cell"


DOCS = {
    "architecture": lambda m, s: draw(m),
    "block": lambda m, s: draw(s, "h[0]", level="block"),
    "head": lambda m, s: draw(s, "h[0].attn", level="head"),
    "cell": lambda m, s: draw(s, "logit[5][A]", level="cell", depth=2),
}


def docs_model() -> Model:
    """The trained sort model when it is there, else the seeded random one."""
    try:
        return load("sort")
    except CheckpointError:
        return load("sort-random")


def write_docs(folder: str | Path) -> list[Path]:
    """Regenerate docs pictures: <name>.dot (the source, for diffs) and <name>.svg; attention.png."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = docs_model()
    sheet = model.sheet("CABACA")
    out = []
    for name, make in DOCS.items():
        dot = make(model, sheet)
        out += [write(dot, folder / f"{name}.dot"), write(dot, folder / f"{name}.svg")]
    att = attention_map(sheet, path=folder / "attention.png")
    out.append(write(att, folder / "attention.dot"))
    return [*out, folder / "attention.png"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dfgpt.views.render", description="Regenerate the docs pictures.")
    p.add_argument("--docs", default="docs/images", help="folder to write (default docs/images)")
    args = p.parse_args(argv)
    try:
        for path in write_docs(args.docs):
            print(path)
    except RenderError as e:
        print(f"dfgpt: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
