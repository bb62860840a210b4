"""Backpropagation, batched: each op's own `batched` forward and `vjp`, swept over a graph.

The per-op math lives in each op's module (dfgpt.core.ops), in numpy over arrays with a
leading batch axis (parameters have none and collect the sum over the batch). `forward`
runs the ops in topological order, `backward` sweeps them in reverse; dfgpt.analysis.gradients
runs them with batch 1 on a sheet's values, training (dfgpt.training.train) on batches of
sequences. Tokens get no gradient: they are discrete.

>>> import numpy as np, dfgpt
>>> m = dfgpt.load("sort")
>>> V = forward(m.graph, m.params, np.array([[0, 2, 1, 0, 1, 0]]), until="logit")
>>> G = backward(m.graph, V, {"logit": np.ones_like(V["logit"])})
>>> V["logit"].shape, G["wte"].shape
((1, 6, 3), (3, 48))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .graph import Graph
from .ops.grads import Arrays, Grads

__all__ = ["Arrays", "Grads", "backward", "forward", "needed", "pinned_cells"]


def forward(graph: Graph, params: Arrays, tokens: np.ndarray, until: str = "prob",
            temperature: float = 1.0) -> Arrays:
    """Every tensor `until` needs, for a batch of sequences: tokens [B, T] -> {name: [B, ...]}."""
    V: Arrays = dict(params)
    V["tokens"] = np.asarray(tokens)
    V["temperature"] = np.array(temperature, dtype=np.dtype(graph.config.dtype))
    need = needed(graph, until)
    for name in graph.computed:
        if name in need:
            V[name] = graph.ops[name].batched(V)
    return V


def needed(graph: Graph, target: str) -> set[str]:
    """The tensors `target` is computed from, and itself."""
    import networkx as nx

    return set(nx.ancestors(graph.nx, target)) | {target}


def backward(graph: Graph, V: Arrays, seeds: Arrays, stop: Callable[[str], Any] | None = None) -> Arrays:
    """Reverse sweep: {tensor: ∂L/∂tensor} for seeds {tensor: ∂L/∂tensor} over the values V.

    `stop(name)` may return a bool mask of cells to treat as constants (pins): their own
    gradient is kept, but nothing flows through them to their inputs.
    """
    G = Grads({n: V[n] for n in graph.parameters if n in V})
    G.update({k: np.array(v) for k, v in seeds.items()})
    for name in reversed(graph.computed):
        g = G.get(name)
        if g is None:
            continue
        if stop is not None:
            m = stop(name)
            if m is not None:
                g = np.where(m, 0.0, g)
        graph.ops[name].vjp(V, g, G)
    return G


def pinned_cells(pins: dict[str, dict[tuple[int, ...], float]], V: Arrays) -> Callable[[str], np.ndarray | None]:
    """backward's `stop`: tensor -> [1, ...] mask of its pinned cells (constants: no gradient
    flows through them), None where nothing is pinned; V gives the batched shapes."""
    def stop(name: str) -> np.ndarray | None:
        p = pins.get(name)
        if not p:
            return None
        m = np.zeros(V[name].shape[1:], bool)
        for idx in p:
            if all(i < n for i, n in zip(idx, m.shape, strict=False)):  # type: ignore[var-annotated]
                m[idx] = True
        return m[None]

    return stop
