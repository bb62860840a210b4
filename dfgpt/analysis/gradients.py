"""Gradients: one vector-Jacobian product per op kind, for a sheet's cells and for training.

The per-op forward and VJP math is written once, in numpy over arrays with a leading
batch axis (parameters have none and collect the sum over the batch). `grad(sheet,
target)` runs it with batch 1 on the engine's values (edits and pins included) and a
reverse sweep over the ops in reverse topological order; training (dfgpt.training.train) runs
the same functions on batches of sequences. Tokens get no gradient: they are discrete.

>>> import dfgpt
>>> s = dfgpt.load("sort-random").sheet("CABACA")
>>> g = s.grad("logit[5][A]")
>>> g["logit[5][A]"], g["wpe[6][0]"]
(1.0, 0.0)
>>> g.arrays["wte"].shape
(3, 48)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.blas import one_blas_thread
from ..core.graph import Graph
from ..core.ops import GELU_C, Op, gelu
from ..html import table

if TYPE_CHECKING:
    from ..cells import Cells

__all__ = ["FORWARD", "VJP", "Gradient", "backward", "forward", "grad", "pinned_cells"]

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Gradient:
    """∂target/∂cell for every cell: `arrays[tensor]` (logical shape, 0 outside the cone) and by name."""

    target: str
    value: float
    arrays: dict[str, np.ndarray]
    resolve: Callable[[str], tuple[str, tuple[int, ...]]] = field(repr=False, compare=False)

    def __getitem__(self, cell: str) -> float:
        tensor, idx = self.resolve(cell)
        a = self.arrays.get(tensor)
        return 0.0 if a is None else float(a[idx])

    def tensors(self) -> list[str]:
        """The tensors the target depends on (nonzero gradient somewhere)."""
        return [n for n, a in self.arrays.items() if np.any(a)]

    def __repr__(self) -> str:
        return f"Gradient(∂{self.target} = {self.value:+.6g} by the cells of {len(self.tensors())} tensors)"

    def _repr_html_(self) -> str:
        rows = [[n, f"{int(np.count_nonzero(a)):,}", f"{float(np.abs(a).max()):.5g}"]
                for n, a in self.arrays.items() if np.any(a)]
        return table(f"∂{self.target} (= {self.value:+.6g}) by tensor", ["tensor", "nonzero cells", "max |∂|"], rows)


# -- forward, batched: computed arrays are [B, ...], parameters are unbatched ----------------
def _wt(op: Op, W: np.ndarray) -> np.ndarray:
    """The slice of W that a Linear reads, as [K, n_out]."""
    sl = slice(op.offset, op.offset + op.n_out)  # type: ignore[attr-defined]
    return W[sl].T if op.layout == "out_in" else W[:, sl]  # type: ignore[attr-defined]


def _causal(T: int) -> np.ndarray:
    return np.tril(np.ones((T, T), bool))


def _temp(op: Op, V: Arrays, k: int) -> float:
    return float(V[op.ins[k]]) if len(op.ins) > k else 1.0


def _f_embed(op: Op, V: Arrays) -> np.ndarray:
    tok, wte, wpe = (V[n] for n in op.ins)  # [B, T] -> [B, T, C]
    return wte[tok] + wpe[: tok.shape[1]]


def _f_mean(op: Op, V: Arrays) -> np.ndarray:
    x = V[op.ins[0]]  # [B, T, C] -> [B, T]
    return x.sum(axis=-1) / x.shape[-1]


def _f_var(op: Op, V: Arrays) -> np.ndarray:
    x, m = V[op.ins[0]], V[op.ins[1]]  # [B, T, C], [B, T] -> [B, T]
    d = x - m[..., None]
    return (d * d).sum(axis=-1) / x.shape[-1]


def _f_lnout(op: Op, V: Arrays) -> np.ndarray:
    x, m, var = (V[n] for n in op.ins[:3])  # -> [B, T, C]
    y = (x - m[..., None]) / np.sqrt(var + op.eps)[..., None] * V[op.ins[3]]  # type: ignore[attr-defined]
    return y + V[op.ins[4]] if len(op.ins) > 4 else y


def _f_linear(op: Op, V: Arrays) -> np.ndarray:
    x = V[op.ins[0]]  # [B, T, K] @ [K, n] -> [B, T, n] (or [B, H, T, n/H] with heads)
    y = x @ _wt(op, V[op.ins[1]])
    if len(op.ins) > 2:
        y = y + V[op.ins[2]][op.offset : op.offset + op.n_out]  # type: ignore[attr-defined]
    H = op.heads  # type: ignore[attr-defined]
    return y.reshape(*y.shape[:2], H, -1).transpose(0, 2, 1, 3) if H else y


def _f_score(op: Op, V: Arrays) -> np.ndarray:
    q, k = V[op.ins[0]], V[op.ins[1]]  # [B, H, T, hs] -> [B, H, T, T]
    s = (q @ k.swapaxes(-1, -2)) * (1.0 / np.sqrt(q.shape[-1]))
    return np.where(_causal(q.shape[2]), s, -np.inf)


def _f_max(op: Op, V: Arrays) -> np.ndarray:
    return V[op.ins[0]].max(axis=-1)


def _f_sum(op: Op, V: Arrays) -> np.ndarray:
    s, m = V[op.ins[0]], V[op.ins[1]]
    return np.exp((s - m[..., None]) / _temp(op, V, 2)).sum(axis=-1)


def _f_softmax(op: Op, V: Arrays) -> np.ndarray:
    s, m, S = (V[n] for n in op.ins[:3])
    return np.exp((s - m[..., None]) / _temp(op, V, 3)) / S[..., None]


def _f_weighted(op: Op, V: Arrays) -> np.ndarray:
    att, v = V[op.ins[0]], V[op.ins[1]]  # [B, H, T, T] @ [B, H, T, hs] -> [B, T, H·hs]
    y = att @ v
    return y.transpose(0, 2, 1, 3).reshape(y.shape[0], y.shape[2], -1)


def _f_add(op: Op, V: Arrays) -> np.ndarray:
    return V[op.ins[0]] + V[op.ins[1]]


def _f_gelu(op: Op, V: Arrays) -> np.ndarray:
    return gelu(V[op.ins[0]], op.approx)  # type: ignore[attr-defined]


FORWARD: dict[str, Callable[[Op, Arrays], np.ndarray]] = {
    "embed": _f_embed,
    "ln_mean": _f_mean,
    "ln_var": _f_var,
    "ln_out": _f_lnout,
    "linear": _f_linear,
    "score": _f_score,
    "softmax_max": _f_max,
    "softmax_sum": _f_sum,
    "softmax": _f_softmax,
    "weighted": _f_weighted,
    "add": _f_add,
    "gelu": _f_gelu,
}


# -- vector-Jacobian products: G[input] += gᵀ ∂out/∂input -------------------------------------
def _acc(G: Arrays, V: Arrays, name: str, g: np.ndarray) -> None:
    if name in ("tokens", "temperature"):
        return
    if name in G:
        have = G[name]
        if have.shape == np.shape(g) and np.result_type(have, g) == have.dtype:
            have += g  # G's arrays are its own (made below): add in place, no new array per reader
        else:
            G[name] = have + g
    else:
        G[name] = np.array(g, dtype=np.result_type(g, V[name]))


def _param_sum(g: np.ndarray, ndim: int) -> np.ndarray:
    """Sum a batched gradient over its leading axes down to a parameter's ndim."""
    return g.reshape(-1, *g.shape[g.ndim - ndim :]).sum(axis=0) if g.ndim > ndim else g


