"""The blocks every family is made of: attention (fused or apart, grouped-query, rotary, windowed) and MLPs.

Each function adds one block's tensors to an `Assembly` under a family's names and says where
its roles live.

>>> from dfgpt import Config
>>> from dfgpt.core.builder import build
>>> g = build(Config(n_layer=1, n_head=4, n_kv_head=2, n_embd=8, block_size=4, vocab=("a", "b"),
...                  family="llama", norm="rms", positions="rotary", mlp_kind="swiglu", bias=False))
>>> g.ops["layers[0].self_attn.score"].ins, g.specs["layers[0].self_attn.k"].dims
(('layers[0].self_attn.q_rot', 'layers[0].self_attn.k_rot'), (2, 0, 2))
"""

from __future__ import annotations

from dataclasses import dataclass

from .assembly import Assembly
from .naming import Naming
from .ops import Gelu, Linear, Product, Rotary, Score, Silu, Softmax, SoftmaxMax, SoftmaxSum, Weighted

__all__ = ["ROPE", "Attention", "attention", "mlp"]

ROPE = ("rope.cos", "rope.sin")  # the rotary tables, [position, rot / 2], shared by every layer


@dataclass(frozen=True)
class Attention:
    """Where one attention block's roles live."""

    q: str
    k: str
    v: str
    q_rot: str
    k_rot: str
    scores: str
    pattern: str
    z: str
    o_proj: str
    out: str


def _qkv(a: Assembly, names: Naming, i: int, x: str) -> tuple[str, str, str]:
    """q [H, T, hs], k and v [KV, T, hs] from x [T, C]: a fused weight (GPT-2: q, k, v blocks; NeoX: head by
    head) or three projections."""
    cfg, C = a.cfg, a.cfg.n_embd
    H, KV, hs = cfg.n_head, cfg.kv_heads, cfg.head_size
    p = names.attn.format(i=i)
    bias = cfg.bias and cfg.qkv_bias
    if names.qkv is None:
        return tuple(  # type: ignore[return-value]
            a.linear(stem.format(i=i), x, f"{p}.{part}", C, n * hs, f"{part} per head", bias=bias, heads=n)
            for stem, part, n in ((names.q_proj, "q", H), (names.k_proj, "k", KV), (names.v_proj, "v", KV))
        )
    fused = names.qkv.format(i=i)
    w = a.weight(f"{fused}.w", 3 * H * hs, C, "query, key and value weights")
    b = [a.param(f"{fused}.b", ("out",), (3 * H * hs,), "bias")] if bias else []
    out = []
    for j, part in enumerate("qkv"):
        if names.qkv_per_head:  # head h's q, k and v side by side: rows h·3hs + j·hs + d
            op = Linear(f"{p}.{part}", (x, w, *b), n_out=H * hs, offset=j * hs, layout=cfg.layout, heads=H,
                        stride=3 * hs)
        else:
            op = Linear(f"{p}.{part}", (x, w, *b), n_out=C, offset=j * C, layout=cfg.layout, heads=H)
        out.append(a.computed(op, ("head", "pos", "dim"), (H, 0, hs), f"{part} per head"))
    return out[0], out[1], out[2]


def attention(a: Assembly, names: Naming, i: int, x: str) -> Attention:
    """Causal self-attention of x [T, C] -> [T, C]: q·k scores, softmax, weighted values, output projection."""
    cfg, C = a.cfg, a.cfg.n_embd
    H, KV, hs = cfg.n_head, cfg.kv_heads, cfg.head_size
    p = names.attn.format(i=i)
    q, k, v = _qkv(a, names, i, x)
    qr, kr = q, k
    if cfg.rotary:
        qr = a.computed(Rotary(f"{p}.q_rot", (q, *ROPE), rot=cfg.rotary), ("head", "pos", "dim"), (H, 0, hs),
                        "q turned by position (rotary)")
        kr = a.computed(Rotary(f"{p}.k_rot", (k, *ROPE), rot=cfg.rotary), ("head", "pos", "dim"), (KV, 0, hs),
                        "k turned by position (rotary)")
    G, W = H // KV, cfg.window
    masked = "scaled dot product, causally masked" + (f", window {W}" if W else "")
    score = a.computed(Score(f"{p}.score", (qr, kr), groups=G, window=W), ("head", "pos", "key"), (H, 0, 0), masked)
    top = a.computed(SoftmaxMax(f"{p}.score_max", (score,), window=W), ("head", "pos"), (H, 0), "row max")
    total = a.computed(SoftmaxSum(f"{p}.exp_sum", (score, top), window=W), ("head", "pos"), (H, 0),
                       "softmax denominator")
    att = a.computed(Softmax(f"{p}.att", (score, top, total), window=W), ("head", "pos", "key"), (H, 0, 0),
                     "attention probabilities")
    y = a.computed(
        Weighted(f"{p}.y", (att, v), groups=G, window=W), ("pos", "embd"), (0, H * hs),
        "weighted values, heads concatenated",
    )
    o = names.o_proj.format(i=i)
    out = a.linear(o, y, f"{p}.out", H * hs, C, "attention output projection", bias=cfg.bias and cfg.proj_bias)
    return Attention(q, k, v, qr, kr, score, att, y, f"{o}.w", out)


def mlp(a: Assembly, names: Naming, i: int, x: str) -> tuple[str, str]:
    """The MLP of x [T, C] -> [T, C] and its activation's tensor: GELU (GPT-2, NeoX) or gated (SwiGLU, GeGLU)."""
    cfg, C, n = a.cfg, a.cfg.n_embd, a.cfg.n_inner
    p = names.mlp.format(i=i)
    bias = cfg.bias and cfg.mlp_bias
    if cfg.mlp_kind == "gelu":
        fc = a.linear(names.fc.format(i=i), x, f"{p}.fc", C, n, "MLP expansion", bias=bias)
        act = a.computed(Gelu(f"{p}.{names.act}", (fc,), approx=cfg.gelu), ("pos", "hidden"), (0, n), "GELU")
        return a.linear(names.down.format(i=i), act, f"{p}.out", n, C, "MLP projection", bias=bias), act
    gate = a.linear(names.gate.format(i=i), x, f"{p}.gate", C, n, "the gate's projection", bias=bias)
    up = a.linear(names.up.format(i=i), x, f"{p}.up", C, n, "the up projection", bias=bias)
    if cfg.mlp_kind == "swiglu":
        act = a.computed(Silu(f"{p}.act", (gate,)), ("pos", "hidden"), (0, n), "SiLU of the gate")
    else:
        act = a.computed(Gelu(f"{p}.act", (gate,), approx="tanh"), ("pos", "hidden"), (0, n), "GELU (tanh) of the gate")
    gated = a.computed(Product(f"{p}.gated", (act, up)), ("pos", "hidden"), (0, n), "the gate times up")
    return a.linear(names.down.format(i=i), gated, f"{p}.out", n, C, "MLP projection", bias=bias), act
