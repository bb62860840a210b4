"""Llama, Mistral, Qwen2, Gemma and GPT-NeoX folders made by transformers load and compute exactly what it does.

Every checkpoint is a tiny random model saved by transformers in the test (tests/families.py),
compared with that very model: logits, hidden states and attention probabilities to 1e-5 of the
largest value, greedy generation token for token, gradients against torch autograd.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import dfgpt
from dfgpt.core.config import MissingFieldError
from dfgpt.errors import CheckpointError, StateDictError

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).parent))
import families  # noqa: E402

FAMILIES = ["llama", "mistral", "qwen2", "gemma", "gpt_neox"]
IDS = [3, 17, 5, 40, 22, 9, 31, 2, 14, 27, 8, 45]  # 12 tokens: past Mistral's window of 5


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """{family: (folder, the torch model)}, made once."""
    out = {}
    for fam in FAMILIES:
        folder = tmp_path_factory.mktemp(fam)
        out[fam] = (folder, families.make(fam, folder))
    return out


def close(got, want, what):
    """Equal to 1e-5 of the largest magnitude (float32 throughout)."""
    want = np.asarray(want)
    err = float(np.abs(np.asarray(got) - want).max()) / float(np.abs(want).max())
    assert err <= 1e-5, f"{what}: {err:.2e} relative"


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_hidden_states_and_attention_are_transformers_own(saved, family):
    folder, hf = saved[family]
    model = dfgpt.load(str(folder))
    assert model.config.family == family and model.config.dtype == "float32"
    sheet = model.sheet(IDS)
    out = families.logits(hf, IDS, output_attentions=True, output_hidden_states=True)
    close(sheet.values("logit"), out.logits[0].numpy(), "logits")
    roles = model.graph.roles
    L = len(roles.layers)
    close(sheet.values(roles.layers[0].resid_pre), out.hidden_states[0][0].numpy(), "embedding")
    for i, layer in enumerate(roles.layers):
        # transformers' last hidden state is after the final norm; the others are block outputs
        name = layer.resid_post if i < L - 1 else roles.final_norm
        close(sheet.values(name), out.hidden_states[i + 1][0].numpy(), name)
        close(sheet.values(layer.pattern), out.attentions[i][0].numpy(), layer.pattern)


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_generation_is_transformers_greedy(saved, family):
    folder, hf = saved[family]
    hf.generation_config.eos_token_id = None  # no early stop: ten tokens whatever they are
    hf.generation_config.pad_token_id = 0
    with torch.no_grad():
        want = hf.generate(torch.tensor([IDS[:6]]), max_new_tokens=10, do_sample=False)[0, 6:].tolist()
    assert dfgpt.load(str(folder)).generate(IDS[:6], max_new_tokens=10) == want


@pytest.mark.parametrize("family", ["llama", "gemma", "gpt_neox"])
def test_the_gradient_of_a_logit_is_torch_autograds(saved, family):
    folder, _ = saved[family]
    model = dfgpt.load(str(folder), dtype="float64")
    g = model.sheet(IDS[:8]).grad("logit[7][4]")
    hf64 = families.model(family).double()  # the same seed: the same weights
    hf64.zero_grad()
    hf64(torch.tensor([IDS[:8]])).logits[0, 7, 4].backward()
    params = dict(hf64.named_parameters())
    from dfgpt.models.keys import hf_key

    checked = 0
    for name in model.graph.parameters:
        key = hf_key(name, model.config)
        key = "lm_head.weight" if key == "embed_out.weight" else key  # NeoX's head, saved as embed_out
        if key is None or key not in params:
            continue
        want = params[key].grad.numpy()
        # float64 both sides, but transformers' rotary angles are float32 (cos and sin taken in float32 too)
        np.testing.assert_allclose(g.arrays[name], want, rtol=1e-5, atol=1e-6 * np.abs(want).max(), err_msg=name)
        checked += 1
    assert checked == len([p for p in params if p != "lm_head.weight" or not model.config.tied])


def test_every_family_builds_its_own_block_under_its_checkpoint_names(saved):
    graphs = {f: dfgpt.load(str(saved[f][0])).graph for f in FAMILIES}
    llama, neox, gemma = graphs["llama"], graphs["gpt_neox"], graphs["gemma"]
    assert {"embed_tokens", "layers[0].input_layernorm.w", "layers[0].self_attn.q_proj.w", "layers[0].mlp.gate_proj.w",
            "norm.w", "lm_head.w", "rope.cos", "rope.sin"} <= set(llama.parameters)
    assert {"embed_in", "layers[0].attention.query_key_value.w", "layers[0].input_layernorm.g",
            "layers[0].input_layernorm.b", "final_layer_norm.g", "embed_out.w"} <= set(neox.parameters)
    # grouped-query attention: k and v per key/value head; the score reads head h // 2
    assert llama.specs["layers[0].self_attn.k"].dims == (2, 0, 8) and llama.ops["layers[0].self_attn.score"].groups == 2
    # NeoX: parallel attention and MLP, both reading the block's input; partial rotary (4 of 8 dims)
    r = neox.roles.layers[1]
    assert neox.roles.parallel and neox.ops[r.mlp_in].ins[0] == r.resid_pre == "layers[0].out"
    assert neox.ops["layers[0].attention.q_rot"].rot == 4 and neox.specs["rope.cos"].dims == (64, 2)
    # Gemma: 1 + w, the embedding times √32 in float32, the tied head, head_dim 24 independent of 32 / 2
    assert gemma.ops["norm.out"].offset == 1.0 and gemma.roles.unembed == "embed_tokens"
    assert gemma.ops["emb"].scale == float(np.float32(np.sqrt(32)))
    assert gemma.specs["layers[0].self_attn.q"].dims[2] == 24
    assert graphs["qwen2"].ops["layers[0].self_attn.q"].ins[2:] == ("layers[0].self_attn.q_proj.b",)
    assert "layers[0].self_attn.o_proj.b" not in graphs["qwen2"].specs


def test_a_rotary_cell_reads_the_named_cos_and_sin_tables(saved):
    sheet = dfgpt.load(str(saved["llama"][0])).sheet(IDS[:6])
    p = "layers[0].self_attn"
    assert sheet.formula(f"{p}.q_rot[1][4][2]") == (
        f"{p}.q_rot[1][4][2] = {p}.q[1][4][2] · rope.cos[4][2] − {p}.q[1][4][6] · rope.sin[4][2]")
    second_half = f"{p}.k[0][4][6] · rope.cos[4][2] + {p}.k[0][4][2] · rope.sin[4][2]"
    assert sheet.formula(f"{p}.k_rot[0][4][6]").endswith(second_half)
    q, c, s_ = sheet.value(f"{p}.q[1][4][2]"), sheet.value("rope.cos[4][2]"), sheet.value("rope.sin[4][2]")
    assert sheet.value(f"{p}.q_rot[1][4][2]") == pytest.approx(q * c - sheet.value(f"{p}.q[1][4][6]") * s_, rel=1e-6)
    expr = sheet.expr(f"{p}.q_rot[1][4][2]", depth=1)
    assert {str(x) for x in expr.free_symbols} == {f"{p}.q[1][4][2]", f"{p}.q[1][4][6]", "rope.cos[4][2]",
                                                   "rope.sin[4][2]"}
    neox = dfgpt.load(str(saved["gpt_neox"][0])).sheet(IDS[:6])
    assert "does not rotate" in neox.formula("layers[0].attention.k_rot[0][3][6]")


def test_the_sliding_window_is_structural(saved):
    sheet = dfgpt.load(str(saved["mistral"][0])).sheet(IDS)
    p = "layers[1].self_attn"
    assert sheet.precedents(f"{p}.score[0][11][6]") == []  # 11 - 6 = 5: outside the window of 5
    assert sheet.value(f"{p}.att[0][11][6]") == 0.0 and sheet.value(f"{p}.att[0][11][7]") > 0
    assert f"{p}.k_rot[0][7][0]" in sheet.precedents(f"{p}.score[3][11][7]")  # one KV head for 4 query heads
    assert "sliding window" in sheet.formula(f"{p}.score[0][11][2]")
    prov = sheet.provenance("logit[11][4]")
    assert f"{p}.score[0][11][6]" not in prov and f"{p}.score[0][11][7]" in prov
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 0 · -inf from a masked score in the ranking
        assert all(np.isfinite(r.score) for r in sheet.influence("logit[11][4]", top=5))
    cone = sheet.provenance("layers[0].self_attn.y[11][0]")
    assert "layers[0].self_attn.v[0][7][0]" in cone and "layers[0].self_attn.v[0][6][0]" not in cone


@pytest.mark.parametrize("scaling", [{"rope_type": "linear", "factor": 2.0},
                                     {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16}])
def test_rope_scaling_variants_are_transformers_own(tmp_path, scaling):
    hf = families.make("llama", tmp_path, rope_parameters={"rope_theta": 500.0, **scaling})
    model = dfgpt.load(str(tmp_path))
    assert model.config.rope_type == scaling["rope_type"] and model.config.rope_theta == 500.0
    want = families.logits(hf, IDS).logits[0].numpy()
    close(model.sheet(IDS).values("logit"), want, "logits")
    # transformers 4's config.json: rope_theta beside rope_scaling ("type" in the oldest)
    d = json.loads((tmp_path / "config.json").read_text())
    params = d.pop("rope_parameters")
    d["rope_theta"] = params.pop("rope_theta")
    d["rope_scaling"] = {"type" if scaling["rope_type"] == "linear" else "rope_type": params.pop("rope_type"), **params}
    (tmp_path / "config.json").write_text(json.dumps(d))
    assert dfgpt.load(str(tmp_path)).config == model.config


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_checkpoints_load_widened_and_say_so(tmp_path, dtype):
    hf = families.make("qwen2", tmp_path, dtype=dtype)  # hf: the same file read in float32
    model = dfgpt.load(str(tmp_path))
    assert f"computes in float32 from {dtype}" in repr(model)
    close(model.sheet(IDS).values("logit"), families.logits(hf, IDS).logits[0].numpy(), "logits")


def test_sharded_checkpoints_load_every_shard(tmp_path):
    hf = families.make("gpt_neox", tmp_path, shard="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists() and len(list(tmp_path.glob("*.safetensors"))) > 2
    close(dfgpt.load(str(tmp_path)).sheet(IDS).values("logit"), families.logits(hf, IDS).logits[0].numpy(), "logits")


@pytest.mark.parametrize("family", ["mistral", "gpt_neox", "gemma"])
def test_incremental_after_random_edits_is_from_scratch_bit_for_bit(saved, family):
    model = dfgpt.load(str(saved[family][0]), dtype="float64")  # exact mode: row-canonical arithmetic
    sheet = model.sheet(IDS)
    sheet.values("logit")
    rng = np.random.default_rng(1)
    names = model.graph.parameters
    for name in [*rng.choice(names, 8, replace=False), "rope.cos", "rope.sin"]:
        idx = "".join(f"[{int(rng.integers(0, d))}]" for d in model.graph.specs[name].dims)
        sheet.set(f"{name}{idx}", float(rng.normal()))
        sheet.values("logit")
    sheet.set("tokens[8]", 30)
    sheet.values("logit")
    params = {n: np.array(sheet.engine.values[n]) for n in names}
    fresh = dfgpt.Model(model.config, params).sheet(sheet.tokens)
    for name in model.graph.computed:
        assert np.array_equal(sheet.values(name), fresh.values(name)), name
    sheet.undo()
    assert sheet.tokens == IDS


def test_a_saved_family_model_loads_back_and_its_config_names_every_field(saved, tmp_path):
    model = dfgpt.load(str(saved["gemma"][0]))
    model.save(tmp_path)
    again = dfgpt.load(str(tmp_path))
    assert again.config == model.config
    assert np.array_equal(again.sheet(IDS).values("logit"), model.sheet(IDS).values("logit"))
    d = json.loads((tmp_path / "config.json").read_text())
    del d["n_kv_head"]
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(MissingFieldError, match='"n_kv_head"') as e:
        dfgpt.load(str(tmp_path))
    assert e.value.fields == ("n_kv_head",)


def _resave(folder, edit):
    from safetensors.numpy import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    edit(state)
    save_file(state, str(folder / "model.safetensors"))


def _config(folder, **changes):
    d = json.loads((folder / "config.json").read_text())
    d.update(changes)
    for k in [k for k, v in changes.items() if v is None]:
        del d[k]
    (folder / "config.json").write_text(json.dumps(d))


def test_bad_checkpoints_get_typed_errors_naming_the_tensor_or_field(tmp_path):
    folder = tmp_path / "m"
    families.make("llama", folder)
    key = "model.layers.1.mlp.up_proj.weight"
    _resave(folder, lambda s: s.pop(key))
    with pytest.raises(StateDictError, match=f"missing tensors: {key}"):
        dfgpt.load(str(folder))
    families.make("llama", folder)
    _resave(folder, lambda s: s.update({key: s[key][:, :-1]}))
    with pytest.raises(StateDictError, match=rf"{key}: got \(40, 31\), expected \(40, 32\)"):
        dfgpt.load(str(folder))
    families.make("llama", folder)
    _config(folder, num_key_value_heads=4)
    with pytest.raises(StateDictError, match=r"k_proj.weight: got \(16, 32\), expected \(32, 32\).*key_value_heads"):
        dfgpt.load(str(folder))
    _config(folder, num_key_value_heads=3)
    with pytest.raises(dfgpt.errors.DfgptError, match="n_kv_head=3 .num_key_value_heads"):
        dfgpt.load(str(folder))
    families.make("llama", folder)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match="model.safetensors.*truncated"):
        dfgpt.load(str(folder))
    families.make("llama", folder)
    _config(folder, intermediate_size=None)
    with pytest.raises(MissingFieldError, match="lacks 'intermediate_size'"):
        dfgpt.load(str(folder))
    _config(folder, model_type="phi", architectures=["PhiForCausalLM"])
    with pytest.raises(CheckpointError, match="model_type 'phi'.* is not a family dfgpt reads"):
        dfgpt.load(str(folder))


def test_a_missing_shard_is_named(tmp_path):
    families.make("gpt_neox", tmp_path, shard="20KB")
    shard = sorted(tmp_path.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"lists shard {shard.name}"):
        dfgpt.load(str(tmp_path))


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_a_resid_pre_sweep_is_a_forward_hook_on_transformers_decoder_layer(saved, family):
    folder, hf = saved[family]
    model = dfgpt.load(str(folder))
    clean_ids, corrupt_ids = IDS[:6], [*IDS[:2], 44, *IDS[3:6]]
    result = dfgpt.sweep(model.sheet(clean_ids), model.sheet(corrupt_ids), "logit:4", over="resid_pre")
    decoder = hf.model.layers if family != "gpt_neox" else hf.gpt_neox.layers
    clean_hidden = families.logits(hf, clean_ids, output_hidden_states=True).hidden_states
    for layer in range(2):
        for pos in range(6):
            def patch(module, args, kwargs, layer=layer, pos=pos):
                x = args[0].clone() if args else kwargs["hidden_states"].clone()
                x[0, pos] = clean_hidden[layer][0, pos]
                return ((x, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": x})

            hook = decoder[layer].register_forward_pre_hook(patch, with_kwargs=True)
            try:
                want = float(families.logits(hf, corrupt_ids).logits[0, 5, 4])
            finally:
                hook.remove()
            assert result.values[layer, pos] == pytest.approx(want, abs=1e-5 * 3), (layer, pos)


def test_sentencepiece_tokens_show_their_space_as_gpt2s_do_and_read_in_any_spelling(saved, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    import shutil

    shutil.copytree(saved["llama"][0], tmp_path, dirs_exist_ok=True)
    tok = tokenizers.SentencePieceBPETokenizer()
    tok.train_from_iterator(["the cat sat on the mat", "the dog ran after the cat"] * 20, vocab_size=40,
                            min_frequency=1, show_progress=False)
    tok.save(str(tmp_path / "tokenizer.json"))
    model = dfgpt.load(str(tmp_path))
    sheet = model.sheet("the cat sat")
    cat = sheet.tokens[1]
    assert model.vocab[cat] == "▁cat" and model.token_text(cat) == "␣cat"
    assert model.decode(sheet.tokens) == "the cat sat"
    values = {sheet.value(f"logit[2][{t}]") for t in ("▁cat", "␣cat", "Ġcat", str(cat))}
    assert len(values) == 1


@pytest.mark.parametrize(("changes", "message"), [
    ({"n_kv_head": 3}, "n_head=4 is not a multiple of n_kv_head=3"),
    ({"rotary_dim": 3}, "rotary_dim=3 must be even"),
    ({"rotary_dim": 10}, "at most head_dim=8"),
    ({"family": "phi"}, "family must be one of"),
    ({"rope_type": "llama3"}, "llama3 rope scaling needs rope_context"),
    ({"window": -1}, "window must be a whole number"),
])
def test_contradictory_family_configs_are_refused(changes, message):
    base = dict(n_layer=1, n_head=4, n_embd=32, block_size=8, vocab_size=5, family="llama", norm="rms",
                positions="rotary", mlp_kind="swiglu")
    with pytest.raises(dfgpt.errors.DfgptError, match=message):
        dfgpt.Config(**{**base, **changes})


def test_a_state_dict_file_beside_its_config_loads_as_its_folder(saved):
    folder = saved["qwen2"][0]
    one = dfgpt.load(str(folder / "model.safetensors")).sheet(IDS).values("logit")
    assert np.array_equal(one, dfgpt.load(str(folder)).sheet(IDS).values("logit"))
