"""The graph of a model: its family's blocks wired into a residual stream, between embedding and logits.

GPT-2 (nanoGPT), Llama, Mistral, Qwen2, Gemma and GPT-NeoX share the pieces (dfgpt.core.blocks);
a family's config says which (norm, positions, attention and MLP kinds, parallel residual) and
dfgpt.core.naming what they are called. The graph records where each role lives (`graph.roles`).

>>> from dfgpt import Config
>>> g = build(Config(n_layer=1, n_head=2, n_embd=8, block_size=4, vocab=("a", "b")))
>>> g.ops["h[0].attn.att"].ins
('h[0].attn.score', 'h[0].attn.score_max', 'h[0].attn.exp_sum')
>>> g.specs["logit"].axes
('pos', 'vocab')
"""

from __future__ import annotations

from .assembly import Assembly
from .blocks import ROPE, attention, mlp
from .config import Config
from .graph import Graph, TensorSpec
from .naming import naming
from .ops import Add, Embed, Linear, Softmax, SoftmaxMax, SoftmaxSum, TokenEmbed
from .roles import LayerRoles, Roles

__all__ = ["build"]


def _embedding(a: Assembly, embed: str, pos: str | None) -> str:
    """emb [T, C]: the token's row (+ its position's row with learned positions, · a scale in Gemma)."""
    cfg, C, V = a.cfg, a.cfg.n_embd, a.cfg.vocab_size
    a.specs["tokens"] = TensorSpec("tokens", "input", ("pos",), (0,), "token ids")
    a.specs["temperature"] = TensorSpec("temperature", "input", (), (), "softmax temperature")
    table = a.param(embed, ("vocab", "embd"), (V, C), "token embedding")
    if pos is not None:
        wpe = a.param(pos, ("position", "embd"), (cfg.block_size, C), "position embedding")
        return a.computed(Embed("emb", ("tokens", table, wpe)), ("pos", "embd"), (0, C), "token + position embedding")
    if cfg.rotary:
        for name, fn in zip(ROPE, ("cos", "sin")):
            a.param(name, ("position", "rot"), (cfg.block_size, cfg.rotary // 2), f"rotary {fn} of position · θ_i")
    doc = "token embedding" + (f" · {cfg.embed_scale!r}" if cfg.embed_scale != 1.0 else "")
    return a.computed(TokenEmbed("emb", ("tokens", table), scale=cfg.embed_scale), ("pos", "embd"), (0, C), doc)


def _output(a: Assembly, x: str, head: str) -> None:
    """logit [T, V] = x · head, then the next-token probabilities at the temperature."""
    V = a.cfg.vocab_size
    a.computed(Linear("logit", (x, head), n_out=V, layout="out_in"), ("pos", "vocab"), (0, V), "logits")
    a.computed(SoftmaxMax("logit_max", ("logit",)), ("pos",), (0,), "row max of the logits")
    a.computed(
        SoftmaxSum("exp_sum", ("logit", "logit_max", "temperature")), ("pos",), (0,), "softmax denominator"
    )
    a.computed(
        Softmax("prob", ("logit", "logit_max", "exp_sum", "temperature")),
        ("pos", "vocab"),
        (0, V),
        "next-token probabilities at the temperature",
    )


def build(cfg: Config) -> Graph:
    """The tensor graph of a model with this config (its family's names and blocks)."""
    a, names = Assembly(cfg), naming(cfg.family)
    C = cfg.n_embd
    pos = names.pos_embed if cfg.positions == "learned" else None
    x = _embedding(a, names.embed, pos)
    layers = []
    for i in range(cfg.n_layer):
        L = names.layer.format(i=i)
        attn_in = a.norm(names.ln_1.format(i=i), x)
        at = attention(a, names, i, attn_in)
        mid = f"{L}.mid" if cfg.mlp else f"{L}.out"
        if cfg.parallel and cfg.mlp:  # NeoX: the MLP reads the block's input too, beside attention
            mlp_in = a.norm(names.ln_2.format(i=i), x)
            m, act = mlp(a, names, i, mlp_in)
            a.computed(Add(mid, (x, at.out)), ("pos", "embd"), (0, C), "residual plus attention")
        else:
            a.computed(Add(mid, (x, at.out)), ("pos", "embd"), (0, C), "residual after attention")
            if cfg.mlp:
                mlp_in = a.norm(names.ln_2.format(i=i), mid)
                m, act = mlp(a, names, i, mlp_in)
        out = mid
        if cfg.mlp:
            out = a.computed(Add(f"{L}.out", (mid, m)), ("pos", "embd"), (0, C), "residual after MLP")
        layers.append(LayerRoles(
            resid_pre=x, resid_mid=mid if cfg.mlp else None, resid_post=out, attn_in=attn_in, attn_out=at.out,
            mlp_in=mlp_in if cfg.mlp else None, mlp_out=m if cfg.mlp else None, q=at.q, k=at.k, v=at.v,
            q_rot=at.q_rot, k_rot=at.k_rot, scores=at.scores, pattern=at.pattern, z=at.z, o_proj=at.o_proj,
            mlp_act=act if cfg.mlp else None,
        ))
        x = out
    x = a.norm(names.final, x)
    head = names.embed if cfg.tied else a.param(names.head, ("vocab", "embd"), (cfg.vocab_size, C), "unembedding")
    _output(a, x, head)
    roles = Roles(embed=names.embed, pos_embed=pos, layers=tuple(layers), final_norm=x, unembed=head, logit="logit",
                  heads=cfg.n_head, kv_heads=cfg.kv_heads, head_size=cfg.head_size, parallel=cfg.parallel)
    return a.finish(roles)
