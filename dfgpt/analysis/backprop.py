"""Backpropagation, batched: one forward and one vector-Jacobian product per op kind.

The per-op math is written once, in numpy over arrays with a leading batch axis
(parameters have none and collect the sum over the batch). `forward` runs the ops in
topological order, `backward` sweeps them in reverse; dfgpt.analysis.gradients runs them
with batch 1 on a sheet's values, training (dfgpt.training.train) on batches of sequences.
Tokens get no gradient: they are discrete.

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

from ..core.graph import Graph
from ..core.ops import GELU_C, Op, gelu
from ..core.ops.attention import greedy
from . import arena

__all__ = ["FORWARD", "FORWARD_ROWS", "VJP", "Arrays", "Grads", "backward", "forward", "needed", "pinned_cells"]

Arrays = dict[str, np.ndarray]


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
    return _bias_heads(op, V, x @ _wt(op, V[op.ins[1]]))


def _f_linear_rows(op: Op, V: Arrays) -> np.ndarray:
    """_f_linear as one [B·T, K] @ [K, n] product instead of B small ones (matmul loops a 3-D
    operand's batch): twice as fast on 729 one-row sequences, but its sums may round apart
    from _f_linear's, so training (bit for bit on its recorded machine) keeps _f_linear."""
    x, Wt = V[op.ins[0]], _wt(op, V[op.ins[1]])
    return _bias_heads(op, V, (x.reshape(-1, x.shape[-1]) @ Wt).reshape(*x.shape[:-1], Wt.shape[1]))


def _bias_heads(op: Op, V: Arrays, y: np.ndarray) -> np.ndarray:
    """A Linear's product y [B, T, n] plus its bias, split into heads when it has them."""
    if len(op.ins) > 2:
        y = y + V[op.ins[2]][op.offset : op.offset + op.n_out]  # type: ignore[attr-defined]
    H = op.heads  # type: ignore[attr-defined]
    return y.reshape(*y.shape[:2], H, -1).transpose(0, 2, 1, 3) if H else y  # -> [B, H, T, n/H]


def _f_score(op: Op, V: Arrays) -> np.ndarray:
    q, k = V[op.ins[0]], V[op.ins[1]]  # [B, H, T, hs] -> [B, H, T, T]
    s = (q @ k.swapaxes(-1, -2)) * float(1.0 / np.sqrt(q.shape[-1]))  # a Python float: float32 stays float32
    return np.where(_causal(q.shape[2]), s, -np.inf)


def _f_max(op: Op, V: Arrays) -> np.ndarray:
    return V[op.ins[0]].max(axis=-1)


def _f_sum(op: Op, V: Arrays) -> np.ndarray:
    s, m = V[op.ins[0]], V[op.ins[1]]
    tau = _temp(op, V, 2)
    return (greedy(s) if tau == 0 else np.exp((s - m[..., None]) / tau)).sum(axis=-1)


def _f_softmax(op: Op, V: Arrays) -> np.ndarray:
    s, m, S = (V[n] for n in op.ins[:3])
    tau = _temp(op, V, 3)
    return (greedy(s) if tau == 0 else np.exp((s - m[..., None]) / tau)) / S[..., None]


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
FORWARD_ROWS = {**FORWARD, "linear": _f_linear_rows}  # inference only (greedy decoding): see _f_linear_rows


# -- vector-Jacobian products: G[input] += gᵀ ∂out/∂input -------------------------------------
class Grads(dict[str, np.ndarray]):
    """backward's {tensor: gradient}, the parameters' gradients carved out of one block of memory.

    At GPT-2 size the parameter gradients are ~500 MB on every backward: one block from
    dfgpt.analysis.arena, reused by the next call once this one's result is dropped, instead
    of ~150 fresh arrays whose page faults cost more than the matmuls. Slots are handed out
    once, untouched until written, so parameters outside the cone cost nothing.
    """

    def __init__(self, params: dict[str, np.ndarray]) -> None:
        super().__init__()
        self._offsets: dict[str, int] = {}
        total = 0
        for name, a in params.items():
            self._offsets[name] = total
            total += -(-a.size // 16) * 16  # slots start 64-byte aligned (float32), as BLAS likes
        self._total = total
        self._blocks: dict[np.dtype, np.ndarray] = {}

    def slot(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
        """An uninitialised array for a parameter's gradient, or None (not a parameter, or taken)."""
        off = self._offsets.pop(name, None)
        if off is None:
            return None
        block = self._blocks.get(dtype)
        if block is None:
            block = self._blocks[dtype] = arena.block(self._total, dtype)
        return block[off : off + int(np.prod(shape))].reshape(shape)


def _new(G: Arrays, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
    return G.slot(name, shape, np.dtype(dtype)) if isinstance(G, Grads) and name not in G else None


def _acc(G: Arrays, V: Arrays, name: str, g: np.ndarray, own: bool = False) -> None:
    """G[name] += g. `own`: g is a fresh array nobody else holds, so G may keep it uncopied."""
    if name in ("tokens", "temperature"):
        return
    if name in G:
        have = G[name]
        if have.shape == np.shape(g) and np.result_type(have, g) == have.dtype:
            have += g  # G's arrays are its own (made below): add in place, no new array per reader
        else:
            G[name] = have + g
    else:
        dtype = np.result_type(g, V[name])
        slot = None if own else _new(G, name, np.shape(g), dtype)
        if slot is not None:
            np.copyto(slot, g)
            G[name] = slot
        else:
            G[name] = g if own and g.dtype == dtype and g.flags.c_contiguous else np.array(g, dtype=dtype)


def _param_sum(g: np.ndarray, ndim: int) -> np.ndarray:
    """Sum a batched gradient over its leading axes down to a parameter's ndim."""
    return g.reshape(-1, *g.shape[g.ndim - ndim :]).sum(axis=0) if g.ndim > ndim else g


def _v_embed(op: Op, V: Arrays, g: np.ndarray, G: Arrays) -> None:
    tok, wte, wpe = (V[n] for n in op.ins)
    # Only the rows of the tokens read get a gradient: sum them compactly, then add those rows
    # (the same additions as a full zero array plus add.at, without a vocab-sized temporary).
    rows, inverse = np.unique(tok.reshape(-1), return_inverse=True)
    gr = np.zeros((rows.size, wte.shape[1]), np.result_type(g, wte))
    np.add.at(gr, inverse.reshape(-1), g.reshape(-1, g.shape[-1]))
    have = G.get(op.ins[1])
    if have is not None and have.dtype == gr.dtype:
        have[rows] += gr
    else:
        gw = _new(G, op.ins[1], wte.shape, gr.dtype) if have is None else None
        if gw is None:
            gw = np.zeros(wte.shape, gr.dtype)
        else:
            gw.fill(0)
        gw[rows] = gr
        _acc(G, V, op.ins[1], gw, own=True)
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
    out_in = op.layout == "out_in"  # type: ignore[attr-defined]
    if live.size * 2 < g2.shape[0]:  # one logit's gradient is one row: skip the rows of zeros
        gx = np.zeros((g2.shape[0], Wt.shape[0]), np.result_type(g2, Wt))
        gx[live] = g2[live] @ Wt.T  # [R, n] @ [n, K] -> [R, K]
        _acc(G, V, op.ins[0], gx.reshape(*g.shape[:-1], -1), own=True)
        g2, x2 = g2[live], x2[live]
    else:
        _acc(G, V, op.ins[0], g @ Wt.T, own=True)  # [B, T, n] @ [n, K] -> [B, T, K]
    # The weight's own layout straight from the product, C order: reductions over G (the
    # training's gradient norm) follow memory order, so no transposed view may stand in for it.
    a, b = (g2.T, x2) if out_in else (x2.T, g2)  # [n, R] @ [R, K] -> [n, K], or [K, R] @ [R, n] -> [K, n]
    sl = slice(op.offset, op.offset + op.n_out)  # type: ignore[attr-defined]
    dtype = np.result_type(a, b, W)
    if op.offset == 0 and op.n_out == (W.shape[0] if out_in else W.shape[1]):  # type: ignore[attr-defined]
        slot = _new(G, op.ins[1], W.shape, dtype) if np.result_type(a, b) == dtype else None
        if slot is not None:
            G[op.ins[1]] = np.matmul(a, b, out=slot)
        else:
            _acc(G, V, op.ins[1], a @ b, own=True)
    else:  # q, k, v: one slice each of c_attn, added into that slice alone
        gWs = a @ b
        gW = G.get(op.ins[1])
        if gW is None:
            gW = _new(G, op.ins[1], W.shape, dtype)
            if gW is None:
                gW = np.zeros(W.shape, dtype)
            else:
                gW.fill(0)
            G[op.ins[1]] = gW
        elif gW.dtype != dtype:
            gW = G[op.ins[1]] = gW.astype(np.result_type(gW, dtype))
        if out_in:
            gW[sl] += gWs
        else:
            gW[:, sl] += gWs
    if len(op.ins) > 2:
        gb = np.zeros_like(V[op.ins[2]])
        gb[sl] = g.reshape(-1, g.shape[-1]).sum(axis=0)
        _acc(G, V, op.ins[2], gb)


def _v_score(op: Op, V: Arrays, g: np.ndarray, G: Arrays) -> None:
    q, k = V[op.ins[0]], V[op.ins[1]]
    g = np.where(_causal(q.shape[2]), g, 0.0) * float(1.0 / np.sqrt(q.shape[-1]))
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
    if tau == 0:  # greedy: a step function of the logits, flat almost everywhere: nothing flows back
        return
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
    if tau == 0:  # greedy, as _v_sum
        return
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
    need = needed(graph, until)
    for name in graph.computed:
        if name in need:
            op = graph.ops[name]
            V[name] = FORWARD[op.kind](op, V)
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
