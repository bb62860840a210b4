"""Every capability on a Llama and a GPT-NeoX folder made by transformers, as a user would call it.

Direct attribution and the logit lens through the family's final norm, the state dict in the
checkpoint's own keys, `why` on the command line, patching (a KV head, a residual row, against a
transformers forward hook), path patching and ablation, sweeps over a dataset (in process and on a
local Dask cluster), attribution patching, SymPy slices (RMSNorm, SwiGLU, rotary cos/sin as named
constants), pictures of the family's real block, the workbook recalculated by an independent engine,
and sampling reusing the rows already computed. Tiny random models (tests/families.py).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from openpyxl.utils import get_column_letter, range_boundaries
from safetensors import safe_open
from safetensors.numpy import save_file

import dfgpt
from dfgpt.analysis.attribution import direct_attribution
from dfgpt.cli.main import main as cli
from dfgpt.views.attention_map import attention_map
from dfgpt.views.colors import write

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).parent))
import families  # noqa: E402

FAMILIES = ["llama", "gpt_neox"]
CLEAN = [3, 17, 5, 40, 22, 9]
CORRUPT = [3, 17, 7, 40, 22, 9]
METRIC = "logit_diff:3,4"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """{family: (folder, the torch model, the dfgpt model)}, made once."""
    out = {}
    for fam in FAMILIES:
        folder = tmp_path_factory.mktemp(fam)
        hf = families.make(fam, folder)
        out[fam] = (folder, hf, dfgpt.load(str(folder)))
    return out


def rel(got, want) -> float:
    want = np.asarray(want, np.float64)
    return float(np.abs(np.asarray(got, np.float64) - want).max() / np.abs(want).max())


def torch_parts(hf, family):
    """transformers' decoder layers, final norm and unembedding."""
    base = hf.gpt_neox if family == "gpt_neox" else hf.model
    return base.layers, (base.final_layer_norm if family == "gpt_neox" else base.norm), hf.get_output_embeddings()


@pytest.mark.parametrize("family", FAMILIES)
def test_direct_attribution_splits_a_family_logit_by_head_exactly(saved, family):
    _, _, model = saved[family]
    sheet = model.sheet(CLEAN)
    parts = direct_attribution(sheet, "logit[5][3]")
    assert abs(parts.total - sheet.value("logit[5][3]")) <= 1e-5 * max(abs(p.value) for p in parts)
    roles = model.graph.roles
    assert sorted(parts.by_head()) == [(lyr, h) for lyr in range(len(roles.layers)) for h in range(roles.heads)]
    diff = direct_attribution(sheet, METRIC)
    want = sheet.value("logit[5][3]") - sheet.value("logit[5][4]")
    assert abs(diff.total - want) <= 1e-5 * max(abs(p.value) for p in diff)
    held = "norm mean square" if family == "llama" else "final_layer_norm mean and variance"
    assert held in parts.table()


@pytest.mark.parametrize("family", FAMILIES)
def test_logit_lens_reads_each_layer_through_the_family_norm(saved, family):
    _, hf, model = saved[family]
    sheet = model.sheet(CLEAN)
    lens = dfgpt.logit_lens(sheet)
    assert lens.layers == ("emb", "layers[0]", "layers[1]")
    assert np.array_equal(lens.logits[-1], sheet.values("logit").astype(np.float64))  # bit for bit
    _, norm, unembed = torch_parts(hf, family)
    out = families.logits(hf, CLEAN, output_hidden_states=True)
    with torch.no_grad():
        for layer in range(2):  # transformers' hidden_states[l]: the stream before block l
            want = unembed(norm(out.hidden_states[layer]))[0].numpy()
            assert rel(lens.logits[layer], want) <= 1e-5, layer


@pytest.mark.parametrize("family", FAMILIES)
def test_an_edited_sheets_state_dict_loads_into_transformers(saved, family, tmp_path):
    folder, _, model = saved[family]
    sheet = model.sheet(CLEAN)
    sheet.set(model.graph.roles.layers[1].o_proj + "[0][0]", 0.5)
    state = sheet.state_dict()
    with safe_open(str(folder / "model.safetensors"), "np") as f:
        assert set(state) == set(f.keys())  # the checkpoint's own keys
    edited = tmp_path / "edited"
    edited.mkdir()
    save_file(state, str(edited / "model.safetensors"))
    shutil.copy(folder / "config.json", edited / "config.json")
    other = transformers.AutoModelForCausalLM.from_pretrained(str(edited), attn_implementation="eager").eval()
    assert rel(families.logits(other, CLEAN).logits[0].numpy(), sheet.values("logit")) <= 1e-5
    assert not np.array_equal(sheet.values("logit"), model.sheet(CLEAN).values("logit"))


