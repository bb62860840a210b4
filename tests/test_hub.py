"""GPT-2 and nanoGPT checkpoints on local disk load key for key and agree with transformers."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import dfgpt
from dfgpt.errors import CheckpointError, SequenceLengthError, StateDictError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

def test_gpt2_folder_agrees_with_transformers(hf_dir):
    folder, hf = hf_dir
    model = dfgpt.load(str(folder))
    assert model.config.layout == "in_out" and model.config.tied and model.config.dtype == "float32"
    text = "the cat ran after the dog"
    ids = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text).ids
    sheet = model.sheet(text)
    assert sheet.tokens == ids
    with torch.no_grad():
        out = hf(torch.tensor([ids]), output_attentions=True, output_hidden_states=True)
    np.testing.assert_allclose(sheet.values("logit"), out.logits[0].numpy(), atol=1e-5)
    for layer in range(2):
        np.testing.assert_allclose(sheet.values(f"h[{layer}].attn.att"), out.attentions[layer][0].numpy(), atol=1e-5)
        # transformers' last hidden state is after ln_f; the others are block outputs
        np.testing.assert_allclose(sheet.values(f"h[{layer}].out" if layer < 1 else "ln_f.out"),
                                   out.hidden_states[layer + 1][0].numpy(), atol=1e-5)
    np.testing.assert_allclose(sheet.values("emb"), out.hidden_states[0][0].numpy(), atol=1e-6)
    assert model.decode(ids) == text


def test_bpe_tokens_are_cell_indices(hf_dir):
    folder, _ = hf_dir
    model = dfgpt.load(str(folder))
    sheet = model.sheet("the cat")
    tok = model.vocab[sheet.tokens[1]]  # the tokenizer's spelling, 'Ġcat'; names print the displayed one, '␣cat'
    assert sheet.value(f"logit[1][{tok}]") == sheet.value(f"logit[1][{sheet.tokens[1]}]")
    assert sheet.formula("emb[1][0]").startswith(f"emb[1][0] = wte[{tok.replace('Ġ', '␣')}][0]")


def test_nanogpt_checkpoint_loads_to_the_same_values(hf_dir, tmp_path):
    folder, _ = hf_dir
    gpt2 = dfgpt.load(str(folder), dtype="float64")
    state = {}
    for name, arr in gpt2.params.items():
        key = dfgpt.models.checkpoints.to_nanogpt_key(name)
        # nanoGPT keeps Linear weights [out, in]: transpose GPT-2's Conv1D weights
        t = torch.tensor(arr.T.copy() if arr.ndim == 2 and name.startswith("h[") else arr)
        state[key] = t
    state["lm_head.weight"] = state["transformer.wte.weight"]
    state["transformer.h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 32, 32))
    args = {"n_layer": 2, "n_head": 4, "n_embd": 16, "block_size": 32, "bias": True,
            "vocab_size": gpt2.config.vocab_size, "dropout": 0.0}
    torch.save({"model": state, "model_args": args, "iter_num": 3}, tmp_path / "ckpt.pt")
    nano = dfgpt.load(str(tmp_path), dtype="float64")
    ids = [5, 9, 44, 2, 2, 17]
    # same weights; nanoGPT's GELU is the erf form, so compare against a tanh->erf switched GPT-2
    twin = dfgpt.Model(gpt2.config.replace(gelu="erf"), gpt2.params, gpt2.tokenizer)
    np.testing.assert_allclose(nano.sheet(ids).values("logit"), twin.sheet(ids).values("logit"), atol=1e-12)


def test_state_dict_file_with_config_beside_it(tmp_path):
    model = dfgpt.load("sort-random")
    dfgpt.models.checkpoints.write_weights(model.params, tmp_path / "w.npz")
    (tmp_path / "w.json").write_text(model.config.to_json())
    again = dfgpt.load(str(tmp_path / "w.npz"))
    assert again.sheet("CAB").value("logit[2][A]") == model.sheet("CAB").value("logit[2][A]")


def test_folder_without_weights(tmp_path, hf_dir):
    (tmp_path / "config.json").write_text((hf_dir[0] / "config.json").read_text())
    with pytest.raises(CheckpointError, match="no weights"):
        dfgpt.load(str(tmp_path))


def test_config_that_disagrees_with_the_tensors_names_the_file(tmp_path, hf_dir):
    folder, _ = hf_dir
    for f in folder.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    d = json.loads((tmp_path / "config.json").read_text())
    d["n_embd"] = 32
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(StateDictError, match=r"model\.safetensors: .*wrong shapes"):
        dfgpt.load(str(tmp_path))


def test_truncated_safetensors(tmp_path, hf_dir):
    folder, _ = hf_dir
    for f in folder.iterdir():
        data = f.read_bytes()
        (tmp_path / f.name).write_bytes(data[: len(data) // 3] if f.suffix == ".safetensors" else data)
    with pytest.raises(CheckpointError, match=r"cannot read .*model\.safetensors"):
        dfgpt.load(str(tmp_path))


def test_pickle_checkpoint_without_torch_says_how(tmp_path, monkeypatch):
    torch.save({"model": {}, "model_args": {}}, tmp_path / "ckpt.pt")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(CheckpointError, match=r"needs torch .*weights_only=True"):
        dfgpt.load(str(tmp_path))


def test_prompt_longer_than_the_context(hf_dir):
    model = dfgpt.load(str(hf_dir[0]))
    with pytest.raises(SequenceLengthError, match="context holds 32"):
        model.sheet(list(range(33)))
