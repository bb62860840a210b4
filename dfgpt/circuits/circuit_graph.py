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
from ..core.naming import naming
from ..core.ops import EdgeSum, HeadProj, Linear, Op
from ..core.roles import LayerRoles
from ..models.weights import Weights
from .components import Components, Node

__all__ = ["CircuitWeights", "circuit_weights", "input_name", "own_name", "patch_name", "switch_name",
           "weight_matrix"]


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
    return f"{dest.block}.in" if dest.role == "logits" else f"{dest.name}.in"


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


def weight_matrix(graph: Graph, params: dict[str, np.ndarray], name: str) -> np.ndarray:
    """The weight slice a linear op or head projection multiplies by, [K, n]: a whole weight's transpose as
    it is (BLAS takes it: no 150 MB copy of wte), a slice C-ordered.

    >>> import dfgpt
    >>> cw = circuit_weights(dfgpt.load("sort"), 6)
    >>> weight_matrix(cw.graph, cw.params, "h[0].head[0].q").shape  # [C, hs]: c_attn's columns of head 0's query
    (48, 16)
    >>> weight_matrix(cw.graph, cw.params, "logit").shape  # [C, V]: lm_head's transpose, as it is
    (48, 3)
    """
    op = graph.ops[name]
    W = params[op.ins[1]]
    if isinstance(op, HeadProj):
        w = W[:, op.cols].T if op.layout == "out_in" else W[op.cols]  # [hs, C]
    elif isinstance(op, Linear):
        sl = op.cols()
        w = W[sl].T if op.layout == "out_in" else W[:, sl]  # [K, n]
    else:
        raise ConfigError(f"{name} is computed by {op.label()}, not a linear layer or head projection")
    return w if w.size == W.size else np.ascontiguousarray(w)


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

    def inside(self, start: str, end: str) -> list[str]:
        """The model's computed tensors from the stream tensor `start` to `end` (end included), in graph order."""
        g = self.g
        between = nx.descendants(g.nx, start) & (nx.ancestors(g.nx, end) | {end})
        return [n for n in g.order if n in between and g.specs[n].kind == "computed"]

    def project(self, dest: Node, lin_name: str, index: int, lr: LayerRoles) -> str:
        """One head's q (or one key/value head's k, v) from its own input: the block's norm copied under
        the destination's name (`h[0].head[1].q.ln_1.out`), then its rows of the projection, [1, T, hs]."""
        g, hs = self.g, self.g.config.head_size
        x = self.edge_sum(dest)
        ren = {lr.resid_pre: x}
        cut = len(dest.block) + 1
        for name in self.inside(lr.resid_pre, lr.attn_in) if lr.attn_in != lr.resid_pre else []:
            ren[name] = self.copy(name, ren, f"{dest.name}.{name[cut:]}")
        lin = g.ops[lin_name]
        if not isinstance(lin, Linear) or not lin.heads:
            raise ConfigError(f"{lin_name} is computed by {lin.label()}, not a linear layer per head: this model's "
                              "attention cannot be split into heads for a circuit graph yet.")
        step = lin.stride or lin.n_out // lin.heads
        new = replace(lin, out=dest.name, ins=(ren.get(lr.attn_in, x), *lin.ins[1:]), n_out=hs,
                      offset=lin.offset + index * step, heads=1, stride=0)
        out = self.op(new, ("head", "pos", "dim"), (1, 0, hs), f"{dest.name}: head {index}'s {dest.part}")
        rot = lr.q_rot if dest.part == "q" else lr.k_rot if dest.part == "k" else lr.v
        if rot != lin_name:  # rotary: turned by position like the model's, one head
            out = self.copy(rot, {lin_name: out}, f"{dest.name}_rot")
            self.specs[out] = replace(self.specs[out], dims=(1, 0, hs))
        return out

    def attention(self, layer: int, lr: LayerRoles) -> None:
        """Every head of one block on its own: per query head q, per key/value head k and v (each a
        destination), then each head's scores, pattern, weighted values and output (`HeadProj`)."""
        g, cfg = self.g, self.g.config
        H, KV, hs = cfg.n_head, cfg.kv_heads, cfg.head_size
        G = H // KV
        block = naming(cfg.family).layer.format(i=layer)
        for j in range(KV):
            kind = "head" if G == 1 else "kv"
            q = {h: self.project(Node("head", layer, h, "q", block), lr.q, h, lr) for h in range(j * G, (j + 1) * G)}
            k = self.project(Node(kind, layer, j, "k", block), lr.k, j, lr)
            v = self.project(Node(kind, layer, j, "v", block), lr.v, j, lr)
            for h, qh in q.items():
                p = f"{block}.head[{h}]"
                score, top, total = g.ops[lr.pattern].ins[:3]
                ren = {lr.q_rot: qh, lr.k_rot: k, lr.v: v}
                for name, step in ((score, "score"), (top, "score_max"), (total, "exp_sum"), (lr.pattern, "att")):
                    spec = g.specs[name]
                    ren[name] = self.copy(name, ren, f"{p}.{step}", **({"groups": 1} if step == "score" else {}))
                    self.specs[f"{p}.{step}"] = replace(spec, name=f"{p}.{step}", dims=(1, *spec.dims[1:]))
                y = self.copy(lr.z, ren, f"{p}.y", groups=1)
                self.specs[y] = replace(self.specs[y], dims=(0, hs))
                proj = HeadProj(f"{p}.out", (y, lr.o_proj), head=h, size=hs, layout=cfg.layout)
                self.op(proj, ("pos", "embd"), (0, cfg.n_embd), f"head {h}'s output through its columns of o_proj")

    def chain(self, start: str, end: str, entry: str) -> None:
        """The model's ops from the stream tensor `start` to `end`, reading `entry` instead of `start`."""
        for name in self.inside(start, end):
            self.copy(name, {start: entry})

    def build(self) -> Graph:
        g, cfg, c = self.g, self.g.config, self.c
        roles = g.roles
        if roles is None:
            raise ConfigError("this graph says nowhere where its residual stream and heads are (no roles): "
                              "a circuit graph is made from a model built by dfgpt.")
        for name in g.order:  # tokens, temperature and every parameter of the model, as they are
            if g.specs[name].kind != "computed":
                self.specs[name] = g.specs[name]
        for s in c.sources:
            self.spec(patch_name(s), ("position", "embd"), (self.T, cfg.n_embd), f"{s.name}'s patch value",
                      "parameter")
        self.copy(roles.layers[0].resid_pre, {})
        for layer, lr in enumerate(roles.layers):
            self.attention(layer, lr)
            proj = g.ops[lr.attn_out]
            bias = list(proj.ins[2:3])  # the output projection's bias: a constant every later destination adds
            if not c.parallel:
                self.biases += bias
            if cfg.mlp and lr.mlp_out is not None:
                dest = next(d for d in c.dests if d.role == "mlp" and d.layer == layer)
                self.edge_sum(dest)
                start = lr.resid_pre if c.parallel else lr.resid_mid
                assert start is not None
                self.chain(start, lr.mlp_out, input_name(dest))
            if c.parallel:  # attention and MLP read the block's input: the MLP does not add this block's bias
                self.biases += bias
        final = c.dests[-1]
        self.edge_sum(final)
        self.chain(roles.layers[-1].resid_post, "prob", input_name(final))
        dg = nx.DiGraph()
        for name, spec in self.specs.items():
            dg.add_node(name, kind=spec.kind)
        for op in self.ops.values():
            for i in op.ins:
                dg.add_edge(i, op.out, op=op.kind)
        index = {n: i for i, n in enumerate(self.specs)}
        order = list(nx.lexicographical_topological_sort(dg, key=index.__getitem__))
        return Graph(cfg, self.specs, self.ops, dg, order)
