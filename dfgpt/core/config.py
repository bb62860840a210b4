"""The architecture of a GPT: a frozen dataclass with the switches real checkpoints differ in.

>>> from dfgpt import Config
>>> cfg = Config(n_layer=3, n_head=3, n_embd=48, block_size=11, vocab=("A", "B", "C"))
>>> cfg.head_size, cfg.n_inner, cfg.vocab_size
(16, 192, 3)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import DfgptError, show

__all__ = ["FAMILIES", "FAMILY_FIELDS", "FILE_FIELDS", "MAX_LAYERS", "Config", "ConfigError", "MissingFieldError",
           "physical_memory"]


MAX_LAYERS = 1024  # a graph node per tensor per layer: far past any real GPT, short of a hang


class ConfigError(DfgptError):
    """A configuration whose values contradict each other or their domain."""


class MissingFieldError(ConfigError):
    """A config file without a field its format requires: `fields` (the missing ones) and `file` say which."""

    def __init__(self, message: str, fields: tuple[str, ...], file: str) -> None:
        super().__init__(message)
        self.fields, self.file = fields, file


# What each field of a dfgpt config.json means: the message for a missing one says what to add.
FILE_FIELDS = {
    "n_layer": ("the number of transformer blocks", 12),
    "n_head": ("attention heads per block", 12),
    "n_embd": ("the width of the residual stream", 768),
    "block_size": ("the longest input, in tokens (the rows of wpe)", 1024),
    "vocab": ("the token texts, in id order ([] when a tokenizer or ids give the tokens)", ["A", "B", "C"]),
    "vocab_size": ("the number of tokens (the rows of wte)", 50257),
    "n_inner": ("the MLP's hidden width (4 × n_embd in GPT-2)", 3072),
    "layer_norm": ("whether the blocks have LayerNorms", True),
    "mlp": ("whether the blocks have MLPs", True),
    "bias": ("whether the linear layers and LayerNorms have biases", True),
    "tied": ("whether the unembedding is wte (no lm_head of its own)", False),
    "gelu": ("the GELU the MLP uses, \"tanh\" (GPT-2's) or \"erf\" (nanoGPT's nn.GELU)", "tanh"),
    "layout": ("how weights are stored, \"out_in\" (PyTorch Linear) or \"in_out\" (GPT-2 Conv1D)", "out_in"),
    "ln_eps": ("the LayerNorm epsilon", 1e-5),
    "dtype": ("the arithmetic, \"float64\" or \"float32\"", "float64"),
}
# What a config.json of another family than GPT-2 must name besides (a GPT-2 file, written before
# families existed, names none of them and means GPT-2's behaviour, each field's default).
FAMILY_FIELDS = {
    "family": ("the model family: \"gpt2\", \"llama\", \"mistral\", \"qwen2\", \"gemma\" or \"gpt_neox\"", "llama"),
    "norm": ("the norm, \"layer\" (LayerNorm) or \"rms\" (RMSNorm)", "rms"),
    "norm_offset": ("added to the norm's weight before it scales (1.0 in Gemma: x · (1 + w))", 0.0),
    "n_kv_head": ("key/value heads (grouped-query attention; n_head when every query head has its own)", 4),
    "head_dim": ("the width of one head (n_embd // n_head in most models)", 64),
    "positions": ("\"learned\" (a wpe table) or \"rotary\" (rotary embeddings of q and k)", "rotary"),
    "rope_theta": ("the rotary base wavelength", 10000.0),
    "rotary_dim": ("how many dims of each head rotate (head_dim unless partial: rotary_pct × head_dim)", 64),
    "rope_type": ("the rotary scaling, \"default\", \"linear\" or \"llama3\"", "default"),
    "rope_factor": ("the rotary scaling factor (1.0 for none)", 1.0),
    "rope_low_freq": ("llama3 scaling's low_freq_factor", 1.0),
    "rope_high_freq": ("llama3 scaling's high_freq_factor", 4.0),
    "rope_context": ("llama3 scaling's original_max_position_embeddings (0 for none)", 0),
    "mlp_kind": ("the MLP, \"gelu\" (GPT-2, NeoX), \"swiglu\" (silu(gate)·up) or \"geglu\" (gelu_tanh(gate)·up)",
                 "swiglu"),
    "parallel": ("whether attention and MLP both read the block's input (NeoX) instead of one after the other",
                 False),
    "qkv_bias": ("whether q, k and v have biases (with bias)", True),
    "proj_bias": ("whether the attention output projection has a bias (with bias)", True),
    "mlp_bias": ("whether the MLP's projections have biases (with bias)", True),
    "embed_scale": ("the factor the token embedding is multiplied by (Gemma: √n_embd in the checkpoint's dtype)",
                    1.0),
    "window": ("the sliding window of attention in tokens (Mistral; 0 for none)", 0),
}
FAMILIES = ("gpt2", "llama", "mistral", "qwen2", "gemma", "gpt_neox")


@dataclass(frozen=True)
class Config:
    """Shapes and switches of a nanoGPT-family model.

    `vocab` holds the token texts (a character vocabulary for the small models); a large
    BPE vocabulary may instead give only `vocab_size` and leave texts to a tokenizer.
    Weight `layout` is `"out_in"` (PyTorch Linear: nanoGPT, minGPT) or `"in_out"`
    (GPT-2 Conv1D, picoGPT); cell names index weights in the stored layout.
    """

    # GPT-2 small's sizes by default, like nanoGPT's GPTConfig; a vocabulary has no default.
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024
    vocab: tuple[str, ...] = ()
    vocab_size: int = 0
    n_inner: int = 0
    layer_norm: bool = True
    mlp: bool = True
    bias: bool = True
    tied: bool = False
    gelu: Literal["tanh", "erf"] = "tanh"
    layout: Literal["out_in", "in_out"] = "out_in"
    ln_eps: float = 1e-5
    dtype: Literal["float64", "float32"] = "float64"
    name: str = field(default="", compare=False)
    # The switches the other families differ in; each default is GPT-2's behaviour.
    family: str = "gpt2"
    norm: Literal["layer", "rms"] = "layer"
    norm_offset: float = 0.0
    n_kv_head: int = 0  # 0: n_head (every query head its own key and value)
    head_dim: int = 0  # 0: n_embd // n_head
    positions: Literal["learned", "rotary"] = "learned"
    rope_theta: float = 10000.0
    rotary_dim: int = 0  # 0: head_dim (every dimension rotates)
    rope_type: Literal["default", "linear", "llama3"] = "default"
    rope_factor: float = 1.0
    rope_low_freq: float = 1.0
    rope_high_freq: float = 4.0
    rope_context: int = 0
    mlp_kind: Literal["gelu", "swiglu", "geglu"] = "gelu"
    parallel: bool = False
    qkv_bias: bool = True
    proj_bias: bool = True
    mlp_bias: bool = True
    embed_scale: float = 1.0
    window: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.vocab, (list, tuple)):
            raise ConfigError(
                f"vocab must be a sequence of token texts, got {show(self.vocab)} ({type(self.vocab).__name__})."
            )
        vocab = tuple(self.vocab)
        object.__setattr__(self, "vocab", vocab)
        if vocab and self.vocab_size and self.vocab_size != len(vocab):
            raise ConfigError(
                f"vocab has {len(vocab)} tokens but vocab_size is {show(self.vocab_size)}; "
                "give one of them, or make them agree."
            )
        if vocab and not self.vocab_size:
            object.__setattr__(self, "vocab_size", len(vocab))
        for key in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "n_inner"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if key in ("n_inner", "vocab_size") else 1):
                raise ConfigError(f"{key} must be a positive integer, got {show(v)} ({type(v).__name__}).")
        if not self.n_inner:
            object.__setattr__(self, "n_inner", 4 * self.n_embd)
        if self.vocab_size < 1:
            raise ConfigError("vocab_size must be a positive integer, got 0; give vocab (token texts) or vocab_size.")
        for key in ("layer_norm", "mlp", "bias", "tied"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"{key} must be true or false, got {show(getattr(self, key))}.")
        if not isinstance(self.name, str):
            raise ConfigError(f"name must be text, got {show(self.name)}.")
        if not all(isinstance(t, str) for t in vocab):
            bad = next(t for t in vocab if not isinstance(t, str))
            raise ConfigError(f"vocab holds token texts (strings), got {show(bad)} ({type(bad).__name__}).")
        if isinstance(self.ln_eps, bool) or not isinstance(self.ln_eps, (int, float)) or not 0 < self.ln_eps < 1e300:
            raise ConfigError(f"ln_eps must be a finite positive number (1e-5 in GPT-2), got {show(self.ln_eps)}.")
        self._check_family()
        if not self.head_dim and self.n_embd % self.n_head:
            raise ConfigError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                "each head needs n_embd // n_head dimensions."
            )
        if len(set(vocab)) != len(vocab):
            raise ConfigError("vocab has repeated tokens; each token text must be unique.")
        checks: dict[str, tuple[Any, ...]] = {
            "gelu": ("tanh", "erf"),
            "layout": ("out_in", "in_out"),
            "dtype": ("float64", "float32"),
            "family": FAMILIES,
            "norm": ("layer", "rms"),
            "positions": ("learned", "rotary"),
            "rope_type": ("default", "linear", "llama3"),
            "mlp_kind": ("gelu", "swiglu", "geglu"),
        }
        for key, allowed in checks.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key} must be one of {allowed}, got {getattr(self, key)!r}.")
        _check_memory(self)
        if self.n_layer > MAX_LAYERS:
            raise ConfigError(
                f"n_layer={show(self.n_layer)} is more layers than dfgpt builds (at most {MAX_LAYERS}; "
                "the largest GPTs have about 100); check config.json."
            )

    def _check_family(self) -> None:
        """The families' switches: whole numbers, numbers and booleans in their domains, and agreeing."""
        for key in ("n_kv_head", "head_dim", "rotary_dim", "rope_context", "window"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"{key} must be a whole number ≥ 0 (0: the default), got {show(v)}.")
        for key in ("norm_offset", "rope_theta", "rope_factor", "rope_low_freq", "rope_high_freq", "embed_scale"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"{key} must be a finite number, got {show(v)}.")
        for key in ("rope_theta", "rope_factor", "embed_scale"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be positive, got {show(getattr(self, key))}.")
        for key in ("parallel", "qkv_bias", "proj_bias", "mlp_bias"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"{key} must be true or false, got {show(getattr(self, key))}.")
        if self.n_head % self.kv_heads:
            raise ConfigError(
                f"n_head={self.n_head} is not a multiple of n_kv_head={self.n_kv_head} (num_key_value_heads): "
                "each key/value head serves the same number of query heads."
            )
        if self.positions == "rotary" and (self.rotary % 2 or self.rotary > self.head_size):
            raise ConfigError(
                f"rotary_dim={self.rotary_dim} must be even and at most head_dim={self.head_size}: "
                "rotary embeddings turn pairs of dimensions of each head."
            )
        if self.rope_type == "llama3" and not (self.rope_context and self.rope_high_freq != self.rope_low_freq):
            raise ConfigError(
                "llama3 rope scaling needs rope_context (original_max_position_embeddings) > 0 and "
                f"rope_high_freq ≠ rope_low_freq, got {self.rope_context}, {self.rope_high_freq}, {self.rope_low_freq}."
            )

    @property
    def n_params(self) -> int:
        """How many parameters a model of this config holds (what its weights allocate, the rotary
        tables included)."""
        C, n, V, B = self.n_embd, self.n_inner, self.vocab_size, self.block_size
        H, KV, hs = self.n_head, self.kv_heads, self.head_size
        if not self.layer_norm:
            ln = 0
        elif self.norm == "rms":
            ln = C
        else:
            ln = 2 * C if self.bias else C
        b = 1 if self.bias else 0
        qkv_b = b if self.qkv_bias else 0
        layer = ln + C * (H + 2 * KV) * hs + (H + 2 * KV) * hs * qkv_b + H * hs * C + C * b * self.proj_bias
        if self.mlp:
            mb = b * self.mlp_bias
            up = 2 if self.mlp_kind != "gelu" else 1
            layer += ln + up * (C * n + n * mb) + n * C + C * mb
        pos = B * C if self.positions == "learned" else B * self.rotary
        return V * C + pos + self.n_layer * layer + ln + (0 if self.tied else V * C)

    @property
    def head_size(self) -> int:
        """The width of one head: head_dim, or n_embd // n_head when that is 0."""
        return self.head_dim or self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        """Key/value heads: n_kv_head, or n_head when that is 0."""
        return self.n_kv_head or self.n_head

    @property
    def rotary(self) -> int:
        """How many dimensions of each head rotate (0 with learned positions)."""
        if self.positions != "rotary":
            return 0
        return self.rotary_dim or self.head_size

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["vocab"] = list(self.vocab)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        if not isinstance(d, dict):
            raise ConfigError(f"a config is a dict (JSON object) of fields, got {type(d).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(
                f"unknown config keys {unknown}; expected some of {sorted(known)}."
            )
        d = dict(d)
        if "vocab" in d:
            if not isinstance(d["vocab"], (list, tuple)):
                raise ConfigError(
                    f"vocab must be a list of token texts, got {show(d['vocab'])} ({type(d['vocab']).__name__})."
                )
            d["vocab"] = tuple(d["vocab"])
        try:
            return cls(**d)
        except TypeError as e:
            raise ConfigError(f"incomplete config: {e}") from None

    @classmethod
    def from_file(cls, d: Any, file: str | os.PathLike[str]) -> Config:
        """A config as a dfgpt config.json holds it: every field but `name` present, none filled from a default.

        `Config(...)` fills what is not given from GPT-2 small (as nanoGPT's GPTConfig does),
        which suits Python; a file missing `n_head` would then load a 12-head model that reads
        its weights as another network, so a file must name every field.

        >>> try:
        ...     Config.from_file({"n_layer": 3, "n_embd": 48}, "m/config.json")
        ... except MissingFieldError as e:
        ...     print(e.file, e.fields[:3])
        m/config.json ('n_head', 'block_size', 'vocab')
        """
        if isinstance(d, dict):
            need = dict(FILE_FIELDS, **FAMILY_FIELDS) if d.get("family", "gpt2") != "gpt2" else FILE_FIELDS
            missing = tuple(k for k in need if k not in d)
            if missing:
                raise MissingFieldError(_missing(missing, str(file)), missing, str(file))
        return cls.from_dict(d)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def _missing(fields: tuple[str, ...], file: str) -> str:
    known = dict(FILE_FIELDS, **FAMILY_FIELDS)
    names = ", ".join(f'"{k}" ({known[k][0]})' for k in fields)
    first = fields[0]
    return (f"{file} has no {names}: a dfgpt config.json names every field of the architecture, and a missing "
            "one is never filled from a default (GPT-2 small's would read the weights as another model). Add "
            f"the value the weights were made with, e.g. \"{first}\": {json.dumps(known[first][1])}, or save "
            "the model again with model.save(folder), which writes every field.")


def physical_memory() -> int | None:
    """Bytes of physical memory on this machine, or None where the OS does not say."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def _sci(n: int | float) -> str:
    """A possibly astronomically large count, in 3 digits (a float cannot hold 10**400)."""
    return f"{n:.3g}" if n < 1e300 else f"about 10^{int(math.log10(n))}"


def _gb(n: int | float) -> str:
    return f"{_sci(n // 10**9 if isinstance(n, int) and n > 10**300 else n / 1e9)} GB"


def _check_memory(cfg: Config) -> None:
    """Refuse a config whose parameters alone cannot fit in this machine's memory, before allocating."""
    total = physical_memory()
    n = cfg.n_params
    need = n * (8 if cfg.dtype == "float64" else 4)
    if total is not None and need > total:
        raise ConfigError(
            f"this config needs {_sci(n)} parameters, {_gb(need)} as {cfg.dtype}, but this machine has "
            f"{_gb(total)} of memory (n_layer={show(cfg.n_layer)}, n_embd={show(cfg.n_embd)}, "
            f"n_inner={show(cfg.n_inner)}, vocab_size={show(cfg.vocab_size)}, "
            f"block_size={show(cfg.block_size)}); check the sizes in the config."
        )
