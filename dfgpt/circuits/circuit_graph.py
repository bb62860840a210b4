"""The circuit graph: a model's tensor graph rewired so that every edge is a cell.

Every destination of the component graph gets its own input, the switched sum of its sources'
contributions (`EdgeSum`): `h[l].head[h].q.in` (and `.k.in`, `.v.in`), `h[l].mlp.in`, `ln_f.in`.
Each head's query, key and value input has its own LayerNorm (`h[l].head[h].q.ln_1.out`, with
block l's `ln_1` weights), its own slice of `c_attn` (`h[l].head[h].q`, [1, T, hs]), and the head
its own attention (`.score`, `.att`, `.y`) and output through its slice of `c_proj`
(`h[l].head[h].out`, `HeadProj`); the attention's `c_proj` bias is a constant source that
every later destination adds. MLPs and the output keep the model's ops and names, reading
their own input. Two kinds of parameters join the model's (shared, never copied):

- `DEST.switch[i]`, one cell per edge into DEST (0: the run's own contribution of its i-th
  source, 1: the patch), e.g. `h[1].head[0].k.switch[0]` for `emb -> h[1].head[0].k`;
- `SRC.patch[t][c]`, per source, the value a switched edge carries instead ([T, C]).

With every switch at 0 the logits are the model's to rounding (the same terms, summed in
another order). A circuit graph is made per input length, since a patch is one per position.

>>> import dfgpt
>>> w = circuit_weights(dfgpt.load("sort"), 9)
>>> len(w.components), w.graph.ops["h[1].head[0].k.in"].ins[:3]
(172, ('h[1].head[0].k.switch', 'emb', 'h[0].head[0].out'))
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import networkx as nx
import numpy as np

from ..core.config import ConfigError
from ..core.graph import Graph, TensorSpec
from ..core.ops import EdgeSum, HeadProj, Linear, Op
from ..models.weights import Weights
from .components import Components, Node

__all__ = ["CircuitWeights", "circuit_weights", "input_name", "own_name", "patch_name", "switch_name"]


def own_name(src: Node) -> str:
    """The tensor holding a source's own contribution: `emb`, `h[l].head[h].out`, `h[l].mlp.out`."""
    return {"emb": "emb", "head": f"{src.name}.out", "mlp": f"{src.name}.out"}[src.role]


def patch_name(src: Node) -> str:
    """The parameter holding a source's patch value, [T, C]."""
    return f"{src.name}.patch"


def switch_name(dest: Node) -> str:
    """The parameter holding a destination's edge switches, one per source: `h[l].head[h].q.switch`."""
    return f"{dest.name}.switch"


def input_name(dest: Node) -> str:
    """The tensor holding a destination's input: `h[l].head[h].q.in`, `h[l].mlp.in`, `ln_f.in`."""
    return "ln_f.in" if dest.role == "logits" else f"{dest.name}.in"


class CircuitWeights(Weights):
    """The model's weights on its circuit graph at one length: the model's parameters (shared), zero
    switches and zero patches. `model` is the model it was made from."""

    def __init__(self, model: Weights, T: int) -> None:
        comps = Components(model.config)
        graph = _Rewire(model.graph, comps, T).build()
        dtype = np.dtype(model.config.dtype)
        params: dict[str, Any] = dict(model.params)
        for d in comps.dests:
            params[switch_name(d)] = np.zeros(len(comps.reads[d]), dtype)
        for s in comps.sources:
            params[patch_name(s)] = np.zeros((T, model.config.n_embd), dtype)
        super().__init__(model.config, params, model.tokenizer, graph)
        self.model, self.components, self.length = model, comps, T


def circuit_weights(model: Weights, T: int) -> CircuitWeights:
    """The circuit weights of a model at length T, made once per model and length (memoised on the model)."""
    memo = model.__dict__.setdefault("_circuit_weights", {})
    got = memo.get(T)
    if got is None:
        got = memo[T] = CircuitWeights(model, T)
    return got


