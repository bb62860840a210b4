"""Self-checks of the numpy reference in tests/reference.py."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference import forward, hf_to_nanogpt, random_state

BASE = dict(n_layer=2, n_head=2, n_embd=8, n_inner=32, layer_norm=True, mlp=True,
            bias=True, tied=True, gelu="tanh", layout="out_in", ln_eps=1e-5)
TOKENS = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]


def test_matches_huggingface_gpt2():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        n_layer=2, n_head=2, n_embd=8, n_positions=16, vocab_size=11,
        activation_function="gelu_new", resid_pdrop=0, embd_pdrop=0, attn_pdrop=0,
        layer_norm_epsilon=1e-5)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval().double()
    # default init is tiny (std 0.02, zero biases, unit LN); perturb to make the check meaningful
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    state = hf_to_nanogpt({k: v.detach().numpy() for k, v in model.state_dict().items()})
    assert "lm_head.weight" not in state and not any(k.endswith(".attn.bias") for k in state)

    with torch.no_grad():
        res = model(torch.tensor([TOKENS]), output_attentions=True)
    ref = forward(state, BASE, TOKENS)
    np.testing.assert_allclose(ref["logits"], res.logits[0].numpy(), rtol=0, atol=1e-10)
    for l in range(2):
        np.testing.assert_allclose(ref["att"][l], res.attentions[l][0].numpy(), rtol=0, atol=1e-10)
        assert np.all(np.triu(ref["att"][l], 1) == 0)


@pytest.mark.parametrize("variant", [
    {}, {"gelu": "erf"}, {"bias": False}, {"layer_norm": False}, {"mlp": False}, {"tied": False}])
def test_in_out_layout_matches_out_in(variant):
    cfg = {**BASE, **variant}
    a = random_state(cfg, vocab_size=11, block_size=16, seed=1)
    cfg_t = {**cfg, "layout": "in_out"}
    b = {k: (v.T.copy() if v.ndim == 2 and ".h." in k else v) for k, v in a.items()}
    assert set(b) == set(random_state(cfg_t, 11, 16, seed=1))
    for k, v in random_state(cfg_t, 11, 16, seed=1).items():
        assert v.shape == b[k].shape, k
    ra, rb = forward(a, cfg, TOKENS), forward(b, cfg_t, TOKENS)
    np.testing.assert_allclose(ra["logits"], rb["logits"], rtol=0, atol=1e-12)
    assert ra["logits"].shape == (len(TOKENS), 11)
    assert len(ra["hidden"]) == cfg["n_layer"] + 1 and ra["q"][0].shape == (2, len(TOKENS), 4)


def test_tied_equals_untied_copy():
    tied = random_state(BASE, 11, 16, seed=2)
    untied = {**tied, "lm_head.weight": tied["transformer.wte.weight"].copy()}
    r1 = forward(tied, BASE, TOKENS)
    r2 = forward(untied, {**BASE, "tied": False}, TOKENS)
    np.testing.assert_allclose(r1["logits"], r2["logits"], rtol=0, atol=0)


def test_float32_stays_float32_and_keys():
    cfg = {**BASE, "gelu": "erf", "bias": False, "tied": False}
    s = random_state(cfg, 11, 16, seed=3, dtype=np.float32)
    assert not any(k.endswith(".bias") for k in s) and "lm_head.weight" in s
    r = forward(s, cfg, TOKENS)
    assert r["logits"].dtype == np.float32 and r["ln_f"].dtype == np.float32
