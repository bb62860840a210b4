"""The component graph: the embedding, every head, every MLP and the logits, and the edges between them.

An edge is one upstream component's contribution to one downstream component's input through
the residual stream: `h[0].head[1] -> h[2].head[0].q`, `h[1].mlp -> logits`, `emb -> h[0].head[3].k`.
Sources are the embedding (token plus position embedding where the family has one, as one
source like auto-circuit's; the scaled token embedding in rotary families), each head (its own
output through its slice of the output projection) and each MLP; destinations are each head's
query, key and value inputs apart, each MLP's input and the final residual (`logits`, before the
final norm). A destination reads every source before it: an MLP reads its own block's heads
(GPT-2, Llama), but not in parallel attention and MLP (GPT-NeoX), where both read the block's input.
Counted so, a 4-layer, 12-head GPT-2 has 3,135 edges and GPT-2 small 32,491, as auto-circuit counts them.

Names follow the family's blocks: `h[l]` (GPT-2, nanoGPT) or `layers[l]` (Llama, Mistral, Qwen2,
Gemma, GPT-NeoX). With grouped-query attention the query input is per query head
(`layers[0].head[3].q`) and the key and value inputs per key/value head (`layers[0].kv_head[1].k`,
`.v`), as the model computes them (and as TransformerLens splits them): patching an edge into a
key/value head changes the keys or values every query head of its group reads. A head without a
part (`-> layers[2].head[0]`) means its destinations (q, k and v; with grouped-query heads, q).

>>> from dfgpt import Config
>>> c = Components(Config(n_layer=4, n_head=12, n_embd=48, block_size=8, vocab_size=5))
>>> len(c), len(Components(Config(n_layer=12, n_head=12, n_embd=48, block_size=8, vocab_size=5)))
(3135, 32491)
>>> [e.name for e in c.select("h[*].head[0] -> logits")][:2]
['h[0].head[0] -> logits', 'h[1].head[0] -> logits']
>>> g = Components(Config(n_layer=1, n_head=4, n_kv_head=2, n_embd=8, block_size=4, vocab=("a", "b"),
...                       family="llama", norm="rms", positions="rotary", mlp_kind="swiglu", bias=False))
>>> [d.name for d in g.dests][:4], len(g)
(['layers[0].head[0].q', 'layers[0].head[1].q', 'layers[0].kv_head[0].k', 'layers[0].kv_head[0].v'], 19)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..core.config import Config
from ..core.naming import naming
from ..errors import QueryError, UnknownNameError, show, suggest

__all__ = ["Components", "Edge", "Node"]

ARROW = " -> "


@dataclass(frozen=True)
class Node:
    """A component: `role` is "emb", "head", "kv" (a key/value head of grouped-query attention), "mlp" or
    "logits"; a head destination names its `part` (q, k, v). `block` is the tensor prefix it lives under:
    its block's (`h[0]`, `layers[0]`), or for the logits the final norm's (`ln_f`, `norm`)."""

    role: str
    layer: int = -1
    head: int = -1
    part: str = ""
    block: str = ""

    @property
    def name(self) -> str:
        if self.role in ("emb", "logits"):
            return self.role
        base = (f"{self.block}.mlp" if self.role == "mlp" else
                f"{self.block}.{'kv_head' if self.role == 'kv' else 'head'}[{self.head}]")
        return f"{base}.{self.part}" if self.part else base

    @property
    def component(self) -> Node:
        """The component a destination belongs to (a head's q, k and v are one head)."""
        return Node(self.role, self.layer, self.head, "", self.block) if self.part else self

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Edge:
    """`src -> dest`; `index` numbers it among every edge, `slot` among its destination's (its switch cell)."""

    src: Node
    dest: Node
    index: int
    slot: int

    @property
    def name(self) -> str:
        return f"{self.src.name}{ARROW}{self.dest.name}"

    def __str__(self) -> str:
        return self.name


class Components:
    """The component graph of a config: sources, destinations and edges, in topological order.

    `parallel`: attention and MLP read the same stream (GPT-NeoX), so an MLP does not read its own
    block's heads. Edges are numbered destination by destination (each destination's sources
    in order), so a destination's edges are one run of `edges`.
    """

    def __init__(self, config: Config, parallel: bool | None = None) -> None:
        self.config = config
        self.parallel = bool(getattr(config, "parallel", False)) if parallel is None else parallel
        names = naming(config.family)
        L, H, KV = config.n_layer, config.n_head, config.kv_heads
        G = H // KV
        self.sources: list[Node] = [Node("emb")]
        self.dests: list[Node] = []
        self.reads: dict[Node, list[Node]] = {}  # destination -> its sources in order
        for layer in range(L):
            block = names.layer.format(i=layer)
            before = list(self.sources)
            for j in range(KV):  # each key/value head's query heads, then its k and v (q, k, v per head in MHA)
                if G == 1:
                    parts = [Node("head", layer, j, p, block) for p in "qkv"]
                else:
                    parts = [Node("head", layer, h, "q", block) for h in range(j * G, (j + 1) * G)]
                    parts += [Node("kv", layer, j, p, block) for p in "kv"]
                for d in parts:
                    self.dests.append(d)
                    self.reads[d] = before
            heads = [Node("head", layer, h, "", block) for h in range(H)]
            self.sources += heads
            if config.mlp:
                d = Node("mlp", layer, -1, "", block)
                self.dests.append(d)
                self.reads[d] = before if self.parallel else list(self.sources)
                self.sources.append(d)
        final = Node("logits", block=names.final)
        self.dests.append(final)
        self.reads[final] = list(self.sources)
        self.edges: list[Edge] = []
        self.first: dict[Node, int] = {}  # destination -> index of its first edge
        for d in self.dests:
            self.first[d] = len(self.edges)
            self.edges += [Edge(s, d, len(self.edges) + i, i) for i, s in enumerate(self.reads[d])]
        self.by_name: dict[str, Edge] = {e.name: e for e in self.edges}
        self.nodes: dict[str, Node] = {n.name: n for n in (*self.sources, *self.dests)}
        self.source_index = {s: i for i, s in enumerate(self.sources)}
        self.out_of: dict[Node, list[Edge]] = {s: [] for s in self.sources}  # source -> the edges it feeds
        for e in self.edges:
            self.out_of[e.src].append(e)

    def __len__(self) -> int:
        return len(self.edges)

    def __iter__(self) -> Iterator[Edge]:
        return iter(self.edges)

    def __repr__(self) -> str:
        return (f"Components({len(self.sources)} sources, {len(self.dests)} destinations, "
                f"{len(self.edges):,} edges)")

    def into(self, dest: Node) -> list[Edge]:
        """The edges into one destination, in its sources' order."""
        i = self.first[dest]
        return self.edges[i : i + len(self.reads[dest])]

    def edge(self, name: str) -> Edge:
        """One edge by its exact name, `SRC -> DEST`."""
        got = self.by_name.get(_normal(name))
        if got is None:
            return self._refuse(name)
        return got

    def select(self, edges: str | Edge | Iterable[str | Edge]) -> list[Edge]:
        """Edges by name or wildcard (`h[*].head[*] -> logits`, `* -> h[2].mlp`), or a list of them,
        in edge order without repeats. A head destination without `.q`, `.k` or `.v` means all three."""
        items = [edges] if isinstance(edges, (str, Edge)) else list(edges) if _iterable(edges) else None
        if items is None:
            raise QueryError(f"edges are given as names like 'h[0].head[1] -> logits' or a list of them, "
                             f"got {show(edges)}.")
        picked: set[int] = set()
        for item in items:
            if isinstance(item, Edge):
                if not (0 <= item.index < len(self.edges) and self.edges[item.index] == item):
                    raise QueryError(f"edge {item.name} is not an edge of this component graph.")
                picked.add(item.index)
                continue
            if not isinstance(item, str):
                raise QueryError(f"an edge is a name like 'h[0].head[1] -> logits', got {show(item)}.")
            if "*" not in item:
                text = _normal(item)
                got = self.by_name.get(text)
                if got is None:
                    src, dest = self._sides(item)
                    heads = [self.by_name.get(f"{src}{ARROW}{dest}.{p}") for p in "qkv"]
                    if not any(heads):
                        self._refuse(item)
                    picked.update(e.index for e in heads if e is not None)
                else:
                    picked.add(got.index)
                continue
            src, dest = self._sides(item)
            s_re, d_re = _pattern(src), _pattern(dest)
            found = [e.index for e in self.edges if s_re.fullmatch(e.src.name)
                     and (d_re.fullmatch(e.dest.name) or d_re.fullmatch(e.dest.component.name))]
            if not found:
                raise UnknownNameError(
                    f"no edge matches {item!r}; edges read like 'h[0].head[1] -> h[2].head[0].q', "
                    f"'h[1].mlp -> logits' (wildcards: 'h[*].head[*] -> logits')."
                    + suggest(item, self.by_name))
            picked.update(found)
        return [self.edges[i] for i in sorted(picked)]

    def _sides(self, text: str) -> tuple[str, str]:
        parts = [p.strip() for p in text.split("->")]
        if len(parts) != 2 or not all(parts):
            raise QueryError(f"{text!r} is not an edge name: write 'SRC -> DEST', e.g. 'h[0].head[1] -> logits'.")
        return parts[0], parts[1]

    def _refuse(self, name: str) -> Any:
        src, dest = self._sides(name)
        for side, what, names in ((src, "source", [n.name for n in self.sources]),
                                  (dest, "destination", [n.name for n in self.dests])):
            part = what == "destination" and (f"{side}.q" in names or f"{side}.k" in names)
            if not (side in names or "*" in side or part):
                raise UnknownNameError(
                    f"{side!r} in {name!r} is no {what} of this model ({what}s: {names[0]}, {names[1]}, ..., "
                    f"{names[-1]})." + suggest(side, names))
        raise UnknownNameError(
            f"there is no edge {_normal(name)!r}: a destination reads only the components before it "
            f"(an MLP reads its own block's heads{' not, attention and MLP run in parallel' if self.parallel else ''})."
            + suggest(_normal(name), self.by_name))


def _normal(name: str) -> str:
    """`a->b`, `a  ->  b` and `a -> b` are one name."""
    parts = [p.strip() for p in name.split("->")]
    return ARROW.join(parts) if len(parts) == 2 else name


def _pattern(side: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(p) for p in side.split("*")))


def _iterable(x: Any) -> bool:
    try:
        iter(x)
    except TypeError:
        return False
    return True
