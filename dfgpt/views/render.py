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

from ..core.graph import Graph
from ..errors import CheckpointError, DfgptError, NameError_, QueryError, UnknownNameError, suggest
from ..model import Model, load
from ..sheet import Sheet
from .attention_map import attention_map
from .cellgraph import draw_cells
from .colors import COLORS, RenderError, edge, fmt, new_digraph, shape_text, summary, write

__all__ = ["LEVELS", "draw", "main", "stages", "text_view", "write_docs"]

LEVELS = ("model", "block", "head", "cell")
_HEAD = re.compile(r"^h\[\d+\]\.attn$")


# -- stages and tensors ---------------------------------------------------------------------
def _stage_keys(name: str, graph: Graph) -> list[str]:
    """The clusters a tensor sits in, outermost first: ['h[0]', 'h[0].attn'], ['ln_f'], []."""
    parts = name.split(".")
    if parts[0].startswith("h["):
        return [parts[0]] + ([f"{parts[0]}.{parts[1]}"] if len(parts) > 2 else [])
    return [parts[0]] if parts[0] == "ln_f" else []


def stages(graph: Graph) -> dict[str, list[str]]:
    """Every stage a drawing or text view accepts, in reading order, with its tensors in graph order."""
    out: dict[str, list[str]] = {}
    for name in graph.order:
        for key in [graph.specs[name].stage, *_stage_keys(name, graph)]:
            out.setdefault(key, [])
            if name not in out[key]:
                out[key].append(name)
    subs = ("ln_1", "attn", "ln_2", "mlp")

    def rank(key: str) -> tuple[int, int, int]:
        m = re.match(r"^h\[(\d+)\](?:\.(\w+))?$", key)
        if m:
            sub = m.group(2)
            return (1, int(m.group(1)), 0 if sub is None else 1 + (subs.index(sub) if sub in subs else 9))
        return ({"embedding": 0, "ln_f": 2}.get(key, 3), 0, 0)

    return {k: out[k] for k in sorted(out, key=rank)}


def _stage(graph: Graph, target: str) -> list[str]:
    st = stages(graph)
    if target not in st:
        raise UnknownNameError(
            f"{target!r} is not a stage of this model; stages are {', '.join(st)}." + suggest(target, st)
        )
    return st[target]


def _shape(graph: Graph, name: str, T: int | None) -> tuple[int | str, ...]:
    spec = graph.specs[name]
    return spec.shape(T) if T is not None else tuple(
        "T" if a in ("pos", "key") else d for a, d in zip(spec.axes, spec.dims)
    )


def _op_kind(graph: Graph, name: str) -> str:
    op = graph.ops.get(name)
    return op.kind if op is not None else graph.specs[name].kind


def text_view(obj: Model | Sheet, stage: str | None = None) -> str:
    """One line per tensor of a stage (all by default): name, shape, op kind, input names."""
    graph, T = obj.graph, (obj.T if isinstance(obj, Sheet) else None)
    names = graph.order if stage in (None, "model") else _stage(graph, stage)
    lines = []
    for n in names:
        op = graph.ops.get(n)
        ins = ", ".join(op.ins) if op is not None else "-"
        lines.append(f"{n:<22} {shape_text(_shape(graph, n, T)):<10} {_op_kind(graph, n):<12} {ins}")
    return "\n".join(lines) + "\n"


