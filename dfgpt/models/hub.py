"""Checkpoints on local disk: Hugging Face GPT-2 folders, nanoGPT's ckpt.pt, state-dict files.

Nothing is downloaded and nothing is unpickled: safetensors and npz are read as arrays,
and a torch checkpoint only with `torch.load(weights_only=True)`.

>>> import dfgpt, tempfile
>>> folder = tempfile.mkdtemp()
>>> dfgpt.load("sort-random").save(folder)
>>> dfgpt.load(folder).n_params
85728
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.builder import build
from ..core.config import Config, ConfigError, MissingFieldError
from ..errors import CheckpointError, StateDictError, show
from .checkpoints import params_from_state_dict, read_model_dir, read_weights
from .families import config_from_family, family_of, read_family_weights
from .tokenizer import CharTokenizer, IdTokenizer
from .weights import Weights

__all__ = ["BPETokenizer", "IdTokenizer", "config_from_hf", "is_dfgpt_config", "load_path", "model_name"]

_GELU = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh", "gelu": "erf"}
_HF_EXAMPLE = {"n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024, "vocab_size": 50257,
               "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5}
# Fields only dfgpt's own config.json has (Hugging Face GPT-2 says n_positions, activation_function, ...).
_DFGPT_ONLY = ("block_size", "vocab", "layer_norm", "mlp", "bias", "tied", "gelu", "layout", "ln_eps", "dtype")


class BPETokenizer:
    """A byte-level BPE tokenizer from tokenizer.json or vocab.json + merges.txt (the `tokenizers` library)."""

    def __init__(self, folder: Path, vocab_size: int) -> None:
        try:
            from tokenizers import Tokenizer
            from tokenizers.implementations import ByteLevelBPETokenizer
        except ImportError:
            raise CheckpointError(
                f"{folder} has a BPE tokenizer but the `tokenizers` package is missing: "
                "pip install 'dfgpt[gpt2]'."
            ) from None
        try:
            if (folder / "tokenizer.json").exists():
                self._tok: Any = Tokenizer.from_file(str(folder / "tokenizer.json"))
            else:
                self._tok = ByteLevelBPETokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
        except Exception as e:  # the tokenizers library raises plain Exceptions on bad files
            raise CheckpointError(f"cannot read the tokenizer in {folder}: {e}.") from None
        table = self._tok.get_vocab(with_added_tokens=True)
        # Texts only for ids the model has: the work is bounded by the model's vocabulary, not by
        # the largest id the file names (one id of 2**31 would otherwise cost tens of GB here).
        # An id at or past vocab_size is one the model cannot read; encoding to it is refused later.
        vocab = [""] * min(vocab_size, max(table.values(), default=-1) + 1)
        for text, i in table.items():
            if 0 <= i < len(vocab):
                vocab[i] = text
        self.vocab = tuple(vocab)
        # How a token spells its leading space: SentencePiece's "▁" (Llama, Gemma) or byte-level BPE's "Ġ".
        self.space = "▁" if sum(t.startswith("▁") for t in vocab) > sum(t.startswith("Ġ") for t in vocab) else "Ġ"

    def piece(self, i: int) -> str:
        """One token's own text, its leading space kept (decoding one SentencePiece token alone drops it):
        "▁the" and "Ġthe" are both " the"; a byte-fallback token "<0x0A>" is its byte."""
        if self.space == "Ġ":
            return self.decode([i])
        t = self.vocab[i]
        if len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
            return chr(int(t[3:5], 16)) if int(t[3:5], 16) < 0x80 else t
        return t.replace("▁", " ")

    @staticmethod
    def present(folder: Path) -> bool:
        return (folder / "tokenizer.json").exists() or (
            (folder / "vocab.json").exists() and (folder / "merges.txt").exists()
        )

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode([int(i) for i in ids]))


def _field(d: dict[str, Any], key: str, kind: str, default: Any = None, where: str = "config.json") -> Any:
    """d[key] checked as a whole number ("int"), a number ("float") or true/false ("bool")."""
    v = d[key] if default is None else d.get(key, default)
    if v is None and default is not None:
        v = default
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:  # a numpy or torch scalar from a ckpt
        v = v.item()
    ok = {
        "int": (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
        "float": isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e300 and math.isfinite(v),
        "bool": isinstance(v, bool),
    }[kind]
    if not ok:
        expected = {"int": "a whole number", "float": "a finite number", "bool": "true or false"}[kind]
        raise CheckpointError(f"{where}: {key} must be {expected}, got {show(v)} ({type(v).__name__}).")
    return int(v) if kind == "int" else float(v) if kind == "float" else v


def is_dfgpt_config(d: dict[str, Any]) -> bool:
    """Whether a config.json is dfgpt's own (read by Config.from_file), not a Hugging Face one (by its model_type)."""
    return "model_type" not in d and any(k in d for k in _DFGPT_ONLY)


