"""The switch gradient of every edge, for a batch of pairs at once: EAP's and EAP-IG's inner loop.

With every switch at one value α (0 for EAP, points of the path for EAP-IG), a destination's
input is Σ_i ((1 − α) · own_i + α · patch_i) over its sources, and its sources are a prefix of
the model's sources (a destination reads every source before it). So one running sum over the
sources gives every destination's input (O(sources · T · C), not O(edges · T · C)), and
backwards one running sum over the destinations gives every source's gradient. The switch
gradient of edge (u → d) is (patch_u − own_u) · ∂metric/∂(input of d): for every edge at once,
one [S, B·T·C] @ [B·T·C, D] product (the pairs' sum is the contraction).

The sweep runs the circuit graph's ops with their own `batched` and `vjp`, except three it
does itself: the edge sums (the running sums above), the linear layers and head projections
(a C-ordered copy of each weight slice, made once: a strided slice is not BLAS's; and no
weight gradient, which attribution never reads), and the logits, computed and differentiated
at the metric's row only. The values equal the engine's up to the rounding of sums taken in
another order: tests pin them against `Runs.gradient_by_autodiff` (the model's autodiff per
pair) to 1e-5 relative of the largest score in float32, and against finite differences.

>>> import numpy as np, dfgpt
>>> from dfgpt.circuits.runs import Runs
>>> runs = Runs(dfgpt.load("sort"), [("CABACAAAA", "CACACAAAA")], "logit_diff:B,C")
>>> g = runs.gradient(0.0)
>>> bool(np.allclose(g, runs.gradient_by_autodiff(0.0), rtol=1e-4, atol=1e-4 * abs(g).max()))
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..core.autodiff import needed
from ..core.config import ConfigError
from ..core.graph import Graph
from ..core.ops import EdgeSum, HeadProj, Linear
from .circuit_graph import input_name, own_name, weight_matrix
from .components import Components

__all__ = ["SwitchGradient"]

DLogit = Callable[[int, np.ndarray], tuple[int, np.ndarray]]  # (pair, its logit row [V]) -> (position, ∂m/∂logit)


class SwitchGradient:
    """∂metric/∂switch of every edge, summed over a batch of pairs, on one circuit graph.

    `graph`, `params`: a circuit model's graph and parameters (shared, only read);
    `position`: the logit row each metric reads.
    """

    def __init__(self, graph: Graph, params: dict[str, np.ndarray], comps: Components, position: int) -> None:
        self.graph, self.params, self.comps, self.t = graph, params, comps, position
        need = needed(graph, "logit")
        self.order = [n for n in graph.computed if n in need]
        self.srcs = [own_name(s) for s in comps.sources]
        self.src_of = {n: k for k, n in enumerate(self.srcs)}
        pos = comps.source_index
        # Every destination reads a prefix of the sources (checked: the running sums rely on it).
        self.n_of: dict[str, int] = {}
        for d in comps.dests:
            idx = [pos[s] for s in comps.reads[d]]
            if idx != list(range(len(idx))):
                raise ConfigError(f"{d.name} reads sources {idx}, not a prefix of the model's sources: "
                                  "attribute with Runs.gradient_by_autodiff")
            self.n_of[input_name(d)] = len(idx)
        self.dests = [input_name(d) for d in comps.dests]
        self.weights: dict[str, np.ndarray] = {}  # op -> its weight slice, C-ordered [K, n]
        self.backs: dict[str, np.ndarray] = {}  # op -> the transpose of that, C-ordered [n, K]

    def weight(self, name: str) -> np.ndarray:
        """The weight slice a linear op or head projection multiplies by, [in, out], C-ordered (memoised)."""
        got = self.weights.get(name)
        if got is None:
            got = self.weights[name] = weight_matrix(self.graph, self.params, name)
        return got

    def back(self, name: str) -> np.ndarray:
        """`weight(name)` transposed, C-ordered (memoised): the backward's product."""
        got = self.backs.get(name)
        if got is None:
            w = self.weight(name)
            got = self.backs[name] = w.T if w.size == self.params[self.graph.ops[name].ins[1]].size else \
                np.ascontiguousarray(w.T)
        return got

    def __call__(self, tokens: np.ndarray, patches: Sequence[np.ndarray], alpha: float, dlogit: DLogit) -> np.ndarray:
        """tokens [B, T] (the clean inputs), patches [S, B, T, C] (each pair's corrupted contributions),
        every switch at `alpha` -> ∂metric/∂switch summed over the pairs, [edges]."""
        V = self.forward(tokens, patches, alpha)
        B = tokens.shape[0]
        x = V[self.graph.ops["logit"].ins[0]]  # [B, T, C]
        rows = self.logit_rows(x[:, self.t])  # [B, V]
        seeds = np.zeros_like(x)
        for b in range(B):
            t, dz = dlogit(b, rows[b])
            if t != self.t:
                raise ConfigError(f"the metric reads position {t}, the sweep computed {self.t}")
            seeds[b, t] = self.weight("logit") @ dz.astype(x.dtype)  # [C, V] @ [V] -> [C]
        G = self.backward(V, {self.graph.ops["logit"].ins[0]: seeds}, alpha)
        delta = np.empty((len(self.srcs), *x.shape), x.dtype)  # [S, B, T, C]
        for k, n in enumerate(self.srcs):
            np.subtract(patches[k], V[n], out=delta[k])
        grads = np.zeros((len(self.dests), *x.shape), x.dtype)  # [D, B, T, C]
        for k, n in enumerate(self.dests):
            if n in G:
                grads[k] = G[n]
        delta, grads = delta.reshape(len(delta), -1), grads.reshape(len(grads), -1)
        M = delta @ grads.T  # [S, B·T·C] @ [B·T·C, D] -> [S, D]
        return np.concatenate([M[: self.n_of[d], k] for k, d in enumerate(self.dests)])

    def logit_rows(self, x: np.ndarray) -> np.ndarray:
        """The logits of rows x [R, C] -> [R, V] (the output layer is a plain linear layer: `Runs` checks)."""
        op = self.graph.ops["logit"]
        if not isinstance(op, Linear):
            raise ConfigError(f"the logits are computed by {op.label()}: attribute with Runs.gradient_by_autodiff")
        y = x @ self.weight("logit")
        return y + self.params[op.ins[2]][op.cols()] if len(op.ins) > 2 else y

    def forward(self, tokens: np.ndarray, patches: Sequence[np.ndarray], alpha: float) -> dict[str, np.ndarray]:
        """Every tensor below the logits' input, batched: {name: [B, ...]}."""
        g = self.graph
        V: dict[str, Any] = dict(self.params)
        V["tokens"] = tokens
        V["temperature"] = np.array(1.0, dtype=np.dtype(g.config.dtype))
        prefix: list[np.ndarray] = []  # prefix[n]: the sum of the first n+1 sources' terms
        for name in self.order:
            if name == "logit":
                continue
            op = g.ops[name]
            if isinstance(op, EdgeSum):
                n = self.n_of[name]
                while len(prefix) < n:
                    k = len(prefix)
                    own = V[self.srcs[k]]
                    term = own if alpha == 0 else (1 - alpha) * own + alpha * patches[k]
                    prefix.append(term.copy() if k == 0 else prefix[-1] + term)
                total = prefix[n - 1]
                for b in op.biases:
                    total = total + V[b]
                V[name] = total
            elif isinstance(op, Linear) and not op.stride:
                x = V[op.ins[0]]
                y = _mm(x, self.weight(name))  # [B, T, K] @ [K, n] -> [B, T, n]
                if len(op.ins) > 2:
                    y = y + V[op.ins[2]][op.cols()]
                H = op.heads
                V[name] = y.reshape(*y.shape[:2], H, -1).transpose(0, 2, 1, 3) if H else y
            elif isinstance(op, HeadProj):
                y = V[op.ins[0]]
                V[name] = _mm(y, self.weight(name))  # [B, T, hs] @ [hs, C] -> [B, T, C]
            else:
                V[name] = op.batched(V)
        return V

    def backward(self, V: dict[str, np.ndarray], seeds: dict[str, np.ndarray], alpha: float) -> dict[str, np.ndarray]:
        """∂metric/∂tensor for every destination input and everything between them and the logits."""
        g = self.graph
        G: dict[str, Any] = dict(seeds)
        by_n = sorted(self.dests, key=lambda d: -self.n_of[d])  # destinations, most sources first
        j = 0
        R: np.ndarray | None = None  # the sum of the gradients of the destinations that read source k
        computed = set(g.computed)
        for name in reversed(self.order):
            if name == "logit":
                continue
            k = self.src_of.get(name)
            if k is not None:  # a source: every destination reading it has its gradient by now
                while j < len(by_n) and self.n_of[by_n[j]] > k:
                    gd = G[by_n[j]]
                    R = gd.copy() if R is None else R + gd
                    j += 1
                if R is not None:
                    G[name] = R if alpha == 0 else (1 - alpha) * R
            gr = G.get(name)
            op = g.ops[name]
            if gr is None or isinstance(op, EdgeSum) or not any(i in computed for i in op.ins):
                continue  # an edge sum's sources get theirs above; the embedding reads no tensor
            if isinstance(op, Linear) and not op.stride:
                if op.heads:
                    gr = gr.transpose(0, 2, 1, 3).reshape(gr.shape[0], gr.shape[2], -1)  # [B, H, T, hs] -> [B, T, n]
                _add(G, op.ins[0], _mm(gr, self.back(name)))  # [B, T, n] @ [n, K] -> [B, T, K]
            elif isinstance(op, HeadProj):
                _add(G, op.ins[0], _mm(gr, self.back(name)))  # [B, T, C] @ [C, hs] -> [B, T, hs]
            else:
                op.vjp(V, gr, G)
        return G


def _add(G: dict[str, Any], name: str, g: np.ndarray) -> None:
    have = G.get(name)
    G[name] = g if have is None else have + g



def _mm(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x [B, T, K] @ w [K, n] as one 2-D product (a 3-D operand loops over its batch): [B, T, n]."""
    return (np.ascontiguousarray(x).reshape(-1, x.shape[-1]) @ w).reshape(*x.shape[:-1], w.shape[1])
