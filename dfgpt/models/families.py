"""Hugging Face folders of the other families: Llama, Mistral, Qwen2, Gemma and GPT-NeoX (Pythia).

`config.json`'s `model_type` (or `architectures`) decides the family; the fields that shape the
network must be there (transformers writes them all), and a field transformers' own config class
leaves optional takes that class's default (`num_key_value_heads` = heads, `rope_theta` 10000,
Gemma's tied head), never GPT-2's. The weights are `model.safetensors` or shards listed by
`model.safetensors.index.json`, memory-mapped; float16 and bfloat16 are widened on read.

>>> cfg = config_from_family({"model_type": "qwen2", "hidden_size": 8, "num_hidden_layers": 1,
...     "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 16, "vocab_size": 5,
...     "max_position_embeddings": 32, "rms_norm_eps": 1e-6})
>>> cfg.family, cfg.kv_heads, cfg.qkv_bias, cfg.proj_bias, cfg.mlp_kind
('qwen2', 1, True, False, 'swiglu')
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..core.config import Config, ConfigError, MissingFieldError
from ..errors import CheckpointError, StateDictError, show
from .checkpoints import map_safetensors

__all__ = ["ARCHITECTURES", "FAMILY_TYPES", "config_from_family", "family_of", "read_family_weights"]

FAMILY_TYPES = ("llama", "mistral", "qwen2", "gemma", "gpt_neox")
ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2",
                 "GemmaForCausalLM": "gemma", "GPTNeoXForCausalLM": "gpt_neox"}
_EXAMPLE = {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9, "intermediate_size": 1536,
            "vocab_size": 49152, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "layer_norm_eps": 1e-5}
_STORED = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


def family_of(d: dict[str, Any], file: str = "config.json") -> str | None:
    """The family a Hugging Face config names (None: GPT-2, read elsewhere); an unknown one is refused by name."""
    mt = d.get("model_type")
    if mt == "gpt2":
        return None
    if mt in FAMILY_TYPES:
        return str(mt)
    archs = d.get("architectures")
    if mt is None and isinstance(archs, list):
        for a in archs:
            if a in ARCHITECTURES:
                return ARCHITECTURES[a]
        if "GPT2LMHeadModel" in archs:
            return None
    if mt is None and archs is None:
        return None  # a GPT-2 config without model_type (older transformers)
    raise CheckpointError(
        f"{file}: model_type {show(mt)} (architectures {show(archs)}) is not a family dfgpt reads; it reads "
        f"gpt2, {', '.join(FAMILY_TYPES)} (Mistral, SmolLM and TinyLlama are llama-shaped, Pythia is gpt_neox)."
    )


def _get(d: dict[str, Any], key: str, kind: type, file: str, default: Any = ...) -> Any:
    """d[key] as an int, float or bool; a missing key without a default is refused by name."""
    if key not in d or d[key] is None:
        if default is ...:
            raise MissingFieldError(
                f"{file} lacks {key!r}, which a {d.get('model_type', 'Hugging Face')} config has; a missing field "
                f"is never filled from another model's default. Add it with the value the weights were made "
                f"with (e.g. \"{key}\": {json.dumps(_EXAMPLE.get(key))}), or save the model again with "
                "transformers' save_pretrained.", (key,), file)
        return default
    v = d[key]
    ok = (isinstance(v, bool) if kind is bool else
          (isinstance(v, int) or (isinstance(v, float) and v.is_integer())) and not isinstance(v, bool)
          if kind is int else isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
    if not ok:
        what = "a whole number" if kind is int else "true or false" if kind is bool else "a number"
        raise CheckpointError(f"{file}: {key} must be {what}, got {show(v)}.")
    return kind(v)


def _rope(d: dict[str, Any], file: str, neox: bool) -> dict[str, Any]:
    """The rotary fields: transformers 5's `rope_parameters`, or older configs' rope_theta / rope_scaling."""
    params = d.get("rope_parameters") or d.get("rope_scaling") or {}
    if not isinstance(params, dict):
        raise CheckpointError(f"{file}: rope_parameters must be an object, got {show(params)}.")
    theta_key = "rotary_emb_base" if neox else "rope_theta"
    theta = params.get("rope_theta", d.get(theta_key, d.get("rope_theta", 10000.0)))
    kind = params.get("rope_type", params.get("type", "default"))
    out: dict[str, Any] = {"rope_theta": float(theta)}
    if kind not in ("default", "linear", "llama3"):
        raise CheckpointError(
            f"{file}: rope_type {show(kind)} is a rotary scaling dfgpt does not compute; it computes "
            "default, linear and llama3."
        )
    out["rope_type"] = kind
    if kind != "default":
        if "factor" not in params:
            raise MissingFieldError(f"{file}: rope {kind} scaling lacks 'factor'.", ("factor",), file)
        out["rope_factor"] = float(params["factor"])
    if kind == "llama3":
        for src, dst in (("low_freq_factor", "rope_low_freq"), ("high_freq_factor", "rope_high_freq")):
            if src not in params:
                raise MissingFieldError(f"{file}: rope llama3 scaling lacks {src!r}.", (src,), file)
            out[dst] = float(params[src])
        out["rope_context"] = int(params.get("original_max_position_embeddings") or d.get("max_position_embeddings")
                                  or 0)
    return out


def config_from_family(d: dict[str, Any], dtype: str = "float32", name: str = "", file: str = "config.json") -> Config:
    """A Config from a transformers config.json of Llama, Mistral, Qwen2, Gemma or GPT-NeoX."""
    family = family_of(d, file)
    if family is None:
        raise CheckpointError(f"{file} is a GPT-2 config; read it with dfgpt.models.hub.config_from_hf.")
    C = _get(d, "hidden_size", int, file)
    H = _get(d, "num_attention_heads", int, file)
    common = dict(
        n_layer=_get(d, "num_hidden_layers", int, file), n_head=H, n_embd=C,
        block_size=_get(d, "max_position_embeddings", int, file), vocab_size=_get(d, "vocab_size", int, file),
        n_inner=_get(d, "intermediate_size", int, file), layout="out_in", dtype=dtype, name=name, family=family,
        positions="rotary",
    )
    neox = family == "gpt_neox"
    rope = _rope(d, file, neox)
    if neox:
        pct = (d.get("rope_parameters") or {}).get("partial_rotary_factor", d.get("rotary_pct", 0.25))
        act = d.get("hidden_act", "gelu")
        if act not in ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
            raise CheckpointError(f"{file}: hidden_act {show(act)} is not one dfgpt computes for gpt_neox (gelu).")
        hs = C // H
        kw = dict(
            common, norm="layer", ln_eps=_get(d, "layer_norm_eps", float, file), n_kv_head=0, head_dim=0,
            rotary_dim=int(hs * float(pct)), mlp_kind="gelu", gelu="erf" if act == "gelu" else "tanh",
            parallel=_get(d, "use_parallel_residual", bool, file, True), bias=True,
            qkv_bias=_get(d, "attention_bias", bool, file, True), proj_bias=_get(d, "attention_bias", bool, file, True),
            mlp_bias=True, tied=_get(d, "tie_word_embeddings", bool, file, False), **rope,
        )
    else:
        gemma = family == "gemma"
        act = d.get("hidden_activation") or d.get("hidden_act", "gelu_pytorch_tanh" if gemma else "silu")
        if act == "silu":
            mlp_kind, gelu = "swiglu", "tanh"
        elif act in ("gelu_pytorch_tanh", "gelu_new", "gelu_fast", "gelu"):
            mlp_kind, gelu = "geglu", "erf" if act == "gelu" else "tanh"
        else:
            raise CheckpointError(f"{file}: hidden_act {show(act)} is not one dfgpt computes "
                                  "(silu, gelu_pytorch_tanh).")
        if family == "qwen2" and d.get("use_sliding_window"):
            raise CheckpointError(f"{file}: use_sliding_window=true (Qwen2's per-layer window) is not computed yet; "
                                  "dfgpt computes Qwen2 with full attention.")
        if gemma and d.get("use_bidirectional_attention"):
            raise CheckpointError(f"{file}: use_bidirectional_attention is not causal attention; dfgpt computes GPTs.")
        attn_bias = _get(d, "attention_bias", bool, file, False)
        mlp_bias = _get(d, "mlp_bias", bool, file, False)
        window = d.get("sliding_window") if family == "mistral" else None
        if family == "mistral" and "sliding_window" not in d:
            window = 4096  # MistralConfig's default
        hs = _get(d, "head_dim", int, file, C // H)
        kw = dict(
            common, norm="rms", norm_offset=1.0 if gemma else 0.0, ln_eps=_get(d, "rms_norm_eps", float, file),
            n_kv_head=_get(d, "num_key_value_heads", int, file, H), head_dim=hs, rotary_dim=0,
            mlp_kind=mlp_kind, gelu=gelu, parallel=False,
            bias=attn_bias or mlp_bias or family == "qwen2", qkv_bias=attn_bias or family == "qwen2",
            proj_bias=attn_bias, mlp_bias=mlp_bias, tied=_get(d, "tie_word_embeddings", bool, file, gemma),
            embed_scale=float(np.dtype(dtype).type(math.sqrt(C))) if gemma else 1.0,
            window=int(window or 0), **rope,
        )
    try:
        return Config(**kw)  # type: ignore[arg-type]
    except ConfigError as e:
        raise ConfigError(f"{file}: {e}") from None


def _stored(path: Path) -> set[str]:
    """The dtypes a safetensors file's header names (what the checkpoint stores)."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n)) if 2 <= n <= path.stat().st_size - 8 else {}
    except (OSError, ValueError):
        return set()
    return {_STORED.get(str(v.get("dtype")), str(v.get("dtype"))) for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict)}


