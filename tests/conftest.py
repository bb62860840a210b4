"""Shared tiny fixtures: small configs and models built in the test, never downloaded."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import reference

import dfgpt
from dfgpt import Config


def ref_cfg(cfg: Config) -> dict:
    """The reference forward's config dict for a dfgpt Config."""
    return {
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_embd": cfg.n_embd,
        "n_inner": cfg.n_inner,
        "layer_norm": cfg.layer_norm,
        "mlp": cfg.mlp,
        "bias": cfg.bias,
        "tied": cfg.tied,
        "gelu": cfg.gelu,
        "layout": cfg.layout,
        "ln_eps": cfg.ln_eps,
    }


def random_model(cfg: Config, seed: int = 0) -> tuple[dfgpt.Model, dict]:
    """A model with the reference's random weights, and that state dict."""
    state = reference.random_state(ref_cfg(cfg), cfg.vocab_size, cfg.block_size, seed)
    return dfgpt.Model.from_state_dict(state, cfg), state


TINY = Config(n_layer=2, n_head=2, n_embd=8, block_size=6, vocab=("a", "b", "c"), n_inner=12, name="tiny")


@pytest.fixture
def tiny() -> dfgpt.Model:
    return random_model(TINY, seed=1)[0]


@pytest.fixture(scope="session")
def sort_random() -> dfgpt.Model:
    return dfgpt.load("sort-random")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
