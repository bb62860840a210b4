"""Tiny random checkpoints of every family, made with transformers on the spot (never downloaded).

`make(family, folder, **changes)` saves a `*ForCausalLM` with small sizes and `attn_implementation="eager"`
(so attention probabilities come out) by `save_pretrained`, and returns the torch model in float32.
Weights are drawn larger than transformers' init (std 0.02 makes every logit ~0 and every attention
uniform, which would pass a wrong rotary or mask): norms' weights and biases random too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import transformers

VOCAB = 48

BASE: dict[str, dict[str, Any]] = {
    "llama": dict(hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, vocab_size=VOCAB, rms_norm_eps=1e-5,
                  tie_word_embeddings=False),
    "mistral": dict(hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=1, max_position_embeddings=64, vocab_size=VOCAB, sliding_window=5,
                    tie_word_embeddings=False),
    "qwen2": dict(hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, vocab_size=VOCAB, tie_word_embeddings=True),
    "gemma": dict(hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, head_dim=24, max_position_embeddings=64, vocab_size=VOCAB),
    "gpt_neox": dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                     max_position_embeddings=64, vocab_size=VOCAB, rotary_pct=0.5, tie_word_embeddings=False),
}
CLASSES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"), "mistral": ("MistralConfig", "MistralForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"), "gemma": ("GemmaConfig", "GemmaForCausalLM"),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM"),
}


def model(family: str, seed: int = 0, **changes: Any) -> Any:
    """A torch model of the family with random, non-trivial weights (float32, eval mode)."""
    conf_cls, model_cls = (getattr(transformers, n) for n in CLASSES[family])
    cfg = conf_cls(**{**BASE[family], **changes}, attn_implementation="eager")
    torch.manual_seed(seed)
    m = model_cls(cfg).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_((0.1 if family == "gemma" else 1.0) + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    return m


def make(family: str, folder: Path, seed: int = 0, dtype: str | None = None, shard: str | None = None,
         **changes: Any) -> Any:
    """Save a tiny model of the family into folder (bf16/fp16 with dtype, sharded with shard="2KB")."""
    m = model(family, seed, **changes)
    saved = m.to(getattr(torch, dtype)) if dtype else m
    kw = {"max_shard_size": shard} if shard else {}
    saved.save_pretrained(str(folder), **kw)
    if not dtype:
        return m
    # as a reader of the bf16 file runs it in float32 (the rotary frequencies made again in float32)
    cls = getattr(transformers, CLASSES[family][1])
    return cls.from_pretrained(str(folder), dtype=torch.float32, attn_implementation="eager").eval()


def logits(m: Any, ids: list[int], **kw: Any) -> Any:
    """transformers' outputs for one sequence, no gradient."""
    with torch.no_grad():
        return m(torch.tensor([ids]), **kw)


def docs_llama(folder: Path) -> Any:
    """The small Llama docs/families.md makes (the same seed, sizes and initialisation), saved into folder."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, vocab_size=64, max_position_embeddings=32,
                                      initializer_range=0.3, attn_implementation="eager")
    hf = transformers.LlamaForCausalLM(config).eval()
    hf.save_pretrained(str(folder))
    return hf
