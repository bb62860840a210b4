"""The graph of named tensors: nanoGPT as parameters, inputs and the ops between them.

networkx holds tensors (tens to hundreds of nodes), never cells; the ops' index maps give
the cell level. Names follow the nanoGPT / GPT-2 checkpoints, so loading is key for key.

>>> from dfgpt import Config
>>> from dfgpt.core.graph import build
>>> g = build(Config(n_layer=1, n_head=2, n_embd=8, block_size=4, vocab=("a", "b")))
>>> g.ops["h[0].attn.att"].ins
('h[0].attn.score', 'h[0].attn.score_max', 'h[0].attn.exp_sum')
>>> g.specs["logit"].axes
('pos', 'vocab')
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import networkx as nx
import numpy as np

from .config import Config
from .memo import Memos, SheetDefaults
from .ops import (
    Add,
    Embed,
    Gelu,
    Linear,
    LNMean,
    LNOut,
    LNVar,
    Op,
    Score,
    Softmax,
    SoftmaxMax,
    SoftmaxSum,
    Weighted,
)

__all__ = ["Graph", "Kind", "TensorSpec", "build"]

Kind = Literal["parameter", "input", "computed"]
POS_AXES = ("pos", "key")


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor: its kind, axis names and sizes (0 on axes that grow with the input)."""

    name: str
    kind: Kind
    axes: tuple[str, ...]
    dims: tuple[int, ...]
    doc: str = ""

    @property
    def row_axis(self) -> int | None:
        """The position axis that validity is tracked on (None for parameters)."""
        return self.axes.index("pos") if "pos" in self.axes else None

    def shape(self, T: int) -> tuple[int, ...]:
        return tuple(T if a in POS_AXES else d for a, d in zip(self.axes, self.dims))

    @property
    def stage(self) -> str:
        """The block or module a tensor belongs to: 'h[1].attn', 'ln_f', 'embedding', 'output'."""
        parts = self.name.split(".")
        if parts[0].startswith("h["):
            return ".".join(parts[:2]) if len(parts) > 2 else parts[0]
        if parts[0] in ("wte", "wpe", "tokens", "emb"):
            return "embedding"
        if parts[0] in ("ln_f",):
            return "ln_f"
        return "output"


@dataclass
class Graph:
    """Specs of every tensor, the op computing each computed tensor, and their networkx DiGraph."""

    config: Config
    specs: dict[str, TensorSpec]
    ops: dict[str, Op]
    nx: nx.DiGraph
    order: list[str]

    def __post_init__(self) -> None:
        # Per computed tensor, what its rows read: (input, "row" | "prefix" | "whole", computed?).
        self.row_reads: dict[str, tuple[tuple[str, str, bool], ...]] = {
            name: tuple(
                (inp, how, self.specs[inp].kind == "computed")
                for inp, how in zip(op.ins, op.row_reads)
            )
            for name, op in self.ops.items()
        }
        self.row_axis: dict[str, int] = {
            n: s.row_axis for n, s in self.specs.items() if s.row_axis is not None
        }
        self.memo = Memos()  # plans, schedules, cuts, value blocks: what reads memoise, per graph
        self._records: dict[tuple[int, np.dtype], np.dtype | None] = {}
        self._computed = [n for n in self.order if self.specs[n].kind == "computed"]
        self.position = {n: i for i, n in enumerate(self._computed)}  # topological index of a computed tensor
        self._downstream: dict[str, frozenset[str]] = {}
        self._cells: dict[int, int] = {}
        self._parameters = [n for n, s in self.specs.items() if s.kind == "parameter"]
        self.sheet_defaults = SheetDefaults.of(self._parameters, self._computed)
        self._shapes: dict[int, dict[str, tuple[int, ...]]] = {}

    def shapes(self, cap: int) -> dict[str, tuple[int, ...]]:
        """{computed tensor: its shape at a capacity} (memoised: every new sheet asks)."""
        got = self._shapes.get(cap)
        if got is None:
            got = self._shapes[cap] = {n: self.specs[n].shape(cap) for n in self._computed}
        return got

    def record(self, cap: int, dtype: np.dtype) -> np.dtype | None:
        """One structured dtype holding every computed tensor at a capacity, a field each (memoised).

        A new sheet allocates it as one zeroed block and takes each tensor as a field view: one
        allocation instead of one per tensor (a third of a small sheet's creation). None past 1 GiB.
        """
        key = (cap, dtype)
        if key not in self._records:
            shapes = self.shapes(cap)
            size = sum(math.prod(s) for s in shapes.values()) * dtype.itemsize
            self._records[key] = np.dtype([(n, dtype, s) for n, s in shapes.items()]) if size < 1 << 30 else None
        return self._records[key]

    def cells(self, cap: int) -> int:
        """Cells of every computed tensor at a capacity (memoised: every new sheet asks)."""
        got = self._cells.get(cap)
        if got is None:
            got = self._cells[cap] = sum(math.prod(s) for s in self.shapes(cap).values())
        return got

    def downstream(self, name: str) -> frozenset[str]:
        """The computed tensors a tensor can change (itself included, if computed); memoised."""
        got = self._downstream.get(name)
        if got is None:
            near = nx.descendants(self.nx, name) | {name}
            got = self._downstream[name] = frozenset(n for n in near if n in self.position)
        return got

    def block_input(self, layer: int) -> str:
        return "emb" if layer == 0 else f"h[{layer - 1}].out"

    @property
    def parameters(self) -> list[str]:
        return list(self._parameters)

    @property
    def computed(self) -> list[str]:
        return list(self._computed)