def _v_embed(op: Op, V: Arrays, g: np.ndarray, G: Arrays) -> None:
    tok, wte, wpe = (V[n] for n in op.ins)
    gw = np.zeros_like(wte)
    np.add.at(gw, tok.reshape(-1), g.reshape(-1, g.shape[-1]))
    _acc(G, V, op.ins[1], gw)
    gp = np.zeros_like(wpe)
    gp[: tok.shape[1]] = g.sum(axis=0)
    _acc(G, V, op.ins[2], gp)


def _v_mean(op: Op, V: Arrays, g: np.ndarray, G: Arrays) -> None:
    x = V[op.ins[0]]
    _acc(G, V, op.ins[0], np.broadcast_to(g[..., None] / x.shape[-1], x.shape))


def _v_var(op: Op, V: Arrays, g: np.ndarray, G: Arrays) -> None:
    x, m = V[op.ins[0]], V[op.ins[1]]
    d = x - m[..., None]
    C = x.shape[-1]
    _acc(G, V, op.ins[0], g[..., None] * (2.0 / C) * d)
    _acc(G, V, op.ins[1], -g * (2.0 / C) * d.sum(axis=-1))


def _v_lnout(op: Op, V: Arrays, g: np.ndarray, G: Arrays) -> None:
    x, m, var, gam = (V[n] for n in op.ins[:4])
    r = 1.0 / np.sqrt(var + op.eps)  # type: ignore[attr-defined]
    d = x - m[..., None]
    gg = g * gam
    _acc(G, V, op.ins[0], gg * r[..., None])
    _acc(G, V, op.ins[1], -(gg.sum(axis=-1)) * r)
    _acc(G, V, op.ins[2], (gg * d).sum(axis=-1) * (-0.5 * r * r * r))
    _acc(G, V, op.ins[3], _param_sum(g * d * r[..., None], 1))
    if len(op.ins) > 4:
        _acc(G, V, op.ins[4], _param_sum(g, 1))


