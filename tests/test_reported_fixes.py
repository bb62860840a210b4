"""Issue 28's wrong answers and daily-workflow fixes in the analysis and CLI layers: one test per item."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import dfgpt
from dfgpt.analysis.attribution import direct_attribution
from dfgpt.cli import main
from dfgpt.errors import DfgptError, QueryError, TokenError


# -- item 5: the sweep table's columns ------------------------------------------------------------
def _spans(line: str) -> list[tuple[int, int]]:
    """The [start, end) character range of each space-separated word of a line."""
    out, i = [], 0
    for word in line.split():
        i = line.index(word, i)
        out.append((i, i + len(word)))
        i += len(word)
    return out


def test_each_sweep_value_sits_under_its_own_position_label():
    m = dfgpt.load("sort")
    for over, lead in (("resid_pre", 1), ("head_out", 2)):  # row labels "L0" and "L0 H0"
        r = dfgpt.sweep(m.sheet("CABACAAAA"), m.sheet("CACACAAAA"), "logit_diff:B,C", over=over)
        lines = r.table(width=None).splitlines()  # one panel: every position on one line
        labels = _spans(lines[1])[2:]  # "position", "→", then one label per position
        want = ["0:C", "1:A", "2:B/C", "3:A", "4:C", *(f"{t}:A" for t in range(5, 9))]
        assert [lines[1][a:b] for a, b in labels] == want
        for row, values in zip(lines[2:], r.values.reshape(-1, 9)):
            cols = _spans(row)[lead:]
            assert len(cols) == 9
            for j, ((a, b), (c, d)) in enumerate(zip(cols, labels)):
                assert a < d and c < b, f"{over}: the value of position {j} is not under its label:\n{r.table()}"
                assert float(row[a:b]) == round(float(values[j]), 3)
    resid = dfgpt.sweep(m.sheet("CABACAAAA"), m.sheet("CACACAAAA"), "logit_diff:B,C", over="resid_pre")
    row0 = resid.table().splitlines()[2]
    two = next(span for span in _spans(row0)[1:] if row0[span[0]:span[1]] == "+12.503")  # the letter's patch
    head = resid.table().splitlines()[1]
    assert head[two[0]:two[1]].strip().endswith("B/C")


# -- item 6: a wildcard reads as one array ----------------------------------------------------------
def test_a_wildcard_over_layers_reads_as_one_stacked_array():
    s = dfgpt.load("sort").sheet("CABACA")
    att = s.values("h[*].attn.att")
    assert att.shape == (3, 3, 6, 6) and att.dtype == np.float64  # [layer, head, T, T]
    for layer in range(3):
        assert np.array_equal(att[layer], s.values(f"h[{layer}].attn.att"))
    one = s.value("h[*].attn.att[1][5][0]")
    assert one.shape == (3,) and one[2] == s.value("h[2].attn.att[1][5][0]")
    np.testing.assert_allclose(att.sum(axis=-1), 1.0, rtol=0, atol=1e-12)  # arithmetic works: each row sums to 1
    with pytest.raises(DfgptError, match=r"different shapes .* sheet.tensors\('h\[0\]'\)"):
        s.value("h[0]")  # a block's tensors have many shapes: refused, with how to read them


# -- item 7: why --by head --json -----------------------------------------------------------------------
def test_why_by_head_json_carries_the_head_groups_and_the_direct_attribution(capsys):
    assert main(["why", "logit[5][A]", "--text", "CABACA", "--by", "head", "--top", "4", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    s = dfgpt.load("sort").sheet("CABACA")
    heads = s.influence("logit[5][A]").by_head()[:4]
    assert got["groups"]["by"] == "head"
    rows = [(r["key"], r["cells"], r["sum"]) for r in got["groups"]["rows"]]
    assert rows == [(g.key, g.cells, g.score) for g in heads]
    direct = direct_attribution(s, "logit[5][A]")
    assert [p["value"] for p in got["direct_attribution"]["parts"]] == [p.value for p in direct]
    assert got["direct_attribution"]["sum"] == direct.total and abs(direct.total - got["value"]) < 1e-12
    assert main(["why", "logit[5][A]", "--text", "CABACA", "--by", "position", "--json"]) == 0
    by_pos = json.loads(capsys.readouterr().out)
    assert [r["key"] for r in by_pos["groups"]["rows"]][:1] and "direct_attribution" not in by_pos


# -- item 8: the lens's last layer is the sheet's logits ------------------------------------------------
def test_the_lens_last_layer_is_the_sheets_own_logits_bit_for_bit_pins_included():
    s = dfgpt.load("sort").sheet("CABACAAAA")
    lens = dfgpt.logit_lens(s)
    assert np.array_equal(lens.logits[-1], s.values("logit"))  # not a second ln_f of h[2].out (8.9e-16 off)
    s.set("ln_f.out[8][0]", 3.0)  # a pinned ln_f cell moves the sheet's logits: the lens shows them
    pinned = dfgpt.logit_lens(s)
    assert np.array_equal(pinned.logits[-1], s.values("logit"))
    assert not np.array_equal(pinned.logits[-1], lens.logits[-1])
    assert np.array_equal(pinned.logits[:-1], lens.logits[:-1])  # the lens's own readings do not see the pin
    assert repr(lens) == "Lens('CABACAAAA', emb + 3 blocks × 9 positions, target: final prediction)"
    lines = lens.table().splitlines()
    assert lines[1].index("8:A") + 3 == len(lines[1]) == len(lines[-1]) and lines[-1].startswith("h[2] ")
    assert "<table" in lens._repr_html_() and "h[2]" in lens._repr_html_()


# -- item 9: arguments that were ignored silently ---------------------------------------------------------
def test_a_zero_ablation_refuses_a_reference_and_a_metric_refuses_two_positions():
    m = dfgpt.load("sort")
    s = m.sheet("CABACA")
    before = s.values("logit")
    with pytest.raises(QueryError, match="how='zero' takes none"):
        s.ablate("h[2].attn.out[5]", how="zero", reference=["AAAAAA"])
    assert np.array_equal(s.values("logit"), before) and not s.engine.pins
    with pytest.raises(QueryError, match=r"reads position 3 but position=5"):
        dfgpt.sweep(m.sheet("CABACA"), m.sheet("CABACC"), "logit_diff:A,C@3", position=5)
    same = dfgpt.sweep(m.sheet("CABACA"), m.sheet("CABACC"), "logit_diff:A,C@-1", position=5)  # one position
    assert same.metric == "logit_diff:A,C@5"


# -- item 12: typed errors where raw exceptions escaped -------------------------------------------------
@pytest.mark.parametrize("result", [None, "0.5", np.ones(3), 1j])
def test_a_callable_metric_that_returns_no_real_number_is_a_typed_error(result):
    m = dfgpt.load("sort")
    with pytest.raises(QueryError, match=r"metric '<lambda>' returned .* expected one real number"):
        dfgpt.sweep(m.sheet("CABACA"), m.sheet("CABACC"), lambda s: result, over="resid_pre")


def test_a_callable_metric_that_raises_is_wrapped_naming_the_metric_and_its_error():
    def gap(s):
        return 1 / 0

    m = dfgpt.load("sort")
    with pytest.raises(QueryError, match=r"metric 'gap' raised ZeroDivisionError: 'division by zero'") as got:
        dfgpt.sweep(m.sheet("CABACA"), m.sheet("CABACC"), gap, over="resid_pre")
    assert isinstance(got.value.__cause__, ZeroDivisionError)
    ok = dfgpt.sweep(m.sheet("CABACA"), m.sheet("CABACC"), lambda s: np.float32(s.value("logit[5][A]")))
    assert ok.clean == float(np.float32(m.sheet("CABACA").value("logit[5][A]")))


@pytest.mark.parametrize("spec", ["logit_diff:A,C@" + "9" * 5000, "logit:" + "9" * 5000, "logit:#" + "9" * 5000])
def test_a_metric_spec_with_a_5000_digit_number_is_a_typed_error(spec):
    m = dfgpt.load("sort")
    with pytest.raises(DfgptError, match=r"5,?0\d\d characters"):
        dfgpt.sweep(m.sheet("CABACA"), m.sheet("CABACC"), spec)


@pytest.mark.parametrize("seed", [-1, 1.5, "a", True])
def test_an_ablation_seed_that_is_no_natural_number_is_a_typed_error(seed):
    s = dfgpt.load("sort").sheet("CABACA")
    with pytest.raises(QueryError, match="seed must be an integer >= 0"):
        s.ablate("h[2].attn.out[5]", how="resample", reference=["AAAAAA"], seed=seed)
    assert not s.engine.pins


@pytest.mark.parametrize("given, advice", [("CABACA", "sheet('CABACA')"), (None, "sheet('CABACA')"),
                                           (dfgpt.load("sort"), "model.sheet(text)")])
def test_the_lens_of_something_other_than_a_sheet_is_a_typed_error(given, advice):
    with pytest.raises(QueryError, match=r"logit_lens takes a sheet.*" + re.escape(advice)):
        dfgpt.logit_lens(given)


def test_a_timedelta_token_is_a_typed_error_and_changes_nothing():
    s = dfgpt.load("sort").sheet("CABACA")
    with pytest.raises(TokenError, match="expected a token text or an integer id"):
        s.set("tokens[0]", np.timedelta64(1, "s"))
    assert s.tokens == [2, 0, 1, 0, 2, 0]


# -- item 13: a logit difference is a target everywhere -------------------------------------------------
def test_a_logit_difference_is_a_target_of_influence_grad_attribution_and_why(capsys):
    m = dfgpt.load("sort")
    s = m.sheet("CABACAAAA")
    want = s.value("logit[8][B]") - s.value("logit[8][C]")
    diff = s.influence("logit_diff:B,C", top=5)
    assert diff.target_value == want
    over = dfgpt.influence(m, ["CABACAAAA"], "logit_diff:B,C", top=5)  # the dataset form already worked
    assert [it.cell for it in diff] == [it.cell for it in over]
    np.testing.assert_allclose([it.score for it in diff], [it.score for it in over], rtol=1e-12, atol=1e-12)
    g, b, c = s.grad("logit_diff:B,C"), s.grad("logit[8][B]"), s.grad("logit[8][C]")
    assert g.value == want
    for t in ("wte", "h[1].attn.c_attn.w", "ln_f.var"):
        np.testing.assert_allclose(g.arrays[t], b.arrays[t] - c.arrays[t], rtol=0, atol=1e-12)
    at = s.grad("logit_diff:B,C@4")  # another position
    assert at.value == s.value("logit[4][B]") - s.value("logit[4][C]")
    parts = direct_attribution(s, "logit_diff:C,B")
    assert abs(parts.total + want) < 1e-12 and parts.logit == s.value("logit[8][C]") - s.value("logit[8][B]")
    assert main(["why", "logit_diff:B,C", "--text", "CABACAAAA", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert f"top 2 cells for logit_diff:B,C = {want:+.6g}" in out and "ln_f.var[8]" in out
    with pytest.raises(QueryError, match="a sweep metric, not a cell"):
        s.influence("kl")


# -- item 18: temperature 0 means greedy everywhere -----------------------------------------------------
def test_a_temperature_zero_sheet_is_greedy_one_hot_with_ties_to_the_lowest_id(capsys, tmp_path):
    m = dfgpt.load("sort")
    s = m.sheet("CABACA", temperature=0)
    logits = s.values("logit")
    want = np.zeros_like(logits)
    want[np.arange(6), logits.argmax(axis=1)] = 1.0
    assert np.array_equal(s.values("prob"), want) and np.array_equal(s.values("exp_sum"), np.ones(6))
    assert np.array_equal(s.values("logit"), m.sheet("CABACA").values("logit"))  # nothing else moves
    s.set("logit[5][C]", s.value("logit[5][A]"))  # a tie between A (id 0) and C (id 2): the lowest id wins
    assert s.value("prob[5]").tolist() == [1.0, 0.0, 0.0]
    assert "first largest" in s.formula("prob[5][A]")
    g = m.sheet("CABACA", temperature=0).grad("prob[5][A]")
    assert g.value == 1.0 and g.tensors() == ["prob"]  # a step function: nothing flows back
    assert main(["run", "CABACA", "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    assert "temperature 0 (greedy" in out and "A: logit +7.5037 p 1.0000" in out
    with pytest.raises(DfgptError, match="temperature 0 .* #DIV/0!"):
        m.sheet("CABACA", temperature=0).to_xlsx(tmp_path / "t0.xlsx")
    for bad in (-1.0, float("nan"), float("inf"), True, "0"):
        with pytest.raises(DfgptError, match="temperature must be a finite number >= 0"):
            m.sheet("CABACA", temperature=bad)
    clean, corrupted = m.sheet("CABACAAAA", temperature=0), m.sheet("CACACAAAA", temperature=0)
    r = dfgpt.sweep(clean, corrupted, "prob:B", over="resid_pre")
    assert (r.clean, r.corrupted) == (1.0, 0.0) and r.values[0].tolist()[:3] == [0.0, 0.0, 1.0]


# -- item 17: tokens spelled one way ----------------------------------------------------------------------
def test_a_bpe_token_is_spelled_one_way_and_accepted_in_every_spelling(hf_dir, capsys):
    model = dfgpt.load(str(hf_dir[0]))
    s = model.sheet("the cat —")  # '—' is three bytes: BPE splits it into tokens that are no character alone
    cat = s.tokens[1]
    assert model.vocab[cat] == "Ġcat" and model.token_text(cat) == s.token_label(cat) == "␣cat"
    assert "wte[␣cat][0]" in s.precedents("emb[1][0]") and not any("Ġ" in c for c in s.cells("logit[1]"))
    for spelling in ("␣cat", "Ġcat", str(cat)):
        assert s.value(f"logit[1][{spelling}]") == s.values("logit")[1, cat]
    shown = [model.token_text(t) for t in s.tokens]
    assert all("\ufffd" not in t for t in shown) and any(t.startswith("<0x") for t in shown)
    assert main(["run", "--model", str(hf_dir[0]), "the cat —", "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert "pos  1 '␣cat' ->" in out and "Ġ" not in out and "\ufffd" not in out.split("\n", 2)[2]
    for spelling in ("Ġcat", "␣cat", " cat"):
        receipt = s.set("tokens[0]", spelling)
        assert s.tokens[0] == cat and "'␣cat'" in str(receipt)
    r = dfgpt.sweep(model.sheet("the cat"), model.sheet("the mat"), "logit_diff:Ġcat,␣mat")
    assert r.metric == "logit_diff:␣cat,␣mat@1"


# -- item 20: the smaller things ---------------------------------------------------------------------------
def test_index_and_name_errors_are_named_for_users_and_are_builtin_errors_too():
    from dfgpt.errors import BadIndexError, BadNameError, IndexError_, NameError_, UnknownNameError

    s = dfgpt.load("sort").sheet("CABACA")
    with pytest.raises(IndexError) as got:
        s.value("logit[9][A]")
    assert type(got.value).__name__ == "BadIndexError" and isinstance(got.value, DfgptError)
    with pytest.raises(NameError) as named:
        s.value("logit[5")
    assert type(named.value).__name__ == "BadNameError" and isinstance(named.value, DfgptError)
    assert (IndexError_, NameError_) == (BadIndexError, BadNameError) and issubclass(UnknownNameError, NameError)


def test_a_gradient_of_a_selection_says_it_is_of_the_sum():
    s = dfgpt.load("sort").sheet("CABACA")
    g = s.grad("logit[5]")
    assert repr(g).startswith("Gradient(∂Σ logit[5] (3 cells) = ")
    assert g.value == pytest.approx(float(s.values("logit")[5].sum()), rel=1e-15)
    assert repr(s.grad("logit[5][A]")).startswith("Gradient(∂logit[5][A] = ")


def test_notebook_html_keeps_the_themes_ink_on_pale_cells():
    m = dfgpt.load("sort")
    r = dfgpt.sweep(m.sheet("CABACAAAA"), m.sheet("CACACAAAA"), "logit_diff:B,C", over="resid_pre")
    page = r._repr_html_()
    assert "color:black" not in page and "color:inherit" in page and "color:white" in page  # dark cells: white


def test_setting_the_temperature_to_zero_is_greedy_like_a_temperature_zero_sheet():
    """Item 18, the edit road: `sheet.set("temperature", 0)` as `model.sheet(text, temperature=0)`."""
    model = dfgpt.load("sort")
    s = model.sheet("CABACA")
    before = s.value("prob[5]").copy()
    s.set("temperature", 0)
    assert s.value("prob[5]").tolist() == model.sheet("CABACA", temperature=0).value("prob[5]").tolist() == [1, 0, 0]
    s.undo()
    assert s.value("prob[5]").tobytes() == before.tobytes()
    with pytest.raises(dfgpt.DfgptError, match=">= 0"):
        s.set("temperature", -1)
