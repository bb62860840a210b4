"""Independent numpy computation of the circuit graph (every edge switched apart), the oracle of test_circuits.

It imports nothing from dfgpt. Each destination (every head's q, k and v input, every MLP, the
final residual) sums its sources' contributions (the embedding, each earlier head through its
slice of c_proj, each earlier MLP; an MLP reads its own block's heads) plus the earlier
attention biases, taking a source's patch where its edge's switch is 1. The arithmetic is
written the way dfgpt's exact mode fixes it, so the comparison can be bit for bit: every
product row by row ([1, K] @ [K, N]), attention reductions over the capacity `cap` (keys past
the input are zeros), and the same order of operations in LayerNorm, GELU and the softmax.
"""
import math

import numpy as np


def rows(x, w):  # [R, K] @ [K, N] -> [R, N], one [1, K] @ [K, N] product per row
    return np.concatenate([x[r : r + 1] @ w for r in range(len(x))])


def layer_norm(x, g, b, eps):  # [T, C] -> [T, C]
    mean = np.add.reduce(x, axis=-1) / x.shape[-1]
    d = x - mean[:, None]
    var = np.add.reduce(d * d, axis=-1) / x.shape[-1]
    y = x - mean[:, None]
    y /= np.sqrt(var + eps)[:, None]
    y *= g
    return y if b is None else y + b


def gelu(x, kind):
    if kind == "tanh":
        t = x * x * x * 0.044715 + x
        t = np.tanh(t * math.sqrt(2 / math.pi)) + 1.0
        return 0.5 * x * t
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def sources_and_dests(cfg):
    """[source names], [(destination name, [its source names])], in dfgpt's edge order."""
    srcs, dests = ["emb"], []
    for l in range(cfg["n_layer"]):
        before = list(srcs)
        for h in range(cfg["n_head"]):
            dests += [(f"h[{l}].head[{h}].{p}", before) for p in "qkv"]
        srcs = [*srcs, *(f"h[{l}].head[{h}]" for h in range(cfg["n_head"]))]
        if cfg["mlp"]:
            dests.append((f"h[{l}].mlp", list(srcs)))
            srcs = [*srcs, f"h[{l}].mlp"]
    dests.append(("logits", list(srcs)))
    return srcs, dests


def edge_names(cfg):
    return [f"{s} -> {d}" for d, ss in sources_and_dests(cfg)[1] for s in ss]


def forward(state, cfg, tokens, cap, switches=None, patches=None):
    """The circuit graph on one input: {"logits": [T, V], "contrib": {source: [T, C]}, "inputs": {dest: [T, C]}}.

    `switches`: {edge name: value in [0, 1]} (default 0); `patches`: {source: [T, C]}."""
    switches, patches = switches or {}, patches or {}
    C, H, eps = cfg["n_embd"], cfg["n_head"], cfg["ln_eps"]
    hs = C // H
    out_in = cfg["layout"] == "out_in"

    def p(name):
        return state.get(name) if cfg["bias"] or not name.endswith(".bias") else None

    def lin(x, prefix, lo=None, hi=None):  # x @ W[lo:hi] (+ b[lo:hi]), by rows
        W = state[prefix + ".weight"]
        sl = slice(lo, hi)
        w = W[sl].T if out_in else W[:, sl]
        y = rows(x, w)
        b = p(prefix + ".bias")
        return y if b is None else y + b[sl]

    def ln(x, prefix):
        if not cfg["layer_norm"]:
            return x
        return layer_norm(x, state[prefix + ".weight"], p(prefix + ".bias"), eps)

    tokens = np.asarray(tokens)
    T = len(tokens)
    contrib = {"emb": state["transformer.wte.weight"][tokens] + state["transformer.wpe.weight"][:T]}
    inputs = {}
    biases = []

    def dest_input(dest, srcs):
        total = None
        for s in srcs:
            v = switches.get(f"{s} -> {dest}", 0.0)
            own, pat = contrib[s], patches.get(s, np.zeros_like(contrib[s]))
            term = own if v == 0 else pat if v == 1 else (1 - v) * own + v * pat
            total = np.array(term) if total is None else total + term
        for b in biases:
            total = total + b
        inputs[dest] = total
        return total

    _, dests = sources_and_dests(cfg)
    reads = dict(dests)
    visible = np.tril(np.ones((cap, cap), bool))
    for l in range(cfg["n_layer"]):
        pre = f"transformer.h.{l}"
        for h in range(H):
            qkv = {}
            for i, part in enumerate("qkv"):
                name = f"h[{l}].head[{h}].{part}"
                x = ln(dest_input(name, reads[name]), pre + ".ln_1")
                lo = i * C + h * hs
                qkv[part] = np.zeros((cap, hs))
                qkv[part][:T] = lin(x, pre + ".attn.c_attn", lo, lo + hs)
            q, k, v = qkv["q"], qkv["k"], qkv["v"]
            s = rows(q[:T], k.T) * (1.0 / math.sqrt(hs))  # [T, cap]
            s = np.where(visible[:T], s, -np.inf)
            top = np.maximum.reduce(s, axis=-1)
            z = s - top[:, None]
            z[s == top[:, None]] = 0.0
            z = np.where(visible[:T], z, -np.inf)
            e = np.exp(z)
            att = e / np.add.reduce(e, axis=-1)[:, None]
            y = rows(att, v)  # [T, cap] @ [cap, hs]
            W = state[pre + ".attn.c_proj.weight"]
            w = W[:, h * hs : (h + 1) * hs].T if out_in else W[h * hs : (h + 1) * hs]
            contrib[f"h[{l}].head[{h}]"] = rows(y, np.ascontiguousarray(w))  # the head's slice as a [hs, C] array
        b = p(pre + ".attn.c_proj.bias")
        if b is not None:
            biases.append(b)
        if cfg["mlp"]:
            name = f"h[{l}].mlp"
            x = ln(dest_input(name, reads[name]), pre + ".ln_2")
            contrib[name] = lin(gelu(lin(x, pre + ".mlp.c_fc"), cfg["gelu"]), pre + ".mlp.c_proj")
    x = ln(dest_input("logits", reads["logits"]), "transformer.ln_f")
    head = state["transformer.wte.weight"] if cfg["tied"] else state["lm_head.weight"]
    return {"logits": rows(x, head.T), "contrib": contrib, "inputs": inputs}