class _Rewire:
    """Builds the circuit graph from the model's graph: its ops copied with their inputs renamed,
    each attention split into heads and parts."""

    def __init__(self, graph: Graph, comps: Components, T: int) -> None:
        self.g, self.c, self.T = graph, comps, T
        self.specs: dict[str, TensorSpec] = {}
        self.ops: dict[str, Op] = {}
        self.biases: list[str] = []  # the constant sources so far: each attention's c_proj bias

    def spec(self, name: str, axes: tuple[str, ...], dims: tuple[int, ...], doc: str, kind: Any = "computed") -> None:
        self.specs[name] = TensorSpec(name, kind, axes, dims, doc)

    def op(self, op: Op, axes: tuple[str, ...], dims: tuple[int, ...], doc: str) -> str:
        self.spec(op.out, axes, dims, doc)
        self.ops[op.out] = op
        return op.out

    def copy(self, name: str, rename: dict[str, str], out: str | None = None, **changes: Any) -> str:
        """The model's op computing `name`, reading renamed inputs (and written to `out`)."""
        op = self.g.ops[name]
        new = replace(op, out=out or name, ins=tuple(rename.get(i, i) for i in op.ins), **changes)
        old = self.g.specs[name]
        return self.op(new, old.axes, old.dims, old.doc)

    def edge_sum(self, dest: Node) -> str:
        srcs = self.c.reads[dest]
        sw = switch_name(dest)
        self.spec(sw, ("source",), (len(srcs),), f"{dest.name}'s edge switches: 0 own, 1 patch", "parameter")
        ins = (sw, *(own_name(s) for s in srcs), *(patch_name(s) for s in srcs), *self.biases)
        op = EdgeSum(input_name(dest), ins, sources=len(srcs))
        return self.op(op, ("pos", "embd"), (0, self.g.config.n_embd), f"{dest.name}'s input: its edges' sum")

    def head(self, layer: int, h: int) -> None:
        cfg, g = self.g.config, self.g
        hs, p = cfg.head_size, f"h[{layer}].head[{h}]"
        att = f"h[{layer}].attn"
        part_out: dict[str, str] = {}
        for part in "qkv":
            x = self.edge_sum(Node("head", layer, h, part))
            if cfg.layer_norm:
                ln, q = f"h[{layer}].ln_1", f"{p}.{part}.ln_1"
                m = self.copy(f"{ln}.mean", {g.ops[f"{ln}.mean"].ins[0]: x}, f"{q}.mean")
                v = self.copy(f"{ln}.var", {g.ops[f"{ln}.var"].ins[0]: x, f"{ln}.mean": m}, f"{q}.var")
                x = self.copy(f"{ln}.out", {g.ops[f"{ln}.out"].ins[0]: x, f"{ln}.mean": m, f"{ln}.var": v},
                              f"{q}.out")
            lin = g.ops[f"{att}.{part}"]
            if not isinstance(lin, Linear):
                raise ConfigError(f"{att}.{part} is computed by {lin.label()}, not a linear layer: this model's "
                                  "attention cannot be split into heads for a circuit graph yet.")
            new = replace(lin, out=f"{p}.{part}", ins=(x, *lin.ins[1:]), n_out=hs, offset=lin.offset + h * hs, heads=1)
            part_out[part] = self.op(new, ("head", "pos", "dim"), (1, 0, hs), f"head {h}'s {part}")
        ren = {f"{att}.{k}": v for k, v in part_out.items()}
        for step in ("score", "score_max", "exp_sum", "att"):
            ren[f"{att}.{step}"] = f"{p}.{step}"
            spec = g.specs[f"{att}.{step}"]
            self.copy(f"{att}.{step}", ren, f"{p}.{step}")
            self.specs[f"{p}.{step}"] = replace(spec, name=f"{p}.{step}", dims=(1, *spec.dims[1:]))
        y = self.copy(f"{att}.y", ren, f"{p}.y")
        self.specs[y] = replace(self.specs[y], dims=(0, hs))
        proj = g.ops[f"{att}.out"]
        self.op(HeadProj(f"{p}.out", (y, proj.ins[1]), head=h, size=hs, layout=cfg.layout),
                ("pos", "embd"), (0, cfg.n_embd), f"head {h}'s output through its slice of c_proj")

    def chain(self, start: str, end: str, entry: str) -> None:
        """The model's ops from the stream tensor `start` to `end`, reading `entry` instead of `start`."""
        g = self.g
        inside = (nx.descendants(g.nx, start) & (nx.ancestors(g.nx, end) | {end}))
        for name in g.order:
            if name in inside and g.specs[name].kind == "computed":
                self.copy(name, {start: entry})

    def build(self) -> Graph:
        g, cfg = self.g, self.g.config
        for name in g.order:  # tokens, temperature and every parameter of the model, as they are
            if g.specs[name].kind != "computed":
                self.specs[name] = g.specs[name]
        for s in self.c.sources:
            self.spec(patch_name(s), ("position", "embd"), (self.T, cfg.n_embd), f"{s.name}'s patch value",
                      "parameter")
        self.copy("emb", {})
        for layer in range(cfg.n_layer):
            for h in range(cfg.n_head):
                self.head(layer, h)
            proj = g.ops[f"h[{layer}].attn.out"]
            if len(proj.ins) > 2:
                self.biases.append(proj.ins[2])
            if cfg.mlp:
                mid = f"h[{layer}].mid"
                self.edge_sum(Node("mlp", layer))
                self.chain(mid, f"h[{layer}].mlp.out", f"h[{layer}].mlp.in")
        self.edge_sum(Node("logits"))
        last = g.block_input(cfg.n_layer)
        self.chain(last, "prob", "ln_f.in")
        dg = nx.DiGraph()
        for name, spec in self.specs.items():
            dg.add_node(name, kind=spec.kind)
        for op in self.ops.values():
            for i in op.ins:
                dg.add_edge(i, op.out, op=op.kind)
        index = {n: i for i, n in enumerate(self.specs)}
        order = list(nx.lexicographical_topological_sort(dg, key=index.__getitem__))
        return Graph(cfg, self.specs, self.ops, dg, order)
