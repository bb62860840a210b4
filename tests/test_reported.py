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