def config_from_hf(d: dict[str, Any], dtype: str = "float32", name: str = "", file: str = "config.json") -> Config:
    """A Config from a Hugging Face GPT2Config dict (config.json); every field checked before use.

    The fields that shape the network must be there (transformers writes them all); only
    `n_inner` (absent or null: 4 × n_embd) and `tie_word_embeddings` (absent: tied), which
    transformers itself leaves out, may be absent. Attention variants dfgpt does not compute
    are refused rather than read as plain GPT-2.
    """
    try:
        if d.get("model_type", "gpt2") != "gpt2":
            raise CheckpointError(f"{file}: model_type {show(d['model_type'])} is not one dfgpt reads; "
                                  "it reads Hugging Face GPT-2 folders (model_type \"gpt2\") and its own.")
        act = d["activation_function"]
        if not isinstance(act, str) or act not in _GELU:
            raise CheckpointError(f"activation {act!r} is not supported; dfgpt has {sorted(_GELU)}.")
        for key, plain in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False)):
            if d.get(key, plain) is not plain:
                raise CheckpointError(f"{file}: {key}={show(d[key])} is an attention dfgpt does not compute "
                                      f"(it computes GPT-2's, {key}={str(plain).lower()}).")
        block = "n_positions" if "n_positions" in d else "n_ctx"
        return Config(
            n_layer=_field(d, "n_layer", "int"),
            n_head=_field(d, "n_head", "int"),
            n_embd=_field(d, "n_embd", "int"),
            block_size=_field(d, block, "int"),
            vocab_size=_field(d, "vocab_size", "int"),
            n_inner=_field(d, "n_inner", "int", 0),
            tied=_field(d, "tie_word_embeddings", "bool", True),
            gelu=_GELU[act],  # type: ignore[arg-type]
            layout="in_out",
            ln_eps=_field(d, "layer_norm_epsilon", "float"),
            dtype=dtype,  # type: ignore[arg-type]
            name=name,
        )
    except KeyError as e:
        key = "n_positions" if e.args[0] == "n_ctx" else e.args[0]
        raise MissingFieldError(
            f"{file} lacks {key!r}, which a Hugging Face GPT-2 config has; a missing field is never filled "
            f"from GPT-2 small's default. Add it with the value the weights were made with (e.g. \"{key}\": "
            f"{json.dumps(_HF_EXAMPLE.get(key))}), or save the model again with transformers' save_pretrained.",
            (key,), file) from None
    except ConfigError as e:
        raise ConfigError(f"config.json: {e}") from None


def _torch_load(path: Path) -> Any:
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{path} is a PyTorch pickle; reading it safely needs torch (torch.load with "
            "weights_only=True): pip install 'dfgpt[torch]'. dfgpt never unpickles any other way."
        ) from None
    try:
        try:  # memory-mapped: the tensors stay pages of the file until an edit copies one
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            return torch.load(str(path), map_location="cpu", weights_only=True)  # the legacy format
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise CheckpointError(
            f"cannot read {path} with torch.load(weights_only=True): {type(e).__name__}: {e}. "
            "It may be truncated, or hold objects other than tensors."
        ) from None