def _v_linear(op: Op, V: Arrays, g: np.ndarray, G: Arrays) -> None:
    x, W = V[op.ins[0]], V[op.ins[1]]
    if op.heads:  # type: ignore[attr-defined]
        g = g.transpose(0, 2, 1, 3).reshape(g.shape[0], g.shape[2], -1)  # [B, H, T, hs] -> [B, T, n]
    Wt = _wt(op, W)
    g2, x2 = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])  # [B·T, n], [B·T, K]
    live = np.flatnonzero(g2.any(axis=1))
    if live.size * 2 < g2.shape[0]:  # one logit's gradient is one row: skip the rows of zeros
        gx = np.zeros((g2.shape[0], Wt.shape[0]), np.result_type(g2, Wt))
        gx[live] = g2[live] @ Wt.T  # [R, n] @ [n, K] -> [R, K]
        _acc(G, V, op.ins[0], gx.reshape(*g.shape[:-1], -1))
        gWt = x2[live].T @ g2[live]  # [K, R] @ [R, n] -> [K, n]
    else:
        _acc(G, V, op.ins[0], g @ Wt.T)  # [B, T, n] @ [n, K] -> [B, T, K]
        gWt = x2.T @ g2  # [K, n]
    sl = slice(op.offset, op.offset + op.n_out)  # type: ignore[attr-defined]
    whole = op.offset == 0 and op.n_out == (W.shape[0] if op.layout == "out_in" else W.shape[1])  # type: ignore[attr-defined]
    if whole:
        # C order, as the sliced path makes it: reductions over G (the training's gradient norm)
        # follow memory order, and an F-ordered transpose would round them differently.
        gW = np.ascontiguousarray(gWt.T) if op.layout == "out_in" else gWt  # type: ignore[attr-defined]
    else:  # q, k, v: one slice each of c_attn
        gW = np.zeros_like(W)
        if op.layout == "out_in":  # type: ignore[attr-defined]
            gW[sl] = gWt.T
        else:
            gW[:, sl] = gWt
    _acc(G, V, op.ins[1], gW)
    if len(op.ins) > 2:
        gb = np.zeros_like(V[op.ins[2]])
        gb[sl] = g.reshape(-1, g.shape[-1]).sum(axis=0)
        _acc(G, V, op.ins[2], gb)


def _v_score(op: Op, V: Arrays, g: np.ndarray, G: Arrays) -> None:
    q, k = V[op.ins[0]], V[op.ins[1]]
    g = np.where(_causal(q.shape[2]), g, 0.0) * (1.0 / np.sqrt(q.shape[-1]))
    _acc(G, V, op.ins[0], g @ k)  # [B, H, T, T] @ [B, H, T, hs]
    _acc(G, V, op.ins[1], g.swapaxes(-1, -2) @ q)


def _v_max(op: Op, V: Arrays, g: np.ndarray, G: Arrays) -> None:
    s = V[op.ins[0]]
    onehot = np.zeros_like(s)
    np.put_along_axis(onehot, s.argmax(axis=-1)[..., None], 1.0, axis=-1)
    _acc(G, V, op.ins[0], onehot * g[..., None])


def _acc_temperature(G: Arrays, name: str, e: np.ndarray, ge: np.ndarray, z: np.ndarray, tau: float) -> None:
    """∂/∂τ of exp(z) with z = (s - max) / τ is exp(z) · (-z / τ); masked keys (e = 0) add nothing."""
    d = float(np.sum(np.where(e > 0, ge * (-z / tau), 0.0)))
    G[name] = np.asarray(G[name] + d if name in G else d, dtype=np.float64)