@pytest.mark.parametrize("family", FAMILIES)
def test_why_answers_a_family_logit_on_the_command_line(saved, family, capsys):
    folder, _, model = saved[family]
    assert cli(["why", "logit[5][3]", "--model", str(folder), "--text", "3 17 5 40 22 9", "--by", "head"]) == 0
    out = capsys.readouterr().out
    value = model.sheet(CLEAN).value("logit[5][3]")
    assert f"direct attribution of logit[5][3] = {value:+.6g}" in out
    assert re.search(rf"sum\s+{re.escape(f'{value:+.6g}')}", out)
    assert "layers[1].head[0]" in out or "layers[0].head[0]" in out


def test_patching_a_kv_head_is_transformers_with_that_head_patched(saved):
    _, hf, model = saved["llama"]
    clean, corrupted = model.sheet(CLEAN), model.sheet(CORRUPT, exact=True)  # exact: undo is bit for bit
    before = corrupted.values("logit").copy()
    kv = "layers[0].self_attn.k"
    r = corrupted.patch(clean, f"{kv}[1]")  # key head 1, read by query heads 2 and 3
    assert r.action == "patch"
    score = "layers[0].self_attn.score"
    assert np.array_equal(corrupted.values(score)[:2], model.sheet(CORRUPT, exact=True).values(score)[:2])
    assert not np.allclose(corrupted.values(score)[2:], model.sheet(CORRUPT, exact=True).values(score)[2:])
    hd = model.graph.roles.head_size
    proj = hf.model.layers[0].self_attn.k_proj
    with torch.no_grad():
        clean_k = proj(hf.model.layers[0].input_layernorm(hf.model.embed_tokens(torch.tensor([CLEAN]))))
    hook = proj.register_forward_hook(lambda m, i, o: torch.cat([o[..., :hd], clean_k[..., hd:2 * hd]], -1))
    try:
        want = families.logits(hf, CORRUPT).logits[0].numpy()
    finally:
        hook.remove()
    assert rel(corrupted.values("logit"), want) <= 1e-5
    corrupted.undo()
    assert np.array_equal(corrupted.values("logit"), before)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_resid_pre_patch_is_a_forward_hook_on_the_decoder_layer(saved, family):
    _, hf, model = saved[family]
    clean, corrupted = model.sheet(CLEAN), model.sheet(CORRUPT)
    corrupted.patch(clean, "layers[0].out[2]")  # resid_pre of block 1 at position 2
    layers, _, _ = torch_parts(hf, family)
    row = torch.from_numpy(clean.values("layers[0].out")[2].copy())

    def pre(module, args, kwargs):
        h = args[0].clone() if args else kwargs["hidden_states"].clone()
        h[0, 2] = row
        return ((h, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})

    hook = layers[1].register_forward_pre_hook(pre, with_kwargs=True)
    try:
        want = families.logits(hf, CORRUPT).logits[0].numpy()
    finally:
        hook.remove()
    assert rel(corrupted.values("logit"), want) <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_path_patching_and_ablation_undo_exactly(saved, family):
    _, _, model = saved[family]
    roles = model.graph.roles
    clean, corrupted = model.sheet(CLEAN), model.sheet(CORRUPT, exact=True)  # exact: undo is bit for bit
    before = corrupted.values("logit").copy()
    sender, receiver = roles.layers[0].resid_post + "[2]", roles.layers[1].resid_mid + "[2]"
    corrupted.patch(clean, sender, receivers=receiver)  # the skip path only: block 1 reads the corrupted row
    assert np.array_equal(corrupted.values(roles.layers[0].resid_post)[2], model.sheet(CORRUPT, exact=True).values(
        roles.layers[0].resid_post)[2])
    assert not np.array_equal(corrupted.values("logit"), before)
    corrupted.undo()
    r = corrupted.ablate(roles.layers[0].attn_out + "[1]", how="mean", reference=[CLEAN, CORRUPT])
    assert r.action == "ablate mean"
    want = (clean.values(roles.layers[0].attn_out)[1] + model.sheet(CORRUPT).values(roles.layers[0].attn_out)[1]) / 2
    np.testing.assert_allclose(corrupted.values(roles.layers[0].attn_out)[1], want, rtol=1e-6, atol=1e-6)
    corrupted.undo()
    assert np.array_equal(corrupted.values("logit"), before)