class _Builder:
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

    def layer_norm(self, prefix: str, x: str) -> str:
        cfg, C = self.cfg, self.cfg.n_embd
        if not cfg.layer_norm:
            return x
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

    def linear(self, prefix: str, x: str, out: str, n_in: int, n_out: int, doc: str) -> str:
        w = self.weight(f"{prefix}.w", n_out, n_in, "weight")
        ins = [x, w]
        if self.cfg.bias:
            ins.append(self.param(f"{prefix}.b", ("out",), (n_out,), "bias"))
        op = Linear(out, tuple(ins), n_out=n_out, layout=self.cfg.layout)
        return self.computed(op, ("pos", "out"), (0, n_out), doc)

    def attention(self, layer: int, x: str) -> str:
        cfg, C, H, hs = self.cfg, self.cfg.n_embd, self.cfg.n_head, self.cfg.head_size
        p = f"h[{layer}].attn"
        w = self.weight(f"{p}.c_attn.w", 3 * C, C, "query, key and value weights")
        b = [self.param(f"{p}.c_attn.b", ("out",), (3 * C,), "bias")] if cfg.bias else []
        qkv = {}
        for i, part in enumerate("qkv"):
            op = Linear(f"{p}.{part}", (x, w, *b), n_out=C, offset=i * C, layout=cfg.layout, heads=H)
            qkv[part] = self.computed(op, ("head", "pos", "dim"), (H, 0, hs), f"{part} per head")
        score = self.computed(
            Score(f"{p}.score", (qkv["q"], qkv["k"])),
            ("head", "pos", "key"),
            (H, 0, 0),
            "scaled dot product, causally masked",
        )
        top = self.computed(
            SoftmaxMax(f"{p}.score_max", (score,)), ("head", "pos"), (H, 0), "row max"
        )
        total = self.computed(
            SoftmaxSum(f"{p}.exp_sum", (score, top)), ("head", "pos"), (H, 0), "softmax denominator"
        )
        att = self.computed(
            Softmax(f"{p}.att", (score, top, total)),
            ("head", "pos", "key"),
            (H, 0, 0),
            "attention probabilities",
        )
        y = self.computed(
            Weighted(f"{p}.y", (att, qkv["v"])), ("pos", "embd"), (0, C), "weighted values, heads concatenated"
        )
        return self.linear(f"{p}.c_proj", y, f"{p}.out", C, C, "attention output projection")

    def mlp(self, layer: int, x: str) -> str:
        C, n = self.cfg.n_embd, self.cfg.n_inner
        p = f"h[{layer}].mlp"
        fc = self.linear(f"{p}.c_fc", x, f"{p}.fc", C, n, "MLP expansion")
        act = self.computed(Gelu(f"{p}.gelu", (fc,), approx=self.cfg.gelu), ("pos", "hidden"), (0, n), "GELU")
        return self.linear(f"{p}.c_proj", act, f"{p}.out", n, C, "MLP projection")

    def build(self) -> Graph:
        cfg, C, V = self.cfg, self.cfg.n_embd, self.cfg.vocab_size
        self.specs["tokens"] = TensorSpec("tokens", "input", ("pos",), (0,), "token ids")
        self.specs["temperature"] = TensorSpec("temperature", "input", (), (), "softmax temperature")
        wte = self.param("wte", ("vocab", "embd"), (V, C), "token embedding")
        wpe = self.param("wpe", ("position", "embd"), (cfg.block_size, C), "position embedding")
        x = self.computed(
            Embed("emb", ("tokens", wte, wpe)), ("pos", "embd"), (0, C), "token + position embedding"
        )
        for layer in range(cfg.n_layer):
            a = self.attention(layer, self.layer_norm(f"h[{layer}].ln_1", x))
            out = f"h[{layer}].mid" if cfg.mlp else f"h[{layer}].out"
            x = self.computed(Add(out, (x, a)), ("pos", "embd"), (0, C), "residual after attention")
            if cfg.mlp:
                m = self.mlp(layer, self.layer_norm(f"h[{layer}].ln_2", x))
                x = self.computed(
                    Add(f"h[{layer}].out", (x, m)), ("pos", "embd"), (0, C), "residual after MLP"
                )
        x = self.layer_norm("ln_f", x)
        head = wte if cfg.tied else self.param("lm_head.w", ("vocab", "embd"), (V, C), "unembedding")
        self.computed(
            Linear("logit", (x, head), n_out=V, layout="out_in"), ("pos", "vocab"), (0, V), "logits"
        )
        self.computed(SoftmaxMax("logit_max", ("logit",)), ("pos",), (0,), "row max of the logits")
        self.computed(
            SoftmaxSum("exp_sum", ("logit", "logit_max", "temperature")), ("pos",), (0,), "softmax denominator"
        )
        self.computed(
            Softmax("prob", ("logit", "logit_max", "exp_sum", "temperature")),
            ("pos", "vocab"),
            (0, V),
            "next-token probabilities at the temperature",
        )
        g = nx.DiGraph()
        for name, spec in self.specs.items():
            g.add_node(name, kind=spec.kind)
        for op in self.ops.values():
            for i in op.ins:
                g.add_edge(i, op.out, op=op.kind)
        order = list(nx.lexicographical_topological_sort(g, key=list(self.specs).index))
        return Graph(cfg, self.specs, self.ops, g, order)


def build(cfg: Config) -> Graph:
    """The tensor graph of a nanoGPT with this config."""
    return _Builder(cfg).build()
