"""Independent numpy reference of the nanoGPT forward pass (picoGPT style).

This file is the oracle the dfgpt engine is tested against: it imports
nothing from dfgpt. Everything is whole-tensor numpy, float64 unless the
weights are float32.
"""
import math

import numpy as np

_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(x, kind):
    if kind == "tanh":  # GPT-2's approximation
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    if kind == "erf":  # exact
        return 0.5 * x * (1 + _erf(x / math.sqrt(2)).astype(x.dtype))
    raise ValueError(f"unknown gelu {kind!r}")


def softmax(x):
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def layer_norm(x, w, b, eps):  # [T, C] -> [T, C]
    mu = np.mean(x, axis=-1, keepdims=True)
    var = np.mean((x - mu) ** 2, axis=-1, keepdims=True)  # biased variance
    y = (x - mu) / np.sqrt(var + eps) * w
    return y if b is None else y + b


def forward(state, cfg, tokens):
    """nanoGPT forward on one sequence; returns logits and intermediates."""
    C, H = cfg["n_embd"], cfg["n_head"]
    hs = C // H
    eps = cfg["ln_eps"]

    def p(name):  # parameter lookup; None for absent biases
        return state.get(name)

    def linear(x, prefix):  # [T, in] -> [T, out]
        W = state[prefix + ".weight"]
        y = x @ W.T if cfg["layout"] == "out_in" else x @ W
        b = p(prefix + ".bias") if cfg["bias"] else None
        return y if b is None else y + b

    def ln(x, prefix):  # [T, C] -> [T, C]; identity when layer_norm is off
        if not cfg["layer_norm"]:
            return x
        b = p(prefix + ".bias") if cfg["bias"] else None
        return layer_norm(x, state[prefix + ".weight"], b, eps)

    tokens = np.asarray(tokens, dtype=np.int64)
    T = len(tokens)
    x = state["transformer.wte.weight"][tokens] + state["transformer.wpe.weight"][:T]  # [T, C]
    out = {"hidden": [x], "att": [], "q": [], "k": [], "v": []}
    causal = np.tril(np.ones((T, T), dtype=bool))  # [T, T]

    for l in range(cfg["n_layer"]):
        h = f"transformer.h.{l}"
        # --- attention ---
        qkv = linear(ln(x, h + ".ln_1"), h + ".attn.c_attn")  # [T, C] -> [T, 3C]
        q, k, v = np.split(qkv, 3, axis=-1)  # 3 x [T, C]
        q, k, v = (a.reshape(T, H, hs).transpose(1, 0, 2) for a in (q, k, v))  # [T, C] -> [H, T, hs]
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(hs)  # [H, T, hs] @ [H, hs, T] -> [H, T, T]
        scores = np.where(causal, scores, -np.inf)
        att = softmax(scores)  # [H, T, T], exact zeros above the diagonal
        y = att @ v  # [H, T, T] @ [H, T, hs] -> [H, T, hs]
        y = y.transpose(1, 0, 2).reshape(T, C)  # [H, T, hs] -> [T, C]
        x = x + linear(y, h + ".attn.c_proj")  # [T, C]
        out["att"].append(att)
        out["q"].append(q)
        out["k"].append(k)
        out["v"].append(v)
        # --- MLP ---
        if cfg["mlp"]:
            m = linear(ln(x, h + ".ln_2"), h + ".mlp.c_fc")  # [T, C] -> [T, n_inner]
            m = gelu(m, cfg["gelu"])
            x = x + linear(m, h + ".mlp.c_proj")  # [T, n_inner] -> [T, C]
        out["hidden"].append(x)

    xf = ln(x, "transformer.ln_f")  # [T, C]
    head = state["transformer.wte.weight"] if cfg["tied"] else state["lm_head.weight"]  # [V, C]
    out["ln_f"] = xf
    out["logits"] = xf @ head.T  # [T, C] @ [C, V] -> [T, V]
    return out


def random_state(cfg, vocab_size, block_size, seed, dtype=np.float64):
    """Seeded random weights with exactly the keys `forward` expects for cfg."""
    rng = np.random.default_rng(seed)
    C, I = cfg["n_embd"], cfg["n_inner"]
    s = {}

    def w(*shape, std=0.3):
        return (rng.standard_normal(shape) * std).astype(dtype)

    def lin(prefix, n_out, n_in):  # stored [out, in], or [in, out] for 'in_out'
        s[prefix + ".weight"] = w(n_out, n_in) if cfg["layout"] == "out_in" else w(n_in, n_out)
        if cfg["bias"]:
            s[prefix + ".bias"] = w(n_out, std=0.2)

    def ln(prefix):
        if cfg["layer_norm"]:
            s[prefix + ".weight"] = (1 + rng.standard_normal(C) * 0.2).astype(dtype)
            if cfg["bias"]:
                s[prefix + ".bias"] = w(C, std=0.2)

    s["transformer.wte.weight"] = w(vocab_size, C, std=0.5)
    s["transformer.wpe.weight"] = w(block_size, C, std=0.3)
    for l in range(cfg["n_layer"]):
        h = f"transformer.h.{l}"
        ln(h + ".ln_1")
        lin(h + ".attn.c_attn", 3 * C, C)
        lin(h + ".attn.c_proj", C, C)
        if cfg["mlp"]:
            ln(h + ".ln_2")
            lin(h + ".mlp.c_fc", I, C)
            lin(h + ".mlp.c_proj", C, I)
    ln("transformer.ln_f")
    if not cfg["tied"]:
        s["lm_head.weight"] = w(vocab_size, C, std=0.5)
    return s


_CONV1D = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")


def hf_to_nanogpt(hf_state):
    """HF GPT2LMHeadModel state dict (Conv1D [in, out]) -> nanoGPT keys ([out, in])."""
    out = {}
    for k, v in hf_state.items():
        if k.endswith((".attn.bias", ".attn.masked_bias")) or k == "lm_head.weight":
            continue  # causal-mask buffers; lm_head is tied to wte
        out[k] = np.ascontiguousarray(v.T) if k.endswith(_CONV1D) else v
    return out