@pytest.mark.parametrize("family", FAMILIES)
def test_sweep_pairs_over_a_dataset_is_one_sweep_per_pair(saved, family):
    _, _, model = saved[family]
    pairs = [(CLEAN, CORRUPT), ([1, 2, 3, 4, 5, 6], [1, 2, 8, 4, 5, 6])]
    many = dfgpt.sweep_pairs(model, pairs, METRIC, over="head_out", scheduler="inline")
    for i, (a, b) in enumerate(pairs):
        one = dfgpt.sweep(model.sheet(a), model.sheet(b), METRIC, over="head_out")
        assert np.array_equal(many.pair(i).values, one.values)
    heads = dfgpt.sweep(model.sheet(CLEAN), model.sheet(CORRUPT), METRIC, over="k")
    assert heads.values.shape[1] == model.graph.roles.kv_heads  # k per key/value head


def test_sweep_pairs_on_a_local_dask_cluster_equals_in_process(saved):
    _, _, model = saved["llama"]
    pairs = [(CLEAN, CORRUPT), ([1, 2, 3, 4, 5, 6], [1, 2, 8, 4, 5, 6])]
    here = dfgpt.sweep_pairs(model, pairs, METRIC, scheduler="inline")
    there = dfgpt.sweep_pairs(model, pairs, METRIC, scheduler="local")
    assert "cluster" in str(there.ran_on) or "local" in str(there.ran_on)
    np.testing.assert_allclose(there.values, here.values, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_attribution_patching_is_the_gradient_times_the_difference(saved, family):
    _, _, model = saved[family]
    clean, corrupted = model.sheet(CLEAN), model.sheet(CORRUPT)
    approx = dfgpt.attribution_patch(clean, corrupted, METRIC, over="resid_pre")
    g = corrupted.grad(METRIC)
    resid = model.graph.roles.layers[1].resid_pre
    d = clean.values(resid)[2].astype(np.float64) - corrupted.values(resid)[2]
    base = corrupted.value("logit[5][3]") - corrupted.value("logit[5][4]")
    assert abs(approx.value(layer=1, position=2) - (base + float(d @ g.arrays[resid][2]))) <= 1e-5 * (1 + abs(base))


def test_sympy_writes_out_rmsnorm_swiglu_and_rotary_with_named_constants(saved):
    _, _, model = saved["llama"]
    sheet = model.sheet(CLEAN)

    def check(cell, depth, must):
        e = sheet.expr(cell, depth=depth)
        names = {s.name for s in e.free_symbols}
        assert must <= names, (cell, must - names)
        got = float(e.subs({s: sheet.value(s.name) for s in e.free_symbols}))
        assert abs(got - sheet.value(cell)) <= 1e-5 * (1 + abs(got)), cell
        return e

    norm = check("layers[0].input_layernorm.out[2][0]", 2, {"layers[0].input_layernorm.w[0]", "emb[2][31]"})
    assert "sqrt" in str(norm)
    swiglu = check("layers[0].mlp.gated[2][0]", 2, {"layers[0].mlp.gate[2][0]", "layers[0].mlp.up_proj.w[0][0]"})
    assert "exp" in str(swiglu)  # silu(gate) = gate / (1 + exp(-gate)), times up
    rot = {"rope.cos[2][0]", "rope.sin[2][0]", "layers[0].self_attn.q[1][2][4]"}  # pairs dims 0 and 0 + 8/2
    check("layers[0].self_attn.q_rot[1][2][0]", 1, rot)
    assert sheet.value("rope.cos[2][0]") == pytest.approx(math.cos(2.0), abs=1e-7)  # position 2, frequency 1
    check("layers[0].self_attn.k_rot[1][3][5]", 1, {"rope.cos[3][1]", "rope.sin[3][1]"})


def test_sympy_writes_out_neox_layernorm_gelu_and_partial_rotary(saved):
    _, _, model = saved["gpt_neox"]
    sheet = model.sheet(CLEAN)
    e = sheet.expr("layers[0].attention.q_rot[0][2][0]", depth=1)
    assert {s.name for s in e.free_symbols} >= {"rope.cos[2][0]", "rope.sin[2][0]"}
    assert str(sheet.expr("layers[0].attention.q_rot[0][2][7]", depth=1)) == "layers[0].attention.q[0][2][7]"
    act = sheet.expr("layers[0].mlp.act[2][0]", depth=1)
    assert "erf" in str(act) or "tanh" in str(act)


def test_pictures_draw_the_swiglu_gate_and_neox_parallel_residual(saved, tmp_path):
    llama, neox = saved["llama"][2], saved["gpt_neox"][2]
    block = dfgpt.draw(llama.sheet(CLEAN), "layers[0]").source
    assert '"layers[0].mlp.gate" -> "layers[0].mlp.act"' in block and "product" in block
    assert '"layers[0].mid" -> "layers[0].post_attention_layernorm.ms"' in block  # sequential
    nblock = dfgpt.draw(neox.sheet(CLEAN), "layers[0]").source
    assert 'emb -> "layers[0].post_attention_layernorm.mean"' in nblock  # parallel: the MLP reads the input
    assert "layers[0].mid" not in re.findall(r'-> "(layers\[0\]\.post_attention_layernorm[^"]*)"', nblock)
    model = dfgpt.draw(llama).source
    assert "block layers[0..1]" in model and '"layers[*].mlp.gated"' in model
    head = dfgpt.draw(llama.sheet(CLEAN), "layers[0].self_attn").source
    assert "layers[0].self_attn.k[1]\\n" in head  # query head 3 reads key head 1
    assert dfgpt.draw(llama).source.splitlines()[0] == "digraph model {"
    attention_map(neox.sheet(CLEAN), path=tmp_path / "att.svg")
    assert (tmp_path / "att.svg").stat().st_size > 1000


@pytest.mark.parametrize("family", FAMILIES)
def test_the_workbook_of_a_family_model_recalculates_to_its_logits(saved, family, tmp_path):
    formulas = pytest.importorskip("formulas")
    small = dict(num_hidden_layers=1, hidden_size=16, intermediate_size=16, num_attention_heads=2,
                 vocab_size=12, **({"num_key_value_heads": 1} if family == "llama" else {}))
    families.make(family, tmp_path / "small", **small)
    sheet = dfgpt.load(str(tmp_path / "small")).sheet([3, 7])  # every kind of cell, a workbook `formulas` reads fast
    path = tmp_path / "fam.xlsx"
    result = sheet.to_xlsx(path, progress=False)
    assert result.formulas > 300
    solution = formulas.ExcelModel().loads(str(path)).finish().calculate()
    values = {k.upper(): v for k, v in solution.items()}
    where, ref = result.names["logit"].rsplit("!", 1)
    c0, r0, c1, r1 = range_boundaries(ref.replace("$", ""))
    got = np.array([[float(values[f"'[FAM.XLSX]{where.strip(chr(39)).upper()}'!{get_column_letter(c)}{r}"]
                           .value[0, 0]) for c in range(c0, c1 + 1)] for r in range(r0, r1 + 1)])
    assert got.shape == (2, 12)
    assert rel(got, sheet.values("logit")) <= 1e-5  # live formulas, float64, against the float32 sheet


@pytest.mark.parametrize("family", FAMILIES)
def test_sampling_with_temperature_top_k_top_p_reads_rows_equal_to_a_fresh_sheet(saved, family):
    _, _, model = saved[family]
    gen = model.generate([3, 17, 5], max_new_tokens=4, temperature=0.8, top_k=5, top_p=0.9, seed=7, steps=True)
    assert gen.output == model.generate([3, 17, 5], max_new_tokens=4, temperature=0.8, top_k=5, top_p=0.9, seed=7)
    seq = [3, 17, 5]
    for step in gen.steps:
        fresh = model.sheet(seq).values("logit")[-1].astype(np.float64)
        p = np.exp(fresh - fresh.max())
        np.testing.assert_allclose(step.probs, p / p.sum(), rtol=1e-5, atol=1e-7)
        assert 1 <= np.count_nonzero(step.sampled) <= 5 and step.sampled[step.token] > 0
        seq.append(step.token)


@pytest.mark.parametrize("family", FAMILIES)
def test_influence_groups_by_the_familys_heads(saved, family):
    _, _, model = saved[family]
    keys = {g.key for g in model.sheet(CLEAN).influence("logit[5][3]", top=5).by_head()}
    assert keys == {f"layers[{lyr}].head[{h}]" for lyr in range(2) for h in range(4)}


def test_the_docs_picture_of_the_llama_block_is_current(tmp_path):
    families.docs_llama(tmp_path / "tiny-llama")
    dot = dfgpt.draw(dfgpt.load(str(tmp_path / "tiny-llama")))
    pics = Path(__file__).parent.parent / "docs" / "images" / "families"
    if os.environ.get("DFGPT_UPDATE_DOCS") == "1":
        write(dot, pics / "llama.dot"), write(dot, pics / "llama.svg")
    assert (pics / "llama.dot").read_text() == dot.source, "stale: DFGPT_UPDATE_DOCS=1 pytest -k docs_picture"
    assert (pics / "llama.svg").read_bytes().startswith(b"<?xml")
