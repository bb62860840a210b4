"""Shared tiny fixtures: small configs and models built in the test, never downloaded."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# Seeded like everything else: the same command gives the same examples. Explore new ones
# with HYPOTHESIS_PROFILE=explore.
settings.register_profile("default", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

sys.path.insert(0, str(Path(__file__).parent))

import reference  # noqa: E402

import dfgpt  # noqa: E402
from dfgpt import Config  # noqa: E402


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


CORPUS = ["the cat sat on the mat", "a dog ran after the cat", "cells compute the logits"] * 20


def random_gpt2(noise: float, **config):
    """A transformers GPT2LMHeadModel with seeded random weights, every one moved by N(0, noise):
    its default init (zero biases, unit LayerNorm) would make agreement too easy."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(
        activation_function="gelu_new", resid_pdrop=0, embd_pdrop=0, attn_pdrop=0, layer_norm_epsilon=1e-5, **config
    )
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(noise * torch.randn_like(p))
    return model


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory):
    """A random small GPT-2 saved by transformers as safetensors, with a BPE tokenizer trained here."""
    tokenizers = pytest.importorskip("tokenizers")
    folder = tmp_path_factory.mktemp("gpt2")
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=300, min_frequency=1)
    bpe.save(str(folder / "tokenizer.json"))
    model = random_gpt2(n_layer=2, n_head=4, n_embd=16, n_positions=32, vocab_size=bpe.get_vocab_size(), noise=0.2)
    model.save_pretrained(folder, safe_serialization=True)
    return folder, model
