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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.config import Config
from ..core.graph import build
from ..errors import CheckpointError, StateDictError, TokenError
from .checkpoints import params_from_state_dict, read_model_dir, read_weights
from .tokenizer import CharTokenizer
from .weights import Weights

__all__ = ["BPETokenizer", "IdTokenizer", "config_from_hf", "load_path"]

_GELU = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh", "gelu": "erf"}


class IdTokenizer:
    """No tokenizer file: tokens are given as ids."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab: tuple[str, ...] = ()
        self.vocab_size = vocab_size

    def encode(self, text: str) -> list[int]:
        raise TokenError(
            "this checkpoint came without a tokenizer; give token ids (a list of ints), "
            "or put tokenizer.json (or vocab.json + merges.txt) beside the weights."
        )

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(str(int(i)) for i in ids)


class BPETokenizer:
    """A byte-level BPE tokenizer from tokenizer.json or vocab.json + merges.txt (the `tokenizers` library)."""

    def __init__(self, folder: Path) -> None:
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
        vocab = [""] * (max(table.values()) + 1)
        for text, i in table.items():
            vocab[i] = text
        self.vocab = tuple(vocab)

    @staticmethod
    def present(folder: Path) -> bool:
        return (folder / "tokenizer.json").exists() or (
            (folder / "vocab.json").exists() and (folder / "merges.txt").exists()
        )

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode([int(i) for i in ids]))


def config_from_hf(d: dict[str, Any], dtype: str = "float32", name: str = "") -> Config:
    """A Config from a Hugging Face GPT2Config dict (config.json)."""
    try:
        act = d.get("activation_function", "gelu_new")
        if act not in _GELU:
            raise CheckpointError(f"activation {act!r} is not supported; dfgpt has {sorted(_GELU)}.")
        return Config(
            n_layer=int(d["n_layer"]),
            n_head=int(d["n_head"]),
            n_embd=int(d["n_embd"]),
            block_size=int(d.get("n_positions", d.get("n_ctx", 1024))),
            vocab_size=int(d["vocab_size"]),
            n_inner=int(d.get("n_inner") or 0),
            tied=bool(d.get("tie_word_embeddings", True)),
            gelu=_GELU[act],  # type: ignore[arg-type]
            layout="in_out",
            ln_eps=float(d.get("layer_norm_epsilon", 1e-5)),
            dtype=dtype,  # type: ignore[arg-type]
            name=name,
        )
    except KeyError as e:
        raise CheckpointError(f"config.json lacks {e.args[0]!r}, which a GPT-2 config has.") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"config.json has a field of the wrong type: {e}.") from None


def _torch_load(path: Path) -> Any:
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{path} is a PyTorch pickle; reading it safely needs torch (torch.load with "
            "weights_only=True): pip install 'dfgpt[torch]'. dfgpt never unpickles any other way."
        ) from None
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise CheckpointError(
            f"cannot read {path} with torch.load(weights_only=True): {type(e).__name__}: {e}. "
            "It may be truncated, or hold objects other than tensors."
        ) from None


def _model(state: dict[str, Any], cfg: Config, file: Path, tokenizer: Any) -> Weights:
    graph = build(cfg)
    try:
        params = params_from_state_dict(state, graph)
    except StateDictError as e:
        raise StateDictError(f"{file}: {e}") from None
    tok = tokenizer or IdTokenizer(cfg.vocab_size)
    if getattr(tok, "vocab", ()) and len(tok.vocab) != cfg.vocab_size:
        vocab = tuple(tok.vocab) + tuple(f"<{i}>" for i in range(len(tok.vocab), cfg.vocab_size))
        tok.vocab = vocab[: cfg.vocab_size]
    return Weights(cfg, params, tok, graph)


def _hf_folder(folder: Path, d: dict[str, Any], dtype: str) -> Weights:
    cfg = config_from_hf(d, dtype, name=folder.name)
    tokenizer = BPETokenizer(folder) if BPETokenizer.present(folder) else None
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
    cfg = Config(
        n_layer=int(a["n_layer"]),
        n_head=int(a["n_head"]),
        n_embd=int(a["n_embd"]),
        block_size=int(a["block_size"]),
        vocab_size=int(a["vocab_size"]),
        bias=bool(a.get("bias", True)),
        tied=True,
        gelu="erf",  # nanoGPT's nn.GELU() is the exact, erf form
        dtype=dtype,  # type: ignore[arg-type]
        name=file.parent.name,
    )
    tokenizer = BPETokenizer(file.parent) if BPETokenizer.present(file.parent) else None
    return _model(ckpt["model"], cfg, file, tokenizer)


def load_path(path: str | Path, dtype: str | None = None) -> Weights:
    """A model from a checkpoint folder or file on local disk."""
    path = Path(path)
    dt = dtype or "float32"
    if path.is_dir():
        cfg_file = path / "config.json"
        if cfg_file.exists():
            d = _read_json(cfg_file)
            if "n_layer" in d and "block_size" in d:  # dfgpt's own folder
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
        cfg = Config.from_dict(d) if "block_size" in d else config_from_hf(d, dt, name=path.stem)
        if dtype:
            cfg = cfg.replace(dtype=dtype)
        tok = _char(cfg) if cfg.vocab else (BPETokenizer(path.parent) if BPETokenizer.present(path.parent) else None)
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
    if not isinstance(d, dict):
        raise CheckpointError(f"{file} holds a JSON {type(d).__name__}; a config is a JSON object of fields.")
    return d


def _char(cfg: Config) -> Any:
    return CharTokenizer(cfg.vocab)
