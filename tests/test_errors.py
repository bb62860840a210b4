"""Bad input gets a typed DfgptError that says what was wrong and how to fix it; nothing changes."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY, random_model

import dfgpt
from dfgpt.core.config import ConfigError
from dfgpt.errors import CheckpointError, SequenceLengthError, StateDictError, TokenError


def test_tokens_outside_the_vocabulary_list_it(sort_random):
    with pytest.raises(TokenError, match="reads only A B C"):
        sort_random.sheet("CABXCA")
    with pytest.raises(TokenError, match="ids 0..2"):
        sort_random.sheet([0, 1, 3])


@pytest.mark.parametrize("text, words", [("", "empty"), ("ABCABCABCABC", "12 tokens but the context holds 11")])
def test_sequences_empty_or_too_long(sort_random, text, words):
    with pytest.raises(SequenceLengthError, match=words):
        sort_random.sheet(text)


def _state():
    return random_model(TINY, seed=0)[1]


def test_state_dict_missing_extra_and_wrong_shaped_are_each_named():
    state = _state()
    before = {k: v.copy() for k, v in state.items()}
    del state["transformer.h.1.mlp.c_fc.bias"]
    state["transformer.h.0.attn.c_proj.weight"] = np.zeros((8, 9))
    state["transformer.h.7.ln_1.weight"] = np.ones(8)
    with pytest.raises(StateDictError) as e:
        dfgpt.Model.from_state_dict(state, TINY)
    msg = str(e.value)
    assert "missing tensors: transformer.h.1.mlp.c_fc.bias" in msg
    assert "unexpected tensors: transformer.h.7.ln_1.weight" in msg
    assert "transformer.h.0.attn.c_proj.weight: got (8, 9), expected (8, 8)" in msg
    assert "Check the config" in msg
    assert np.array_equal(state["transformer.h.0.ln_1.weight"], before["transformer.h.0.ln_1.weight"])


def test_state_dict_as_nanogpt_saves_it_loads():
    state = _state()
    # nanoGPT keeps the causal-mask buffers and, with tying, a repeated lm_head.weight
    state["transformer.h.0.attn.bias"] = np.tril(np.ones((1, 1, 6, 6)))
    state["_orig_mod.transformer.h.1.attn.bias"] = np.tril(np.ones((1, 1, 6, 6)))
    model = dfgpt.Model.from_state_dict(state, TINY)
    assert model.n_params == sum(v.size for k, v in _state().items())
    tied = TINY.replace(tied=True)
    state = {k: v for k, v in _state().items() if k != "lm_head.weight"}
    assert dfgpt.Model.from_state_dict(state, tied).graph.ops["logit"].ins[1] == "wte"


def test_nonfinite_weights_are_refused():
    state = _state()
    state["transformer.wpe.weight"][0, 0] = np.nan
    with pytest.raises(StateDictError, match="non-finite values in: transformer.wpe.weight"):
        dfgpt.Model.from_state_dict(state, TINY)


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"n_embd": 10, "n_head": 3}, "not divisible"),
        ({"n_layer": 0}, "positive integer"),
        ({"gelu": "relu"}, "gelu must be one of"),
        ({"vocab": ("a", "a")}, "repeated"),
    ],
)
def test_bad_configs(kw, words):
    base = dict(n_layer=1, n_head=2, n_embd=8, block_size=4, vocab=("a", "b"))
    with pytest.raises(ConfigError, match=words):
        dfgpt.Config(**{**base, **kw})


def test_unknown_model_names_suggest(tmp_path):
    with pytest.raises(CheckpointError, match="Did you mean 'sort-neat'"):
        dfgpt.load("sort-nat")


def test_truncated_weights_file(tmp_path):
    model = random_model(TINY, seed=0)[0]
    model.save(tmp_path / "m")
    data = (tmp_path / "m" / "model.safetensors").read_bytes()
    (tmp_path / "m" / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read"):
        dfgpt.load(str(tmp_path / "m"))


def test_saved_model_loads_back_identically(tmp_path):
    model = random_model(TINY, seed=0)[0]
    model.save(tmp_path / "m")
    again = dfgpt.load(str(tmp_path / "m"))
    assert again.config == model.config
    for k, v in model.params.items():
        np.testing.assert_array_equal(again.params[k], v)


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda m: dfgpt.load(None), CheckpointError, "named by text"),
        (lambda m: dfgpt.load("sort", dtype="float16"), CheckpointError, "dtype must be"),
        (lambda m: m.sheet(None), TokenError, "a text or a list"),
        (lambda m: m.sheet([0.9, 1]), TokenError, "whole numbers"),
        (lambda m: m.sheet([True]), TokenError, "whole numbers"),
        (lambda m: m.sheet(["A", "Q"]), TokenError, "'Q' is not in the vocabulary"),
        (lambda m: m.generate("CAB", seed=-1), dfgpt.DfgptError, "seed must be"),
        (lambda m: m.generate("CAB", seed="x"), dfgpt.DfgptError, "seed must be"),
        (lambda m: m.sheet("CAB").set("wte[A][0]", 10**400), dfgpt.DfgptError, "not a finite"),
        (lambda m: dfgpt.Model.from_state_dict(m.state_dict(), None), ConfigError, "dfgpt.Config"),
        (lambda m: dfgpt.draw(m.sheet("CAB"), 5), dfgpt.DfgptError, "stage or cell name"),
        (lambda m: m.sheet("CAB").value("h[-2:].attn.att"), dfgpt.DfgptError, "count forward"),
    ],
)
def test_odd_inputs_get_typed_errors_and_change_nothing(call, error, words):
    model = dfgpt.load("sort")
    before = {k: v.copy() for k, v in model.params.items()}
    with pytest.raises(error, match=words):
        call(model)
    assert all(np.array_equal(before[k], v) for k, v in model.params.items())


def test_model_arrays_are_read_only_and_token_texts_are_accepted():
    model = dfgpt.load("sort")
    with pytest.raises(ValueError):
        model.params["wte"][0, 0] = 5.0
    assert model.sheet(["C", "A", "B"]).text == "CAB"
    s = model.sheet("CABACA")
    s.set("tokens[2]", "C")
    assert (s.state("tokens[2]"), s.state("tokens[1]")) == ("edited", "fresh")
    assert model.generate("CABACA") == "AAABCC"  # by default generation fills the context
    assert dfgpt.load("sort", dtype="float32").sheet("CAB").values("logit").dtype == np.float32


def test_a_config_json_that_is_not_an_object(tmp_path):
    model = random_model(TINY, seed=0)[0]
    dfgpt.models.checkpoints.write_weights(model.params, tmp_path / "w.npz")
    (tmp_path / "w.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="JSON list"):
        dfgpt.load(str(tmp_path / "w.npz"))
