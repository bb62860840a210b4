"""Assembling a graph: parameters, computed tensors and the ops between them, then the networkx DiGraph.

The pieces every family shares live here (a parameter, a weight in its layout, a Linear, a
norm); dfgpt.core.blocks builds attention and MLPs from them and dfgpt.core.builder wires the blocks.

>>> from dfgpt import Config
>>> a = Assembly(Config(n_layer=1, n_head=1, n_embd=4, block_size=2, vocab=("a",)))
>>> a.weight("w", 3, 4, "a weight"), a.specs["w"].axes
('w', ('out', 'in'))
"""

from __future__ import annotations

import networkx as nx

from .config import Config
from .graph import Graph, TensorSpec
from .ops import Linear, LNMean, LNOut, LNVar, Op, RMSOut
from .ops.rms import RMS
from .roles import Roles

__all__ = ["Assembly"]


class Assembly:
    """Specs and ops as they are added, in order (the order a graph lists and sorts them by)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.specs: dict[str, TensorSpec] = {}
        self.ops: dict[str, Op] = {}

    def param(self, name: str, axes: tuple[str, ...], dims: tuple[int, ...], doc: str) -> str:
        self.specs[name] = TensorSpec(name, "parameter", axes, dims, doc)
        return name

    def weight(self, name: str, n_out: int, n_in: int, doc: str) -> str:
        if self.cfg.layout == "out_in":
            return self.param(name, ("out", "in"), (n_out, n_in), doc)
        return self.param(name, ("in", "out"), (n_in, n_out), doc)

    def computed(self, op: Op, axes: tuple[str, ...], dims: tuple[int, ...], doc: str) -> str:
        self.specs[op.out] = TensorSpec(op.out, "computed", axes, dims, doc)
        self.ops[op.out] = op
        return op.out

    def norm(self, prefix: str, x: str) -> str:
        """LayerNorm (`.g`, `.b` if biased; mean, var, out) or RMSNorm (`.w`; ms, out) of x, per the config."""
        cfg, C = self.cfg, self.cfg.n_embd
        if not cfg.layer_norm:
            return x
        if cfg.norm == "rms":
            w = self.param(f"{prefix}.w", ("embd",), (C,), "RMSNorm scale" + (" (less 1)" if cfg.norm_offset else ""))
            ms = self.computed(RMS(f"{prefix}.ms", (x,)), ("pos",), (0,), "mean square of the row")
            return self.computed(
                RMSOut(f"{prefix}.out", (x, ms, w), eps=cfg.ln_eps, offset=cfg.norm_offset),
                ("pos", "embd"), (0, C), "normalised and scaled",
            )
        g = self.param(f"{prefix}.g", ("embd",), (C,), "LayerNorm scale")
        ins = [g]
        if cfg.bias:
            ins.append(self.param(f"{prefix}.b", ("embd",), (C,), "LayerNorm shift"))
        mean = self.computed(LNMean(f"{prefix}.mean", (x,)), ("pos",), (0,), "mean of the row")
        var = self.computed(
            LNVar(f"{prefix}.var", (x, mean)), ("pos",), (0,), "population variance of the row"
        )
        return self.computed(
            LNOut(f"{prefix}.out", (x, mean, var, *ins), eps=cfg.ln_eps),
            ("pos", "embd"),
            (0, C),
            "normalised, scaled and shifted",
        )

    def linear(self, prefix: str, x: str, out: str, n_in: int, n_out: int, doc: str, bias: bool | None = None,
               heads: int = 0) -> str:
        """x @ `prefix.w` (+ `prefix.b`): [T, n_in] -> [T, n_out], or [heads, T, n_out / heads] with heads."""
        w = self.weight(f"{prefix}.w", n_out, n_in, "weight")
        ins = [x, w]
        if self.cfg.bias if bias is None else bias:
            ins.append(self.param(f"{prefix}.b", ("out",), (n_out,), "bias"))
        op = Linear(out, tuple(ins), n_out=n_out, layout=self.cfg.layout, heads=heads)
        if heads:
            return self.computed(op, ("head", "pos", "dim"), (heads, 0, n_out // heads), doc)
        return self.computed(op, ("pos", "out"), (0, n_out), doc)

    def finish(self, roles: Roles) -> Graph:
        """The graph of everything added: networkx edges input -> output, ordered as added."""
        g = nx.DiGraph()
        for name, spec in self.specs.items():
            g.add_node(name, kind=spec.kind)
        for op in self.ops.values():
            for i in op.ins:
                g.add_edge(i, op.out, op=op.kind)
        order = list(nx.lexicographical_topological_sort(g, key=list(self.specs).index))
        return Graph(self.cfg, self.specs, self.ops, g, order, roles)