def _read(path: Path) -> dict[str, np.ndarray]:
    try:
        return map_safetensors(path)
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise CheckpointError(
            f"cannot read {path}: {e}. The file may be truncated or not a safetensors file; download or save it again."
        ) from None


def read_family_weights(folder: Path) -> tuple[dict[str, np.ndarray], Path, str]:
    """(state dict by transformers' keys, the file or index read, the stored dtype) of a family's folder."""
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.exists():
        files = [single]
        state = _read(single)
        where = single
    elif index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError("weight_map is not an object")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"cannot read {index}: {e}; it should map each tensor to its shard file.") from None
        files = [folder / f for f in dict.fromkeys(str(v) for v in weight_map.values())]
        state = {}
        for f in files:
            if f.parent != folder or not f.exists():
                missing = [k for k, v in weight_map.items() if folder / str(v) == f][:3]
                raise CheckpointError(f"{index} lists shard {f.name} (holding {', '.join(missing)}), which is not in "
                                      f"{folder}; download every shard.")
            state.update(_read(f))
        lost = [k for k in weight_map if k not in state]
        if lost:
            raise StateDictError(f"{index} lists tensors its shards lack: {', '.join(lost[:8])}; the shards are "
                                 "not the ones the index was written with.")
        where = index
    else:
        raise CheckpointError(
            f"{folder} has a config.json but no weights: expected model.safetensors or model.safetensors.index.json "
            "with its shards (save with transformers' save_pretrained, which writes safetensors)."
        )
    stored = set().union(*(_stored(f) for f in files)) or {"float32"}
    return state, where, "/".join(sorted(stored))
