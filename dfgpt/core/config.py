"""The architecture of a GPT: a frozen dataclass with the switches real checkpoints differ in.

>>> from dfgpt import Config
>>> cfg = Config(n_layer=3, n_head=3, n_embd=48, block_size=11, vocab=("A", "B", "C"))
>>> cfg.head_size, cfg.n_inner, cfg.vocab_size
(16, 192, 3)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import DfgptError

__all__ = ["Config", "ConfigError"]


class ConfigError(DfgptError):
    """A configuration whose values contradict each other or their domain."""


@dataclass(frozen=True)
class Config:
    """Shapes and switches of a nanoGPT-family model.

    `vocab` holds the token texts (a character vocabulary for the small models); a large
    BPE vocabulary may instead give only `vocab_size` and leave texts to a tokenizer.
    Weight `layout` is `"out_in"` (PyTorch Linear: nanoGPT, minGPT) or `"in_out"`
    (GPT-2 Conv1D, picoGPT); cell names index weights in the stored layout.
    """

    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
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

    def __post_init__(self) -> None:
        vocab = tuple(self.vocab)
        object.__setattr__(self, "vocab", vocab)
        if vocab and self.vocab_size and self.vocab_size != len(vocab):
            raise ConfigError(
                f"vocab has {len(vocab)} tokens but vocab_size is {self.vocab_size}; "
                "give one of them, or make them agree."
            )
        if vocab and not self.vocab_size:
            object.__setattr__(self, "vocab_size", len(vocab))
        if not self.n_inner:
            object.__setattr__(self, "n_inner", 4 * self.n_embd)
        for key in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "n_inner"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{key} must be a positive integer, got {v!r}.")
        if self.n_embd % self.n_head:
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
        }
        for key, allowed in checks.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key} must be one of {allowed}, got {getattr(self, key)!r}.")
        if not self.ln_eps > 0:
            raise ConfigError(f"ln_eps must be positive, got {self.ln_eps!r}.")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["vocab"] = list(self.vocab)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(
                f"unknown config keys {unknown}; expected some of {sorted(known)}."
            )
        d = dict(d)
        if "vocab" in d:
            d["vocab"] = tuple(d["vocab"])
        try:
            return cls(**d)
        except TypeError as e:
            raise ConfigError(f"incomplete config: {e}") from None

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)
