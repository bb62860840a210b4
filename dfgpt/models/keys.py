"""The families' checkpoint keys: a dfgpt parameter name and the key transformers saves it under.

`layers[0].self_attn.q_proj.w` is `model.layers.0.self_attn.q_proj.weight` in a Llama folder,
`layers[0].attention.query_key_value.w` is `gpt_neox.layers.0.attention.query_key_value.weight`
in a GPT-NeoX one; the rotary tables are constants of the config and no checkpoint holds them.

>>> from dfgpt import Config
>>> cfg = Config(n_layer=1, n_head=2, n_embd=8, block_size=4, vocab_size=5, family="gpt_neox")
>>> hf_key("layers[0].input_layernorm.g", cfg), hf_key("embed_in", cfg), hf_key("embed_out.w", cfg)
('gpt_neox.layers.0.input_layernorm.weight', 'gpt_neox.embed_in.weight', 'embed_out.weight')
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..core.blocks import ROPE
from ..core.config import Config
from ..core.graph import Graph
from ..core.naming import naming
from ..errors import StateDictError

__all__ = ["IGNORED_HF", "family_params", "hf_key"]

# Buffers older transformers saved beside the weights: recomputed, never read.
IGNORED_HF = re.compile(r".*(rotary_emb\.inv_freq|attention\.bias|attention\.masked_bias)$")


def hf_key(name: str, cfg: Config) -> str | None:
    """The checkpoint key of a dfgpt parameter of a family other than GPT-2; None for a constant (rope.cos)."""
    if name in ROPE:
        return None
    names = naming(cfg.family)
    if name == names.head:
        return name.removesuffix(".w") + ".weight"
    if name == names.embed:
        return f"{names.prefix}{name}.weight"
    stem, _, leaf = name.rpartition(".")
    stem = re.sub(r"\[(\d+)\]", r".\1", stem)
    return f"{names.prefix}{stem}.{'bias' if leaf == 'b' else 'weight'}"


def _plain(value: Any) -> np.ndarray:
    """A numpy array of a tensor: torch's bfloat16 (no numpy form) widened to float32, which holds it exactly."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        value = value.float() if str(value.dtype) == "torch.bfloat16" else value
        value = value.numpy()
    return np.asarray(value)


def family_params(state: dict[str, Any], graph: Graph, copy: bool = True) -> dict[str, np.ndarray]:
    """A transformers state dict (its own keys) onto a family's graph, every key and shape checked.

    Raises StateDictError naming each missing, unexpected and wrong-shaped tensor by its key (a k_proj
    of the wrong height names num_key_value_heads); returns arrays in the config's dtype, the rotary
    tables left out (Weights adds them).
    """
    cfg = graph.config
    dtype = np.dtype(cfg.dtype)
    keys = {hf_key(n, cfg): n for n in graph.parameters}
    keys.pop(None, None)
    got: dict[str, np.ndarray] = {}
    extra = []
    for key, value in state.items():
        if not isinstance(key, str):
            raise StateDictError(f"state dict keys are tensor names such as 'model.embed_tokens.weight', got {key!r}.")
        name = keys.get(key)
        if name is None:
            if not (IGNORED_HF.match(key) or (cfg.tied and key == "lm_head.weight")):
                extra.append(key)
            continue
        got[name] = _plain(value)
    want = {n: graph.specs[n].dims for n in keys.values()}
    problems = []
    key_of = {n: k for k, n in keys.items() if k is not None}
    odd = [f"{key_of[n]} holds {a.dtype}" for n, a in got.items() if a.dtype.kind not in "fiu"]
    if odd:
        problems.append(f"tensors that are not real numbers: {'; '.join(odd)}")
    missing = [str(k) for k, n in keys.items() if n not in got]
    if missing:
        problems.append(f"missing tensors: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if extra:
        problems.append(f"unexpected tensors: {', '.join(sorted(extra)[:8])}{' ...' if len(extra) > 8 else ''}")
    shapes = [f"{key_of[n]}: got {tuple(a.shape)}, expected {want[n]}" for n, a in got.items()
              if tuple(a.shape) != want[n]]
    if shapes:
        problems.append(f"wrong shapes: {'; '.join(shapes[:6])}")
    if not problems:
        bad = [key_of[n] for n, a in got.items() if a.dtype.kind == "f" and not np.isfinite(a).all()]
        if bad:
            problems.append(f"non-finite values in: {', '.join(bad[:8])}")
    if problems:
        kv = any(re.search(r"\.(k_proj|v_proj|query_key_value)\.", s) for s in shapes)
        hint = (f" k_proj and v_proj have num_key_value_heads × head_dim rows: check num_key_value_heads "
                f"({cfg.kv_heads}) and head_dim ({cfg.head_size}) in config.json." if kv else "")
        raise StateDictError(
            f"the {cfg.family} checkpoint does not fit its config.json: " + "; ".join(problems) + "." + hint
            + " Check config.json against the weights (num_hidden_layers, hidden_size, num_attention_heads, "
            "num_key_value_heads, intermediate_size, vocab_size, tie_word_embeddings)."
        )
    if not copy:
        return {n: np.ascontiguousarray(a, dtype=dtype) for n, a in got.items()}
    return {n: np.array(a, dtype=dtype, order="C", copy=True) for n, a in got.items()}