def _model(state: dict[str, Any], cfg: Config, file: Path, tokenizer: Any) -> Weights:
    graph = build(cfg)
    try:
        params = params_from_state_dict(state, graph, copy=False)  # read fresh from the file
    except StateDictError as e:
        raise StateDictError(f"{file}: {e}") from None
    tok = tokenizer or IdTokenizer(cfg.vocab_size)
    if getattr(tok, "vocab", ()) and len(tok.vocab) != cfg.vocab_size:
        vocab = tuple(tok.vocab) + tuple(f"<{i}>" for i in range(len(tok.vocab), cfg.vocab_size))
        tok.vocab = vocab[: cfg.vocab_size]
    return Weights(cfg, params, tok, graph)


def model_name(d: dict[str, Any], fallback: str) -> str:
    """A loaded model's name from its config: `name`, else `_name_or_path` unless it is a file path,
    else `fallback` (the folder's or file's own name).

    `_name_or_path` is where transformers says the weights came from: a Hub id such as
    "openai-community/gpt2" stays meaningful wherever the folder is copied to, while a path is
    where it was saved from (often a temporary folder itself), as is the folder's own name.

    >>> model_name({"_name_or_path": "openai-community/gpt2"}, "tmpx1y2"), model_name({}, "my-gpt")
    ('openai-community/gpt2', 'my-gpt')
    """
    for key in ("name", "_name_or_path"):
        v = d.get(key)
        if isinstance(v, str) and v.strip() and len(v) <= 200 and not (
                key == "_name_or_path" and (v.startswith(("/", ".", "~")) or "\\" in v or ":" in v)):
            return v.strip()
    return fallback


def _family_folder(folder: Path, d: dict[str, Any], dtype: str) -> Weights:
    """A Llama, Mistral, Qwen2, Gemma or GPT-NeoX folder (see dfgpt.models.families)."""
    cfg = config_from_family(d, dtype, name=model_name(d, folder.name), file=str(folder / "config.json"))
    state, file, stored = read_family_weights(folder)
    tokenizer = BPETokenizer(folder, cfg.vocab_size) if BPETokenizer.present(folder) else None
    w = _model(state, cfg, file, tokenizer)
    w.source_dtype = stored
    return w


def _hf_folder(folder: Path, d: dict[str, Any], dtype: str) -> Weights:
    if family_of(d, str(folder / "config.json")) is not None:
        return _family_folder(folder, d, dtype)
    cfg = config_from_hf(d, dtype, name=model_name(d, folder.name), file=str(folder / "config.json"))
    tokenizer = BPETokenizer(folder, cfg.vocab_size) if BPETokenizer.present(folder) else None
    if (folder / "model.safetensors").exists():
        file = folder / "model.safetensors"
        state: dict[str, Any] = read_weights(file)
    elif (folder / "pytorch_model.bin").exists():
        file = folder / "pytorch_model.bin"
        state = _torch_load(file)
    else:
        raise CheckpointError(
            f"{folder} has a config.json but no weights: expected model.safetensors (or pytorch_model.bin)."
        )
    return _model(state, cfg, file, tokenizer)


def _nanogpt_ckpt(file: Path, dtype: str) -> Weights:
    ckpt = _torch_load(file)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        raise CheckpointError(f"{file} is not a nanoGPT checkpoint: expected keys 'model' and 'model_args'.")
    a = ckpt["model_args"]
    if not isinstance(a, dict):
        raise CheckpointError(f"{file}: model_args must be a dict of sizes, got {type(a).__name__}.")
    where = f"{file} model_args"
    state = ckpt["model"]
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{file}: 'model' must be a state dict (tensor name -> tensor), got {type(state).__name__}."
        )
    try:
        cfg = Config(
            n_layer=_field(a, "n_layer", "int", where=where),
            n_head=_field(a, "n_head", "int", where=where),
            n_embd=_field(a, "n_embd", "int", where=where),
            block_size=_field(a, "block_size", "int", where=where),
            vocab_size=_field(a, "vocab_size", "int", where=where),
            bias=_field(a, "bias", "bool", True, where=where),
            tied=_tied(state),
            gelu=_gelu(a, where),  # type: ignore[arg-type]
            dtype=dtype,  # type: ignore[arg-type]
            name=file.parent.name,
        )
    except KeyError as e:
        raise CheckpointError(f"{where} lacks {e.args[0]!r}, which nanoGPT's model_args has.") from None
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    tokenizer = BPETokenizer(file.parent, cfg.vocab_size) if BPETokenizer.present(file.parent) else None
    return _model(state, cfg, file, tokenizer)


