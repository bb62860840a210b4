"""The graph of named tensors: a model as parameters, inputs and the ops between them.

networkx holds tensors (tens to hundreds of nodes), never cells; the ops' index maps give
the cell level. Names follow each family's checkpoints, so loading is key for key;
dfgpt.core.builder builds a graph from a config.

>>> from dfgpt import Config
>>> from dfgpt.core.builder import build
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
from .ops import Op
from .roles import Roles

__all__ = ["Graph", "Kind", "TensorSpec"]

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
        if parts[0].startswith(("h[", "layers[")):
            return ".".join(parts[:2]) if len(parts) > 2 else parts[0]
        if parts[0] in ("wte", "wpe", "tokens", "emb", "embed_tokens", "embed_in", "rope"):
            return "embedding"
        if parts[0] in ("ln_f", "norm", "final_layer_norm"):
            return parts[0]
        return "output"


@dataclass
class Graph:
    """Specs of every tensor, the op computing each computed tensor, and their networkx DiGraph."""

    config: Config
    specs: dict[str, TensorSpec]
    ops: dict[str, Op]
    nx: nx.DiGraph
    order: list[str]
    roles: Roles | None = None  # where each role (residual stream, heads, norms) lives

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
