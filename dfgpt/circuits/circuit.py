"""`Circuit`: a discovery's result: the kept edges with their scores, the metric with only them, the curve.

It prints as a table, shows in a notebook, saves and loads as JSON, and draws itself with
Graphviz (`dot()`, `save("circuit.svg")`) and its faithfulness curve as SVG (`curve_svg()`).

>>> c = Circuit("eap", "logit_diff:B,C@8", 1, ["emb -> logits", "h[0].head[1] -> logits"], [0.5, 2.0],
...             ["h[0].head[1] -> logits"], clean=2.0, corrupted=-2.0, value=1.0, curve=[(0, -2.0), (1, 1.0), (2, 2.0)])
>>> c
Circuit(eap, logit_diff:B,C@8, 1 of 2 edges, faithfulness 75%)
>>> Circuit.from_dict(c.to_dict()) == c
True
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import graphviz

from ..errors import OutputError, QueryError
from ..html import table

__all__ = ["Circuit"]

_NODE = re.compile(r"^(?:(emb|logits)|(?:h|layers)\[(\d+)\]\.(?:(mlp)|(?:kv_)?head\[(\d+)\])(?:\.([qkv]))?)$")
_MAX_NODES = 400  # a picture past this many components is refused (DESIGN §4: readable at a slide's size)


@dataclass(frozen=True)
class Circuit:
    """Edges kept with their scores; the metric's mean over the pairs when only they carry the clean
    run (`value`), at the clean and corrupted runs, and `curve`: (edges kept, metric) for the best
    k edges by score."""

    method: str
    metric: str
    pairs: int
    edges: list[str] = field(repr=False)  # every edge of the model, in edge order
    scores: list[float] = field(repr=False)  # one per edge
    kept: list[str] = field(repr=False)
    clean: float = 0.0
    corrupted: float = 0.0
    value: float = 0.0
    curve: list[tuple[int, float]] = field(default_factory=list, repr=False)
    params: dict[str, Any] = field(default_factory=dict, repr=False)
    ran_on: str = field(default="", repr=False, compare=False)  # where discovery ran (not saved: the same values)

    def __repr__(self) -> str:
        return (f"Circuit({self.method}, {self.metric}, {len(self.kept):,} of {len(self.edges):,} edges, "
                f"faithfulness {self.faithfulness:.0%})")

    @property
    def faithfulness(self) -> float:
        """The gap's share the circuit alone restores: (value − corrupted) / (clean − corrupted)."""
        gap = self.clean - self.corrupted
        return (self.value - self.corrupted) / gap if gap else math.nan

    def score(self, edge: str) -> float:
        """One edge's score by name."""
        try:
            return self.scores[self.edges.index(edge)]
        except ValueError:
            raise QueryError(f"{edge!r} is not an edge of this circuit's model.") from None

    def table(self, top: int | None = None) -> str:
        """The kept edges ranked by |score|, as text."""
        idx = {e: i for i, e in enumerate(self.edges)}
        rows = sorted(self.kept, key=lambda e: -abs(self.scores[idx[e]]))[: top if top is not None else None]
        head = (f"{self.method} circuit of {self.metric} over {self.pairs} pair{'s' * (self.pairs != 1)}: "
                f"{len(self.kept)} of {len(self.edges)} edges; clean {self.clean:+.3f}, corrupted "
                f"{self.corrupted:+.3f}, circuit alone {self.value:+.3f} ({self.faithfulness:.0%})")
        width = max([len(e) for e in rows] + [4])
        lines = [head, f"{'edge':<{width}}  score"]
        lines += [f"{e:<{width}}  {self.scores[idx[e]]:+.4f}" for e in rows]
        if len(rows) < len(self.kept):
            lines.append(f"... {len(self.kept) - len(rows)} more")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        idx = {e: i for i, e in enumerate(self.edges)}
        rows = [[e, round(self.scores[idx[e]], 4)] for e in sorted(self.kept, key=lambda e: -abs(self.scores[idx[e]]))]
        return table(repr(self), ["edge", "score"], rows[:200], note=f"{len(rows)} edges" if len(rows) > 200 else "")

    # -- files -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        del d["ran_on"]  # where it ran: not part of the circuit (the same values anywhere)
        d["curve"] = [list(p) for p in self.curve]
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Circuit:
        """A Circuit from `to_dict`'s dict (as JSON gives it back), checked."""
        want: dict[str, Any] = {"method": str, "metric": str, "pairs": int, "edges": list, "scores": list, "kept": list,
                "clean": (int, float), "corrupted": (int, float), "value": (int, float), "curve": list, "params": dict}
        if not isinstance(d, dict) or set(d) != set(want) or not all(isinstance(d[k], t) for k, t in want.items()):
            raise QueryError("not a circuit: expected a JSON object with " + ", ".join(want)
                             + " (as Circuit.save writes it).")
        if len(d["scores"]) != len(d["edges"]) or not set(d["kept"]) <= set(d["edges"]):
            raise QueryError("not a circuit: one score per edge, and kept edges among the edges, expected.")
        curve = [(int(k), float(v)) for k, v in d["curve"]]
        return cls(d["method"], d["metric"], d["pairs"], [str(e) for e in d["edges"]],
                   [float(s) for s in d["scores"]], [str(e) for e in d["kept"]], float(d["clean"]),
                   float(d["corrupted"]), float(d["value"]), curve, dict(d["params"]))

    def save(self, path: str | Path) -> Path:
        """Write `.json` (the circuit), `.svg` or `.png` (its picture), or `.dot` (the picture's source)."""
        p = Path(path)
        suffix = p.suffix.lower()
        if suffix == ".json":
            p.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        elif suffix == ".dot":
            p.write_text(self.dot(), encoding="utf-8")
        elif suffix in (".svg", ".png"):
            p.write_bytes(self.picture().pipe(format=suffix[1:]))
        else:
            raise OutputError(f"cannot write a circuit as {p.name!r}: give a path ending in .json, .svg, .png or .dot.")
        return p

    @classmethod
    def load(cls, path: str | Path) -> Circuit:
        """A circuit saved as JSON."""
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise QueryError(f"cannot read a circuit from {str(path)!r}: {e}; give a .json file Circuit.save wrote.") \
                from None
        return cls.from_dict(d)

    # -- pictures ----------------------------------------------------------------------------
    def dot(self) -> str:
        """The circuit as DOT text: components bottom to top, a block's heads side by side; an edge into a
        head is labelled with the inputs it feeds (q, k, v), blue when its score is positive, red when negative."""
        idx = {e: i for i, e in enumerate(self.edges)}
        arcs: dict[tuple[str, str], list[tuple[str, float]]] = {}
        for e in self.kept:
            src, dest = (s.strip() for s in e.split("->"))
            m = _NODE.match(dest)
            part = m.group(5) if m else None
            comp = dest[: -2] if part else dest
            arcs.setdefault((src, comp), []).append((part or "", self.scores[idx[e]]))
        nodes = sorted({n for a in arcs for n in a}, key=_rank)
        if len(nodes) > _MAX_NODES:
            raise OutputError(f"this circuit has {len(nodes)} components, too many for a readable picture "
                              f"(at most {_MAX_NODES}); keep fewer edges (a higher threshold or a smaller top).")
        top = max([abs(s) for ps in arcs.values() for _, s in ps] + [1e-12])
        lines = ["digraph circuit {",
                 '  graph [rankdir=BT, size="26,26", ranksep=0.6, nodesep=0.3, fontname=Helvetica];',
                 '  node [shape=box, style="rounded,filled", fillcolor="#f3f0e8", fontname=Helvetica, fontsize=12];',
                 '  edge [fontname=Helvetica, fontsize=10];']
        ranks: dict[float, list[str]] = {}
        for n in nodes:
            ranks.setdefault(_rank(n), []).append(n)
            fill = "#dbe8f5" if "head[" in n else "#e6f2dc" if n.endswith("mlp") else "#f3f0e8"
            lines.append(f'  "{n}" [fillcolor="{fill}"];')
        for group in ranks.values():
            lines.append("  { rank=same; " + " ".join(f'"{n}";' for n in group) + " }")
        for (src, dest), parts in arcs.items():
            s = max((sc for _, sc in parts), key=abs)
            label = ",".join(p for p, _ in parts if p)
            width = 0.8 + 3.2 * abs(s) / top
            color = "#2b6cb0" if s >= 0 else "#c53030"
            lab = f', label="{label}"' if label else ""
            lines.append(f'  "{src}" -> "{dest}" [color="{color}", penwidth={width:.2f}{lab}];')
        lines.append("}")
        return "\n".join(lines) + "\n"

    def picture(self) -> graphviz.Source:
        """The DOT picture, shown by a notebook or rendered with `.pipe(format="svg")`; a long chain of
        components is widened (or a wide row heightened) to an aspect within 1:3 and 3:1."""
        text = self.dot()
        plain = graphviz.Source(text).pipe(format="plain").decode().split()  # "graph scale width height ..."
        w, h = float(plain[2]), float(plain[3])
        if h > 2.9 * w or w > 2.9 * h:  # graphviz stretches the short side to this height / width ratio
            text = text.replace("  graph [", f"  graph [ratio={2.9 if h > w else 1 / 2.9:.3f}, ", 1)
        return graphviz.Source(text)

    def curve_svg(self, width: int = 480, height: int = 300) -> str:
        """The metric against the number of edges kept (the best first), with the clean and corrupted
        levels dashed, as SVG text; the x axis is logarithmic (edges + 1)."""
        pts = self.curve
        if not pts:
            raise OutputError("this circuit has no curve (it was saved without one).")
        ys = [v for _, v in pts] + [self.clean, self.corrupted]
        lo, hi = min(ys), max(ys)
        pad = (hi - lo) * 0.08 or 1.0
        lo, hi = lo - pad, hi + pad
        xmax = math.log1p(max(k for k, _ in pts)) or 1.0
        L, R, T, B = 56, 16, 16, 40

        def X(k: float) -> float:
            return L + (width - L - R) * math.log1p(k) / xmax

        def Y(v: float) -> float:
            return T + (height - T - B) * (hi - v) / (hi - lo)

        poly = " ".join(f"{X(k):.1f},{Y(v):.1f}" for k, v in pts)
        out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="Helvetica" '
               f'font-size="11">', f'<rect width="{width}" height="{height}" fill="white"/>',
               f'<line x1="{L}" y1="{height - B}" x2="{width - R}" y2="{height - B}" stroke="#444"/>',
               f'<line x1="{L}" y1="{T}" x2="{L}" y2="{height - B}" stroke="#444"/>']
        for v, name, col in ((self.clean, "clean", "#2b6cb0"), (self.corrupted, "corrupted", "#c53030")):
            out.append(f'<line x1="{L}" y1="{Y(v):.1f}" x2="{width - R}" y2="{Y(v):.1f}" stroke="{col}" '
                       f'stroke-dasharray="4 3"/><text x="{width - R - 4}" y="{Y(v) - 4:.1f}" text-anchor="end" '
                       f'fill="{col}">{name} {v:+.2f}</text>')
        out.append(f'<polyline points="{poly}" fill="none" stroke="#222" stroke-width="2"/>')
        out += [f'<circle cx="{X(k):.1f}" cy="{Y(v):.1f}" r="3" fill="#222"/>' for k, v in pts]
        for k, _ in pts:
            out.append(f'<text x="{X(k):.1f}" y="{height - B + 14}" text-anchor="middle">{k}</text>')
        out.append(f'<text x="{(L + width - R) / 2:.0f}" y="{height - 8}" text-anchor="middle">edges kept '
                   f'(best first, of {len(self.edges)})</text>')
        out.append(f'<text x="14" y="{(T + height - B) / 2:.0f}" transform="rotate(-90 14 {(T + height - B) / 2:.0f})" '
                   f'text-anchor="middle">{self.metric}</text>')
        out.append("</svg>")
        return "\n".join(out) + "\n"


def _rank(name: str) -> float:
    """Bottom to top: the embedding, then each block's heads and its MLP, then the logits."""
    m = _NODE.match(name)
    if m is None or m.group(1) == "emb":
        return 0.0
    if m.group(1) == "logits":
        return 1e9
    layer = int(m.group(2))
    return 1 + 2 * layer + (1 if m.group(3) else 0)
