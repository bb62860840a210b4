"""The rotary tables: cos and sin of position · θ_i, as transformers' rotary embedding computes them.

θ_i = 1 / theta^(2i / rot) for the rotating dims' pairs i < rot / 2, scaled as `rope_type` says
("linear": θ / factor; "llama3": long wavelengths / factor, a smooth ramp between). Like
transformers, the frequencies and angles are float32 whatever the model computes in; the tables
are then cast to the model's dtype. They are constants of the graph (`rope.cos`, `rope.sin`,
[block_size, rot / 2]) that a formula reads by name.

>>> from dfgpt import Config
>>> t = rope_tables(Config(n_layer=1, n_head=1, n_embd=4, block_size=3, vocab=("a",), positions="rotary"))
>>> t["rope.cos"].shape, float(t["rope.cos"][0, 0]), round(float(t["rope.sin"][1, 0]), 6)
((3, 2), 1.0, 0.841471)
"""

from __future__ import annotations

import math

import numpy as np

from .config import Config

__all__ = ["inverse_frequencies", "rope_tables"]


def inverse_frequencies(cfg: Config) -> np.ndarray:
    """θ_i, [rot / 2] float32, scaled per the config's rope_type."""
    dim = cfg.rotary
    inv = (1.0 / (np.float32(cfg.rope_theta) ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32)
                                                 / np.float32(dim)))).astype(np.float32)
    f = np.float32(cfg.rope_factor)
    if cfg.rope_type == "linear":
        return (inv / f).astype(np.float32)
    if cfg.rope_type == "llama3":
        low, high, old = cfg.rope_low_freq, cfg.rope_high_freq, cfg.rope_context
        low_wavelen, high_wavelen = old / low, old / high
        wavelen = (2 * math.pi / inv).astype(np.float32)
        scaled = np.where(wavelen > low_wavelen, inv / f, inv).astype(np.float32)
        smooth = ((old / wavelen - low) / (high - low)).astype(np.float32)
        smoothed = ((1 - smooth) * scaled / f + smooth * scaled).astype(np.float32)
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return np.where(medium, smoothed, scaled).astype(np.float32)
    return inv


def rope_tables(cfg: Config) -> dict[str, np.ndarray]:
    """{"rope.cos", "rope.sin"}: [block_size, rot / 2] in the config's dtype; {} without rotary positions."""
    if not cfg.rotary:
        return {}
    angles = np.arange(cfg.block_size, dtype=np.float32)[:, None] * inverse_frequencies(cfg)[None, :]  # float32
    a = angles.astype(np.float64)
    return {"rope.cos": np.cos(a).astype(cfg.dtype), "rope.sin": np.sin(a).astype(cfg.dtype)}