def _v_sum(op: Op, V: Arrays, g: np.ndarray, G: Arrays) -> None:
    s, m = V[op.ins[0]], V[op.ins[1]]
    tau = _temp(op, V, 2)
    z = (s - m[..., None]) / tau
    e = np.exp(z)
    ge = g[..., None] * e / tau
    _acc(G, V, op.ins[0], ge)
    _acc(G, V, op.ins[1], -ge.sum(axis=-1))
    if len(op.ins) > 2:
        _acc_temperature(G, op.ins[2], e, g[..., None] * e, z, tau)


def _v_softmax(op: Op, V: Arrays, g: np.ndarray, G: Arrays) -> None:
    s, m, S = (V[n] for n in op.ins[:3])
    tau = _temp(op, V, 3)
    z = (s - m[..., None]) / tau
    a = np.exp(z) / S[..., None]
    ga = g * a
    _acc(G, V, op.ins[0], ga / tau)
    _acc(G, V, op.ins[1], -ga.sum(axis=-1) / tau)
    _acc(G, V, op.ins[2], -ga.sum(axis=-1) / S)
    if len(op.ins) > 3:  # the sum is its own cell: only exp(z) in the numerator moves with τ here
        _acc_temperature(G, op.ins[3], a, ga, z, tau)


def _v_weighted(op: Op, V: Arrays, g: np.ndarray, G: Arrays) -> None:
    att, v = V[op.ins[0]], V[op.ins[1]]
    B, H, T, hs = v.shape
    gy = g.reshape(B, T, H, hs).transpose(0, 2, 1, 3)  # [B, T, C] -> [B, H, T, hs]
    _acc(G, V, op.ins[0], np.where(_causal(T), gy @ v.swapaxes(-1, -2), 0.0))
    _acc(G, V, op.ins[1], att.swapaxes(-1, -2) @ gy)


def _v_add(op: Op, V: Arrays, g: np.ndarray, G: Arrays) -> None:
    _acc(G, V, op.ins[0], g)
    _acc(G, V, op.ins[1], g)


def _v_gelu(op: Op, V: Arrays, g: np.ndarray, G: Arrays) -> None:
    x = V[op.ins[0]]
    if op.approx == "tanh":  # type: ignore[attr-defined]
        th = np.tanh(GELU_C * (x + 0.044715 * x * x * x))
        d = 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * GELU_C * (1.0 + 3 * 0.044715 * x * x)
    else:
        from scipy.special import erf

        d = 0.5 * (1.0 + erf(x / np.sqrt(2.0))) + x * np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)
    _acc(G, V, op.ins[0], g * d)


VJP: dict[str, Callable[[Op, Arrays, np.ndarray, Arrays], None]] = {
    "embed": _v_embed,
    "ln_mean": _v_mean,
    "ln_var": _v_var,
    "ln_out": _v_lnout,
    "linear": _v_linear,
    "score": _v_score,
    "softmax_max": _v_max,
    "softmax_sum": _v_sum,
    "softmax": _v_softmax,
    "weighted": _v_weighted,
    "add": _v_add,
    "gelu": _v_gelu,
}


def forward(graph: Graph, params: Arrays, tokens: np.ndarray, until: str = "prob",
            temperature: float = 1.0) -> Arrays:
    """Every tensor `until` needs, for a batch of sequences: tokens [B, T] -> {name: [B, ...]}."""
    V: Arrays = dict(params)
    V["tokens"] = np.asarray(tokens)
    V["temperature"] = np.array(temperature, dtype=np.dtype(graph.config.dtype))
    need = _cone(graph, until)
    for name in graph.computed:
        if name in need:
            op = graph.ops[name]
            V[name] = FORWARD[op.kind](op, V)
    return V


def _cone(graph: Graph, target: str) -> set[str]:
    import networkx as nx

    return set(nx.ancestors(graph.nx, target)) | {target}


