"""Per-family tensor names, after each checkpoint's own parameter names: one table per family.

A `Naming` gives every stem the graph builder needs; `{i}` stands for the layer. GPT-2's are
nanoGPT's (`h[0].attn.c_attn.w`), Llama's (Mistral, Qwen2, Gemma share it) transformers'
(`layers[0].self_attn.q_proj.w`), GPT-NeoX's too (`layers[0].attention.query_key_value.w`).

>>> naming("qwen2").q_proj.format(i=3)
'layers[3].self_attn.q_proj'
>>> naming("gpt_neox").qkv, naming("gpt2").qkv
('layers[{i}].attention.query_key_value', 'h[{i}].attn.c_attn')
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GPT2", "LLAMA", "NEOX", "Naming", "naming"]


@dataclass(frozen=True)
class Naming:
    """The stems of one family's tensors. `qkv` is a fused q/k/v weight (None: q_proj, k_proj,
    v_proj apart); `qkv_per_head` says it is laid out head by head (NeoX) rather than q, k, v
    blocks (GPT-2). `fc`/`down` are the MLP's projections, `gate`/`up` a gated MLP's."""

    embed: str
    pos_embed: str | None
    layer: str
    ln_1: str
    ln_2: str
    attn: str
    qkv: str | None
    qkv_per_head: bool
    q_proj: str
    k_proj: str
    v_proj: str
    o_proj: str
    mlp: str
    fc: str
    act: str
    gate: str
    up: str
    down: str
    final: str
    head: str
    prefix: str  # the checkpoint's prefix of every key but the head's: "model." (Llama), "gpt_neox." (NeoX)


GPT2 = Naming(
    embed="wte", pos_embed="wpe", layer="h[{i}]", ln_1="h[{i}].ln_1", ln_2="h[{i}].ln_2", attn="h[{i}].attn",
    qkv="h[{i}].attn.c_attn", qkv_per_head=False, q_proj="", k_proj="", v_proj="", o_proj="h[{i}].attn.c_proj",
    mlp="h[{i}].mlp", fc="h[{i}].mlp.c_fc", act="gelu", gate="", up="", down="h[{i}].mlp.c_proj", final="ln_f",
    head="lm_head.w", prefix="transformer.",
)
LLAMA = Naming(
    embed="embed_tokens", pos_embed=None, layer="layers[{i}]", ln_1="layers[{i}].input_layernorm",
    ln_2="layers[{i}].post_attention_layernorm", attn="layers[{i}].self_attn", qkv=None, qkv_per_head=False,
    q_proj="layers[{i}].self_attn.q_proj", k_proj="layers[{i}].self_attn.k_proj",
    v_proj="layers[{i}].self_attn.v_proj", o_proj="layers[{i}].self_attn.o_proj", mlp="layers[{i}].mlp", fc="",
    act="act", gate="layers[{i}].mlp.gate_proj", up="layers[{i}].mlp.up_proj", down="layers[{i}].mlp.down_proj",
    final="norm", head="lm_head.w", prefix="model.",
)
NEOX = Naming(
    embed="embed_in", pos_embed=None, layer="layers[{i}]", ln_1="layers[{i}].input_layernorm",
    ln_2="layers[{i}].post_attention_layernorm", attn="layers[{i}].attention",
    qkv="layers[{i}].attention.query_key_value", qkv_per_head=True, q_proj="", k_proj="", v_proj="",
    o_proj="layers[{i}].attention.dense", mlp="layers[{i}].mlp", fc="layers[{i}].mlp.dense_h_to_4h", act="act",
    gate="", up="", down="layers[{i}].mlp.dense_4h_to_h", final="final_layer_norm", head="embed_out.w",
    prefix="gpt_neox.",
)
_TABLES = {"gpt2": GPT2, "llama": LLAMA, "mistral": LLAMA, "qwen2": LLAMA, "gemma": LLAMA, "gpt_neox": NEOX}


def naming(family: str) -> Naming:
    """The naming table of a family (Config.family)."""
    return _TABLES[family]