# -- tensor-level drawings -------------------------------------------------------------------
class _Canvas:
    """Nodes grouped by nested cluster, edges deduplicated, emitted in insertion order."""

    def __init__(self, name: str) -> None:
        self.dot = new_digraph(name)
        self.nodes: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {}
        self.edges: dict[tuple[str, str], dict[str, str]] = {}
        self.labels: dict[str, str] = {}

    def node(self, nid: str, clusters: tuple[str, ...] = (), **attrs: str) -> None:
        if nid not in self.nodes:
            self.nodes[nid] = (clusters, attrs)

    def edge(self, a: str, b: str, **attrs: str) -> None:
        if a != b and (a, b) not in self.edges:
            self.edges[(a, b)] = attrs

    def finish(self) -> graphviz.Digraph:
        subs: dict[tuple[str, ...], graphviz.Digraph] = {}
        for clusters, _ in self.nodes.values():
            for i in range(1, len(clusters) + 1):
                key = clusters[:i]
                if key not in subs:
                    sg = graphviz.Digraph(name=f"cluster_{key[-1]}")
                    sg.attr("graph", label=self.labels.get(key[-1], key[-1]), style="rounded,filled",
                            fillcolor=COLORS["cluster"], color="#999999")
                    subs[key] = sg
        for nid, (clusters, attrs) in self.nodes.items():
            (subs[clusters] if clusters else self.dot).node(nid, **attrs)
        # Deepest first, so a child's body is complete when its parent copies it.
        for key in sorted(subs, key=lambda k: (-len(k), list(subs).index(k))):
            (subs[key[:-1]] if len(key) > 1 else self.dot).subgraph(subs[key])
        for (a, b), attrs in self.edges.items():
            edge(self.dot, a, b, **attrs)
        return self.dot


def _fill(graph: Graph, name: str) -> str:
    return COLORS[graph.specs[name].kind]


def _label(graph: Graph, name: str, nid: str, T: int | None, extra: str = "") -> str:
    shape = shape_text(_shape(graph, name, T))
    kind = _op_kind(graph, name)
    lines = [nid, f"{shape} · {kind}" if kind != graph.specs[name].kind else shape]
    return "\\n".join(lines + ([extra] if extra else []))


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
    cv = _Canvas(title)
    inside = {rename(n) for n in names}
    for n in names:
        nid = rename(n)
        clusters = tuple(rename(k) for k in _stage_keys(n, graph))
        if clusters and clusters[0] == "h[*]":
            cv.labels["h[*]"] = f"block h[0..{graph.config.n_layer - 1}]  × {graph.config.n_layer}"
        attrs = {"label": _label(graph, n, nid, T), "fillcolor": _fill(graph, n)}
        if decorate is not None:
            attrs.update(decorate(n))
        cv.node(nid, clusters, **attrs)
    for n in names:
        op = graph.ops.get(n)
        for i in op.ins if op is not None else ():
            if rename(i) not in inside:
                attrs = {"label": _label(graph, i, i, T), "fillcolor": COLORS["external"], "style": "dashed"}
                if decorate is not None:
                    attrs.update(decorate(i))
                cv.node(i, (), **attrs)
            a, b = rename(i), rename(n)
            if a == "h[*].out" and b.startswith("h[*]"):  # block l reads block l-1: the loop
                first = not any(k[0] == a and k[1].startswith("h[*]") for k in cv.edges)
                cv.edge(a, b, style="dashed", constraint="false", **({"label": "next block"} if first else {}))
            else:
                cv.edge(a, b)
    return cv.finish()


def _draw_model(model: Model | Sheet, expand: bool, decorate: Any = None, title: str = "model") -> Any:
    graph = model.graph
    T = model.T if isinstance(model, Sheet) else None
    if expand:
        return _tensor_diagram(graph, list(graph.order), T, title, decorate=decorate)
    # Every block maps onto one set of ids, so block l reading h[l-1].out becomes the loop edge.
    return _tensor_diagram(graph, list(graph.order), T, title, rename=lambda n: re.sub(r"^h\[\d+\]", "h[*]", n))


def _draw_block(sheet: Sheet, target: str) -> graphviz.Digraph:
    graph = sheet.graph
    names = _stage(graph, target)

    def values(n: str) -> dict[str, str]:
        return {"label": _label(graph, n, n, sheet.T, summary(sheet.values(n)))}

    return _tensor_diagram(graph, names, sheet.T, target, decorate=values)