def backward(graph: Graph, V: Arrays, seeds: Arrays, stop: Callable[[str], Any] | None = None) -> Arrays:
    """Reverse sweep: {tensor: ∂L/∂tensor} for seeds {tensor: ∂L/∂tensor} over the values V.

    `stop(name)` may return a bool mask of cells to treat as constants (pins): their own
    gradient is kept, but nothing flows through them to their inputs.
    """
    G: Arrays = {k: np.array(v) for k, v in seeds.items()}
    for name in reversed(graph.computed):
        g = G.get(name)
        if g is None:
            continue
        if stop is not None:
            m = stop(name)
            if m is not None:
                g = np.where(m, 0.0, g)
        op = graph.ops[name]
        VJP[op.kind](op, V, g, G)
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


def grad(sheet: Cells, target: str) -> Gradient:
    """∂target/∂cell for every cell of the target's cone; a selection means the sum of its cells.

    Only the position rows up to the target's last row are used: later rows are outside
    every cone (the causal mask). Values come from the engine, so edits and pins count.
    """
    masks = sheet.masks(target)
    eng = sheet.engine
    specs = sheet.graph.specs
    last = 0
    for tensor, m in masks.items():
        ra = specs[tensor].row_axis
        if ra is not None and m.any():
            # The last position any selected cell sits at, on the row axis or a key axis
            # (a masked att[h][t][s > t] is a target too).
            for a, ax in enumerate(specs[tensor].axes):
                if ax in ("pos", "key"):
                    other = tuple(b for b in range(m.ndim) if b != a)
                    at = np.flatnonzero(m.any(axis=other)) if other else np.flatnonzero(m)
                    last = max(last, int(at[-1]))
        elif specs[tensor].kind == "computed":
            last = eng.T - 1
    Tn = last + 1 if any(specs[t].row_axis is not None for t in masks) else eng.T
    need: set[str] = set()
    for tensor in masks:
        if specs[tensor].kind == "computed":
            need |= _cone(sheet.graph, tensor)
    prefix = np.zeros(eng.T, bool)
    prefix[:Tn] = True
    eng.ensure({n: prefix for n in need if specs[n].kind == "computed"})

    def cut(name: str, a: np.ndarray) -> np.ndarray:
        axes = specs[name].axes
        return a[tuple(slice(0, Tn) if ax in ("pos", "key") else slice(None) for ax in axes)]

    V: Arrays = {}
    for name in need | set(sheet.graph.parameters) | {"tokens", "temperature"}:
        if specs[name].kind == "parameter" or name == "temperature":
            V[name] = eng.values[name]
        else:
            V[name] = cut(name, eng.view(name))[None]
    seeds: Arrays = {}
    parts: list[np.ndarray] = []
    for tensor, m in masks.items():
        if specs[tensor].kind == "computed":
            seeds[tensor] = cut(tensor, m).astype(eng.dtype)[None]  # float32 sheets: float32 gradients
        if tensor != "tokens":
            parts.append(np.asarray(eng.view(tensor))[m])
    picked = np.concatenate(parts) if parts else np.zeros(0)
    value = sum((float(np.sum(p)) for p in parts), 0.0)
    if value == 0 and picked.size and np.all(np.signbit(picked)):
        value = -0.0  # a sum of -0.0 cells is -0.0 (IEEE), which np.sum's +0.0 start would lose
    with one_blas_thread():  # ~150 medium matmuls: threads cost more than they give (3.3 s vs 1.7 s at GPT-2 size)
        G = backward(sheet.graph, V, seeds, pinned_cells(eng.pins, V))
    arrays: dict[str, np.ndarray] = {}
    for tensor, m in masks.items():  # a selected parameter: ∂target/∂itself
        if specs[tensor].kind == "parameter":
            arrays[tensor] = m.astype(np.float64)
    for name, g in G.items():
        if name == "tokens":
            continue
        if name == "temperature":  # a scalar, summed over every cell that divides by it
            arrays[name] = np.asarray(g, dtype=np.float64)
            continue
        shape = tuple(eng.shape(name))
        if specs[name].kind == "parameter":
            full = g.astype(eng.dtype, copy=False)  # backward's own array: no copy
        elif tuple(g.shape[1:]) == shape:
            full = g[0].astype(eng.dtype, copy=False)
        else:  # rows past the target's last position: outside every cone, 0
            full = np.zeros(shape, eng.dtype)
            full[tuple(slice(0, n) for n in g.shape[1:])] = g[0]
        arrays[name] = arrays[name] + full if name in arrays else full
    return Gradient(target, value, arrays, sheet.cell)