def _tied(state: dict[str, Any]) -> bool:
    """nanoGPT ties lm_head to wte and saves both keys, equal; a head that differs is its own weight."""
    head, wte = state.get("lm_head.weight"), state.get("transformer.wte.weight")
    if head is None or wte is None:
        return True
    a, b = (np.asarray(x.detach().cpu().float().numpy() if hasattr(x, "detach") else x) for x in (head, wte))
    return a.shape == b.shape and bool(np.array_equal(a, b))


def _gelu(args: dict[str, Any], where: str) -> str:
    """nanoGPT's nn.GELU() is the exact erf form; a checkpoint may name another ('tanh', as the sort model)."""
    g = args.get("gelu", "erf")
    if g not in ("erf", "tanh"):
        raise CheckpointError(f"{where}: gelu must be 'erf' (nanoGPT's nn.GELU) or 'tanh', got {show(g)}.")
    return str(g)


def load_path(path: str | Path, dtype: str | None = None) -> Weights:
    """A model from a checkpoint folder or file on local disk."""
    path = Path(path)
    dt = dtype or "float32"
    if path.is_dir():
        cfg_file = path / "config.json"
        if cfg_file.exists():
            d = _read_json(cfg_file)
            if is_dfgpt_config(d):
                cfg, state = read_model_dir(path)
                if dtype:
                    cfg = cfg.replace(dtype=dtype)
                return _model(state, cfg, path, None if not cfg.vocab else _char(cfg))
            return _hf_folder(path, d, dt)
        if (path / "ckpt.pt").exists():
            return _nanogpt_ckpt(path / "ckpt.pt", dt)
        raise CheckpointError(
            f"{path} holds no model: expected config.json with model.safetensors (Hugging Face "
            "GPT-2 or dfgpt), or nanoGPT's ckpt.pt."
        )
    if path.suffix == ".pt":
        return _nanogpt_ckpt(path, dt)
    if path.suffix in (".safetensors", ".npz"):
        cfg_file = path.with_suffix(".json") if path.with_suffix(".json").exists() else path.parent / "config.json"
        if not cfg_file.exists():
            raise CheckpointError(
                f"{path} is a state dict without a config: put its config beside it as "
                f"{path.with_suffix('.json').name} or config.json (dfgpt or Hugging Face GPT-2 keys)."
            )
        d = _read_json(cfg_file)
        if is_dfgpt_config(d):
            cfg = Config.from_file(d, cfg_file)
        elif family_of(d, str(cfg_file)) is not None:  # a Llama, Qwen2, ... state dict beside its config.json
            cfg = config_from_family(d, dt, model_name(d, path.stem), str(cfg_file))
        else:
            cfg = config_from_hf(d, dt, model_name(d, path.stem), str(cfg_file))
        if dtype:
            cfg = cfg.replace(dtype=dtype)
        bpe = BPETokenizer.present(path.parent)
        tok = _char(cfg) if cfg.vocab else (BPETokenizer(path.parent, cfg.vocab_size) if bpe else None)
        return _model(read_weights(path), cfg, path, tok)
    raise CheckpointError(
        f"cannot load {path}: expected a folder, a .safetensors or .npz state dict, or a nanoGPT .pt file."
    )


def _read_json(file: Path) -> dict[str, Any]:
    """A config file's fields, or a CheckpointError naming the file."""
    try:
        d = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {file}: {e}.") from None
    except RecursionError:
        raise CheckpointError(f"cannot read {file}: its JSON is nested too deeply; a config is a flat object "
                              "of fields such as {\"n_layer\": 12}.") from None
    if not isinstance(d, dict):
        raise CheckpointError(f"{file} holds a JSON {type(d).__name__}; a config is a JSON object of fields.")
    return d


def _char(cfg: Config) -> Any:
    return CharTokenizer(cfg.vocab)