def _draw_head(sheet: Sheet, target: str) -> graphviz.Digraph:
    graph = sheet.graph
    stage = target if _HEAD.match(target) else f"{target}.attn"
    if not _HEAD.match(stage) or stage not in stages(graph):
        heads = [s for s in stages(graph) if _HEAD.match(s)]
        raise UnknownNameError(
            f"level 'head' draws an attention stage; {target!r} is not one. Choose one of {', '.join(heads)}."
        )
    names = _stage(graph, stage)
    H = graph.config.n_head
    cv = _Canvas(stage)

    def ids(n: str) -> list[str]:
        return [f"{n}[{h}]" for h in range(H)] if graph.specs[n].axes[:1] == ("head",) else [n]

    for n in names:
        v = sheet.values(n) if graph.specs[n].kind == "computed" else sheet.engine.values[n]
        for h, nid in enumerate(ids(n)):
            per_head = len(ids(n)) > 1
            label = _label(graph, n, nid, sheet.T, summary(v[h] if per_head else v))
            if per_head:
                label = label.replace(shape_text(_shape(graph, n, sheet.T)), shape_text(v[h].shape))
                cv.labels[f"{stage}.head[{h}]"] = f"head {h}"
            cv.node(nid, (f"{stage}.head[{h}]",) if per_head else (), label=label, fillcolor=_fill(graph, n))
    mask = f"{stage}.mask"
    cv.node(mask, label=f"{mask}\\ncausal: score[t][s] = −inf for s > t", fillcolor=COLORS["external"],
            style="dashed")
    for n in names:
        op = graph.ops.get(n)
        for i in op.ins if op is not None else ():
            if i not in names:
                cv.node(i, label=_label(graph, i, i, sheet.T, summary(sheet.values(i))),
                        fillcolor=COLORS["external"], style="dashed")
            outs, src = ids(n), ids(i)
            for h, o in enumerate(outs):
                for a in ([src[h]] if len(src) == len(outs) else src):
                    cv.edge(a, o)
            if op is not None and op.kind == "score":
                for o in outs:
                    cv.edge(mask, o, style="dashed")
    return cv.finish()


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

    def decorate(n: str) -> dict[str, str]:
        total = int(np.prod(sheet.engine.shape(n)))
        got = int(masks[n].sum()) if n in masks else 0
        where = getattr(ranges.get(n), "ranges", "")
        text = f"{got}/{total} cells in the cone" + (f"\\n{where}" if where and where != "all" else "")
        attrs = {"label": _label(sheet.graph, n, n, sheet.T, text)}
        attrs["fillcolor"] = _fill(sheet.graph, n) if got else COLORS["outside"]
        attrs["color"] = COLORS["cone"] if got else "#bbbbbb"
        attrs["penwidth"] = fmt(1.0 + 5.0 * weight.get(n, 0.0) / top) if weight else ("2" if got else "1")
        return attrs

    return _draw_model(sheet, True, decorate, title="provenance")


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
    per = {s: _per_tensor(receipt, s) for s in _STATES}
    edited = set()
    for c in getattr(receipt, "cells", ()):  # "wpe[2][1] = 0.5, was -0.058": the name comes first
        try:
            edited.add(sheet.select(str(c).split(" = ")[0].strip())[0][0])
        except DfgptError:
            continue

    def decorate(n: str) -> dict[str, str]:
        got = [(s, per[s][n]) for s in _STATES if per[s].get(n)]
        text = ", ".join(f"{s} {c}" for s, c in got) or ("edited" if n in edited else "untouched")
        # The colour is the most telling state present, whatever the counts.
        main = next((s for s in _PRIORITY if per[s].get(n)), None)
        attrs = {"label": _label(sheet.graph, n, n, sheet.T, text),
                 "fillcolor": COLORS[main] if main else COLORS["outside"]}
        if n in edited:
            attrs.update(color=COLORS["cone"], penwidth="3")
        return attrs

    return _draw_model(sheet, True, decorate, title="receipt")


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
        return "head" if _HEAD.match(target) else "block"
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
