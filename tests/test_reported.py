"""What a new user and a hostile tester tripped on (issue: wrong answers first, then errors): one test each."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY, random_model
from hypothesis import given, settings
from hypothesis import strategies as st

import dfgpt
from dfgpt.core.config import Config
from dfgpt.errors import DfgptError, IndexError_, QueryError, StateDictError, TokenError, UnknownNameError
from dfgpt.models.catalog import random_params


# -- silent wrong answers -------------------------------------------------------------------------
def test_a_masked_attention_entry_stays_zero_when_its_row_sum_is_pinned_to_zero():
    s = dfgpt.load("sort").sheet("CABACA")
    s.set("h[0].attn.exp_sum[0][1]", 0.0)
    assert s.value("h[0].attn.att[0][1][2]") == 0.0  # masked: reads nothing
    assert "h[0].attn.att[0][1][2]" not in s.impact("h[0].attn.exp_sum[0][1]")


EDITABLE = ["h[0].attn.exp_sum", "h[1].attn.score_max", "h[0].attn.score", "h[2].attn.q", "h[1].attn.k",
            "h[0].attn.c_attn.w", "wpe", "h[1].ln_1.var"]


@settings(max_examples=40, deadline=None)
@given(tensor=st.sampled_from(EDITABLE), seed=st.integers(0, 10**6),
       value=st.sampled_from([0.0, -0.0, 1e-300, -1e300, 1e300, 710.0, -3.5]))
def test_masked_cells_stay_constant_under_any_edit(tensor, seed, value):
    sheet = dfgpt.load("sort-random").sheet("CABACA")
    shape = sheet.engine.shape(tensor)
    idx = [int(i) for i in np.random.default_rng(seed).integers(0, shape)]
    if tensor.endswith("score"):  # [head, pos, key]: a masked score cannot be pinned (a typed error)
        idx[2] = min(idx[1], idx[2])
    idx = tuple(idx)
    sheet.set(sheet.name(tensor, idx), value)
    for layer in range(3):
        att = sheet.values(f"h[{layer}].attn.att")
        score = sheet.values(f"h[{layer}].attn.score")
        above = np.triu(np.ones((6, 6), bool), 1)[None].repeat(3, 0)  # keys past the query
        assert (att[above] == 0).all()
        assert np.isneginf(score[above]).all()


def test_a_softmax_over_one_key_ignores_a_huge_score_as_the_cone_says():
    s = dfgpt.load("sort-random").sheet("CABACA")
    before = s.value("logit[5][A]")
    assert "h[0].attn.q[2][0][0]" in s.provenance("logit[5][A]").inert
    s.set("h[0].attn.q[2][0][0]", 1e308)  # q·k overflows to ±inf: still exp(0) / exp(0) = 1
    assert s.value("h[0].attn.att[2][0][0]") == 1.0
    assert s.value("logit[5][A]") == before


def test_a_pinned_max_takes_its_score_out_of_the_cannot_matter_list():
    s = dfgpt.load("sort").sheet("CABACA")
    assert "h[0].attn.score[0][0][0]" in s.provenance("logit[5][A]").inert
    s.set("h[0].attn.score_max[0][0]", 0.0)
    prov = s.provenance("logit[5][A]")
    assert "h[0].attn.score[0][0][0]" not in prov.inert
    s.set("h[0].attn.score[0][0][0]", 710.0)  # exp(710 - 0) overflows: it does matter now
    assert not np.isfinite(s.value("logit[5][A]"))


def test_a_receipt_sees_a_pinned_output():
    s = dfgpt.load("sort").sheet("CABACA")
    s.values("prob")
    before = s.value("logit[5][A]")
    r = s.set("logit[5][A]", -20.0).settle()
    assert r.max_change["logit"] == pytest.approx(20.0 + before, abs=1e-9)
    assert r.flipped is True


def test_fast_mode_after_growth_equals_a_fresh_sheet():
    cfg = Config(n_layer=1, n_head=2, n_embd=8, block_size=24, vocab=("a", "b"), dtype="float32", name="f32")
    model = dfgpt.Model(cfg, random_params(cfg, seed=3))
    grown = model.sheet("ab" * 8)
    grown.values("logit")
    grown.append("a")
    fresh = model.sheet("ab" * 8 + "a")
    assert grown.value("h[0].attn.score[0][0][16]") == fresh.value("h[0].attn.score[0][0][16]") == -np.inf
    for name in ("h[0].attn.score", "h[0].attn.att", "logit"):
        a, b = grown.values(name), fresh.values(name)
        assert np.array_equal(np.isinf(a), np.isinf(b))
        np.testing.assert_allclose(a[np.isfinite(a)], b[np.isfinite(b)], rtol=1e-5, atol=1e-6)  # float32


def test_a_model_keeps_its_own_arrays():
    model, state = random_model(TINY, seed=2)
    before = model.sheet("abca").value("logit[3][a]")
    for a in state.values():
        a *= 2.0
    again = dfgpt.Model.from_state_dict(dict(state), TINY)
    for a in state.values():
        a[...] = 0.0
    assert model.sheet("abca").value("logit[3][a]") == before
    assert again.sheet("abca").value("logit[3][a]") != 0.0


@pytest.mark.parametrize("bad, what", [
    (lambda a: np.full(a.shape, None, object), "Python objects"),
    (lambda a: a.astype(complex) + 1j, "complex"),
    (lambda a: a > 0, "booleans"),
])
def test_weights_that_are_not_real_numbers_are_refused(bad, what):
    _, state = random_model(TINY, seed=2)
    key = "transformer.wte.weight"
    state[key] = bad(state[key])
    with pytest.raises(StateDictError, match=what):
        dfgpt.Model.from_state_dict(state, TINY)


def test_a_state_dict_with_a_non_text_key_is_refused():
    _, state = random_model(TINY, seed=2)
    state[7] = np.zeros(3)
    with pytest.raises(StateDictError, match="keys are tensor names"):
        dfgpt.Model.from_state_dict(state, TINY)


@pytest.mark.parametrize("ids, error", [([-1], TokenError), ([7], TokenError), ([], DfgptError)])
def test_a_sheet_made_from_ids_checks_them(ids, error):
    with pytest.raises(error):
        dfgpt.Sheet(dfgpt.load("sort-random"), ids)


def test_a_multi_cell_target_is_refused_by_influence():
    s = dfgpt.load("sort").sheet("CABACA")
    with pytest.raises(QueryError, match="selects 33,732 cells"):
        s.influence("h[0]")
    with pytest.raises(QueryError, match="one cell"):
        s.influence("logit[5]")


# -- typed errors instead of Python exceptions ----------------------------------------------------
@pytest.mark.parametrize("call, error, words", [
    (lambda s: s.name("nope", (0,)), UnknownNameError, "not a tensor"),
    (lambda s: s.name("logit", (0,)), IndexError_, "takes 2 indices"),
    (lambda s: s.provenance(None), QueryError, "a selection is a cell name"),
    (lambda s: s.impact(3), QueryError, "a selection is a cell name"),
])
def test_odd_calls_get_typed_errors(call, error, words):
    s = dfgpt.load("sort-random").sheet("CABACA")
    with pytest.raises(error, match=words):
        call(s)


def test_memory_follows_the_input_not_the_context():
    cfg = Config(n_layer=1, n_head=1, n_embd=4, block_size=200_000, vocab=("a", "b"), name="long")
    sheet = dfgpt.Model(cfg, random_params(cfg, seed=1)).sheet("ab")
    assert sheet.engine.cap == 16 and sheet.engine.values["h[0].attn.att"].shape == (1, 16, 16)
    assert np.isfinite(sheet.value("logit[1][a]"))


def test_exact_mode_growing_and_shrinking_past_a_capacity_equals_from_scratch():
    cfg = Config(n_layer=2, n_head=2, n_embd=8, block_size=40, vocab=("a", "b", "c"), name="grow")
    model = dfgpt.Model(cfg, random_params(cfg, seed=4))
    text = "abcab" * 3  # 15 tokens: capacity 16
    sheet = model.sheet(text)
    sheet.values("logit")
    for ch in "cab":  # 18 tokens: capacity 32, every row recomputed at the new shapes
        sheet.append(ch)
    assert sheet.engine.cap == 32
    fresh = model.sheet(text + "cab")
    for name in ("logit", "h[1].attn.att", "h[0].attn.score"):
        assert np.array_equal(sheet.values(name), fresh.values(name)), name
    for _ in range(3):
        sheet.undo()
    assert sheet.engine.cap == 16 and sheet.T == 15
    assert np.array_equal(sheet.values("logit"), model.sheet(text).values("logit"))


# -- notebook and REPL ----------------------------------------------------------------------------
def _shown_objects():
    from dfgpt.analysis.attribution import direct_attribution

    model = dfgpt.load("sort")
    s = model.sheet("CABACA")
    return {
        "Sheet": s,
        "Gradient": s.grad("logit[5][A]"),
        "Provenance": s.provenance("logit[5][A]"),
        "Influence": s.influence("logit[5][A]", top=3),
        "Attribution": direct_attribution(s, "logit[5][A]"),
        "TaskScore": model.sheet("CABACA").task_score(),
        "Generation": model.generate("CBABBC", max_new_tokens=2, steps=True),
        "Receipt": s.set("wpe[2][1]", 0.5),
    }


def test_every_result_has_a_short_repr_and_a_notebook_table():
    for kind, obj in _shown_objects().items():
        text = repr(obj)
        assert text.startswith(kind) and len(text) < 120 and "0x" not in text, text
        page = obj._repr_html_()
        assert page.startswith(("<table", "<pre")) and "&lt;" not in page[:5], kind
    shown = _shown_objects()
    assert "logit[5][A] = +7.50369" in shown["Influence"]._repr_html_()
    assert "729/729" in shown["TaskScore"]._repr_html_()


# -- checkpoints as nanoGPT writes them, and odd ones ---------------------------------------------
torch = pytest.importorskip("torch")
SORT_ARGS = {"n_layer": 3, "n_head": 3, "n_embd": 48, "block_size": 11, "vocab_size": 3, "bias": True, "dropout": 0.0}


def _ckpt(tmp_path, model: object, args: object, name: str = "ckpt.pt"):
    path = tmp_path / name
    torch.save({"model": model, "model_args": args}, path)
    return str(path)


def _sort_tensors(dtype=None):
    out = {k: torch.tensor(np.array(v)) for k, v in dfgpt.load("sort").state_dict().items()}
    return {k: v.to(dtype) for k, v in out.items()} if dtype is not None else out


def test_an_untied_nanogpt_checkpoint_keeps_its_head(tmp_path):
    sort = dfgpt.load("sort")
    m = dfgpt.load(_ckpt(tmp_path, _sort_tensors(), {**SORT_ARGS, "gelu": "tanh"}))
    assert m.n_params == sort.n_params == 85_728 and not m.config.tied
    assert m.sheet([2, 0, 1, 0, 2, 0]).value("logit[5][0]") == pytest.approx(sort.sheet("CABACA").value("logit[5][A]"),
                                                                        abs=1e-5)
    tied = _sort_tensors()
    tied["lm_head.weight"] = tied["transformer.wte.weight"].clone()  # nanoGPT saves a tied head twice, equal
    assert dfgpt.load(_ckpt(tmp_path, tied, SORT_ARGS, "tied.pt")).config.tied


def test_a_bfloat16_checkpoint_loads_upcast(tmp_path):
    m = dfgpt.load(_ckpt(tmp_path, _sort_tensors(torch.bfloat16), {**SORT_ARGS, "gelu": "tanh"}))
    assert m.n_params == 85_728
    assert m.sheet([2, 0, 1, 0, 2, 0]).value("logit[5][0]") == pytest.approx(7.5, abs=0.5)  # bfloat16: ~3 digits


@pytest.mark.parametrize("model, args, words", [
    (torch.zeros(3), SORT_ARGS, "'model' must be a state dict"),
    ({}, {}, "lacks 'n_layer'"),
    ({}, {**SORT_ARGS, "gelu": "relu"}, "gelu must be"),
])
def test_odd_nanogpt_checkpoints_are_typed_errors(tmp_path, model, args, words):
    with pytest.raises(DfgptError, match=words):
        dfgpt.load(_ckpt(tmp_path, model, args))


def test_a_deeply_nested_or_mistyped_config_is_a_typed_error(tmp_path):
    folder = tmp_path / "m"
    dfgpt.load("sort-random").save(folder)
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DfgptError, match="nested too deeply"):
        dfgpt.load(str(folder))
    dfgpt.load("sort-random").save(tmp_path / "t")
    cfg = (tmp_path / "t" / "config.json").read_text().replace('"tied": false', '"tied": "false"')
    (tmp_path / "t" / "config.json").write_text(cfg)
    with pytest.raises(DfgptError, match="tied must be true or false"):
        dfgpt.load(str(tmp_path / "t"))


# -- values that are not numbers, and the sampler at the edge --------------------------------------
@pytest.mark.parametrize("value, words", [
    (np.timedelta64(3), "expected a number"),
    (np.ma.masked, "masked value"),
    (float("nan"), "NaN is not a value"),
])
def test_edits_refuse_values_that_are_not_numbers(value, words):
    s = dfgpt.load("sort-random").sheet("CABACA")
    before = s.value("wpe[2][1]")
    with pytest.raises(DfgptError, match=words):
        s.set("wpe[2][1]", value)
    assert s.value("wpe[2][1]") == before and s.engine.revision == 0


def test_a_tiny_temperature_is_greedy():
    model = dfgpt.load("sort")
    assert model.generate("CBABBC", max_new_tokens=6, temperature=1e-310, seed=0) == "ABBBCC"


@pytest.mark.parametrize("prompt", [123, None, 4.5])
def test_a_prompt_is_a_text_or_ids(prompt):
    with pytest.raises(DfgptError, match="a prompt is a text or a list of token ids"):
        dfgpt.load("sort").generate(prompt)


def test_config_without_a_vocabulary_is_a_typed_error():
    with pytest.raises(DfgptError, match="vocab must be a sequence"):
        dfgpt.Config(vocab=None)
    assert dfgpt.Config(vocab_size=50257).n_embd == 768  # GPT-2 small's sizes by default, as nanoGPT


def test_an_export_is_named_for_its_format(tmp_path):
    s = dfgpt.load("sort-random").sheet("CAB")
    with pytest.raises(DfgptError, match="does not end in .xlsx"):
        s.to_xlsx(tmp_path / "x.csv", progress=False)
    with pytest.raises(DfgptError, match="does not end in .npz"):
        s.to_npz(tmp_path / "x.xlsx")
    assert not list(tmp_path.iterdir())


# -- the command line -----------------------------------------------------------------------------
def _cli(capsys, *argv):
    from dfgpt.cli import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("argv", [
    ["run", "--text", "BBCAAC"], ["run", "BBCAAC"], ["generate", "--text", "CBABBC"], ["generate", "CBABBC"],
    ["formula", "logit[5][A]", "--text", "BBCAAC"], ["why", "logit[5][A]", "--top", "1", "--text", "BBCAAC"],
])
def test_every_verb_takes_its_input_as_text(capsys, argv):
    code, out, err = _cli(capsys, *argv)
    assert code == 0 and not err and ("BBCAAC" in out or "CBABBC" in out or "logit[5][A]" in out)


def test_version_and_no_verb(capsys):
    with pytest.raises(SystemExit) as e:
        _cli(capsys, "--version")
    assert e.value.code == 0 and capsys.readouterr().out.startswith("dfgpt 0.")
    code, out, _ = _cli(capsys)
    assert code == 0 and "why" in out and "generate" in out and "VERB" in out


def test_sampling_flags_sample_at_temperature_one(capsys):
    code, out, _ = _cli(capsys, "generate", "CABACA", "--top-k", "2", "--seed", "0", "--steps",
                        "--max-new-tokens", "2")
    assert code == 0 and out.startswith("sampled at temperature 1, top-k 2")
    assert "from A:" in out and "B:" not in out.splitlines()[1]  # top-k 2 keeps A and C only


def test_errors_speak_cli(capsys):
    code, _, err = _cli(capsys, "run", "CABACABCABCAB")
    assert code == 2 and "--crop" in err and "crop=True" not in err
    code, _, err = _cli(capsys, "generate", "CBABBC", "--max-new-tokens", "8")
    assert code == 2 and "pass --crop" in err


def test_nothing_is_silent(capsys):
    code, out, _ = _cli(capsys, "precedents", "wte[A][0]")
    assert code == 0 and "wte[A][0]: no precedents: it is a parameter" in out
    code, out, _ = _cli(capsys, "why", "lm_head.w[A][26]")
    assert code == 0 and "no cells to rank for lm_head.w[A][26]" in out and "top 0" not in out


def test_draw_attention_reads_its_target(capsys):
    code, out, _ = _cli(capsys, "draw", "h[1].attn", "--level", "attention")
    assert code == 0 and "h[1].attn.att[2]" in out and "h[0].attn" not in out and "h[2].attn" not in out
    code, _, err = _cli(capsys, "draw", "logit[5][A]", "--level", "attention")
    assert code == 2 and "one block" in err


def test_query_verbs_print_json(capsys):
    import json

    s = dfgpt.load("sort").sheet("CABACA")
    _, out, _ = _cli(capsys, "formula", "logit[5][A]", "--json")
    got = json.loads(out)
    assert got["value"] == s.value("logit[5][A]") and got["formula"] == s.formula("logit[5][A]")
    assert got["precedents"] == s.precedents("logit[5][A]") and got["kind"] == "computed"
    _, out, _ = _cli(capsys, "why", "logit[5][A]", "--top", "3", "--json")
    got = json.loads(out)
    assert [t["cell"] for t in got["top"]] == [it.cell for it in s.influence("logit[5][A]", top=3)]
    _, out, _ = _cli(capsys, "run", "CAB", "--json")
    assert np.allclose(json.loads(out)["logits"], dfgpt.load("sort").sheet("CAB").values("logit"), rtol=0, atol=0)


@pytest.mark.parametrize("kw, words", [
    ({"ln_eps": float("inf")}, "ln_eps must be a finite positive number"),
    ({"ln_eps": "x"}, "ln_eps must be a finite positive number"),
    ({"vocab": (1, 2)}, "vocab holds token texts"),
])
def test_config_fields_are_checked(kw, words):
    with pytest.raises(DfgptError, match=words):
        dfgpt.Config(**{"n_layer": 1, "n_head": 1, "n_embd": 4, "block_size": 4, "vocab": ("a", "b"), **kw})
    with pytest.raises(DfgptError, match="a config is a dict"):
        dfgpt.Config.from_dict(None)  # type: ignore[arg-type]


def test_a_model_with_only_a_vocabulary_size_summarises_its_cone():
    cfg = Config(n_layer=1, n_head=1, n_embd=4, block_size=8, vocab_size=5, name="ids")
    s = dfgpt.Model(cfg, random_params(cfg)).sheet([1, 2, 3])
    assert "(tokens 1 2 3)" in s.provenance("logit[2][1]").summary()


def test_a_model_made_without_its_parameters_is_refused():
    cfg = Config(n_layer=1, n_head=1, n_embd=4, block_size=8, vocab_size=5, name="ids")
    with pytest.raises(StateDictError, match="missing wte, wpe"):
        dfgpt.Model(cfg, {})
