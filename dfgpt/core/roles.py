"""Where each role of a transformer lives in a graph: the residual stream, attention, MLP, heads, norms.

Upper layers (TransformerLens names, the lens, attribution, pictures) ask a graph's `roles`
instead of pattern-matching one family's tensor names: `roles.layers[0].resid_pre` is `emb` in
GPT-2 and Llama alike, `roles.layers[1].q` is `h[1].attn.q` in GPT-2 and
`layers[1].self_attn.q` in Llama.

>>> from dfgpt import Config
>>> from dfgpt.core.builder import build
>>> r = build(Config(n_layer=2, n_head=2, n_embd=8, block_size=4, vocab=("a", "b"))).roles
>>> r.layers[1].resid_pre, r.layers[1].pattern, r.final_norm, r.unembed
('h[0].out', 'h[1].attn.att', 'ln_f.out', 'lm_head.w')
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LayerRoles", "Roles"]


@dataclass(frozen=True)
class LayerRoles:
    """The tensors of one block by role (None where the block has no such tensor).

    `q`, `k`, `v` are per head before any rotation ([heads, pos, dim]; k and v have `kv_heads`
    heads, each read by `groups` query heads); `q_rot`, `k_rot` what the scores read (q and k
    themselves without rotary embeddings); `z` the heads' weighted values side by side
    ([pos, heads · head_size]), which `o_proj` (the output projection's weight) maps to `attn_out`,
    so head h's output is z's columns h·hs .. (h+1)·hs - 1 through that weight's.
    """

    resid_pre: str
    resid_mid: str | None
    resid_post: str
    attn_in: str
    attn_out: str
    mlp_in: str | None
    mlp_out: str | None
    q: str
    k: str
    v: str
    q_rot: str
    k_rot: str
    scores: str
    pattern: str
    z: str
    o_proj: str
    mlp_act: str | None


@dataclass(frozen=True)
class Roles:
    """Every block's roles, and the model's ends: the embedding tables, final norm and unembedding.

    `parallel`: attention and MLP both read the block's input (GPT-NeoX); `resid_mid` is then the
    stream plus the attention output, which the MLP does not read.
    """

    embed: str
    pos_embed: str | None
    layers: tuple[LayerRoles, ...]
    final_norm: str
    unembed: str
    logit: str
    heads: int
    kv_heads: int
    head_size: int
    parallel: bool
