"""What-if edits: receipts, exact stale cones, undo/redo, appends, bad input, task score, CLI."""

import itertools
import os
import sys
from collections import Counter

import numpy as np
import pytest

import dfgpt
from dfgpt.cli import main
from dfgpt.errors import DfgptError, EditError, IndexError_, SequenceLengthError, TokenError, UnknownNameError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference import forward

MODEL = dfgpt.load("sort-random")


def ref_logits(sheet):
    """Logits of the sheet's current weights and tokens from the independent numpy reference."""
    cfg = sheet.config.to_dict()
    return forward(sheet.state_dict(), cfg, sheet.tokens)["logits"]


def snapshot(sheet):
    eng = sheet.engine
    arrays = {f"v:{k}": v.copy() for k, v in eng.values.items()}
    arrays |= {f"ver:{k}": v.copy() for k, v in eng.verified.items()}
    arrays |= {f"ch:{k}": v.copy() for k, v in eng.changed.items()}
    arrays |= {f"st:{k}": v.copy() for k, v in eng.stale.items()}
    scalars = (eng.T, eng.revision, dict(eng.counts), dict(eng.reused), dict(eng.cutoff),
               dict(eng.total_recomputed), {k: dict(v) for k, v in eng.pins.items()}, set(eng.owned),
               dict(eng.param_changed))
    log = sheet.__dict__.get("_edit_log")
    return arrays, scalars, (len(log.undo), len(log.redo)) if log else None


def assert_same(a, b):
    assert a[0].keys() == b[0].keys()
    for k in a[0]:
        assert np.array_equal(a[0][k], b[0][k]), k
    assert a[1:] == b[1:]


def test_stale_cone_is_exact_descendants_and_covers_every_change():
    s = MODEL.sheet("CABACA")
    before = {t: s.values(t).copy() for t in s.graph.computed}
    cell = "h[1].attn.c_attn.w[50][3]"  # a key weight of head 0 in layer 1
    r = s.set(cell, 0.9)
    tensor, idx = s.cell(cell)
    seed = np.zeros(s.engine.shape(tensor), bool)
    seed[idx] = True
    cone = s.engine.descendants({tensor: seed})
    want = {k: int(m.sum()) for k, m in cone.items() if s.graph.specs[k].kind == "computed"}
    assert r.stale_by_tensor == want and r.stale == sum(want.values())
    assert "h[0].attn.q" not in want and "h[1].attn.q" not in want and "h[1].attn.k" in want
    # every stale cell reports 'stale' before the read, 'fresh' after
    assert s.state("h[1].attn.k[0][4][2]") == "stale" and s.state("h[1].attn.k[0][4][3]") == "fresh"
    after = {t: s.values(t) for t in s.graph.computed}
    assert s.state("h[1].attn.k[0][4][2]") == "fresh"
    for t in s.graph.computed:
        changed = after[t] != before[t]
        inside = cone.get(t, np.zeros_like(changed))
        assert not (changed & ~inside).any(), t  # perturbation: nothing outside the cone moves
    assert (after["h[1].attn.k"] != before["h[1].attn.k"]).sum() == cone["h[1].attn.k"].sum()
    assert np.allclose(after["logit"], ref_logits(s), atol=1e-10)


def test_receipt_figures_against_reference():
    s = MODEL.sheet("CABACA")
    old = s.values("logit").copy()
    r = s.set("h[2].mlp.c_proj.w[7][30]", 4.0)
    assert r.recomputed == 0 and r.computed_first == 0
    r.settle()
    new = ref_logits(s)
    assert r.max_change["logit"] == pytest.approx(np.abs(new - old).max(), abs=1e-10)
    assert r.flipped == bool((new.argmax(1) != old.argmax(1)).any())
    assert r.recomputed == sum(r.recomputed_by_tensor.values()) > 0
    assert r.reused > 0
    assert "recomputed" in str(r) and "largest change" in str(r)
    # counts since the edit per tensor: one MLP output column feeds the residual, every row
    assert r.recomputed_by_tensor["h[2].mlp.out"] == 6 * 48
    assert "h[2].mlp.fc" not in r.recomputed_by_tensor and "h[1].out" not in r.recomputed_by_tensor
    # the probabilities were never read before the edit: computed for the first time, not recomputed
    assert s.engine.counts == Counter(r.recomputed_by_tensor) + Counter(r.computed_first_by_tensor)
    assert set(r.computed_first_by_tensor) == {"prob", "logit_max", "exp_sum"}
    # a later edit freezes the earlier receipt
    frozen = r.recomputed
    s.set("wpe[0][0]", 1.0)
    s.values("logit")
    assert r.recomputed == frozen


def test_last_block_and_append_recompute_less_than_wpe_edit():
    def cost(edit):
        s = MODEL.sheet("CABACA")
        s.values("prob")
        r = edit(s)
        s.values("prob")
        return r.recomputed

    wpe = cost(lambda s: s.set("wpe[0][0]", 0.7))
    last = cost(lambda s: s.set("h[2].mlp.c_fc.w[3][5]", 0.7))
    app = cost(lambda s: s.append("B"))
    assert 0 < last < wpe and 0 < app < wpe / 2


def test_append_keeps_earlier_rows_and_matches_reference():
    s = MODEL.sheet("CAB")
    s.values("logit")
    r = s.append("C")
    s.values("logit")
    assert s.text == "CABC"
    assert r.max_change["logit"] == 0.0 and r.flipped is False
    assert r.recomputed_by_tensor["logit"] == 3  # one new row of 3 logits
    assert np.allclose(s.values("logit"), ref_logits(s), atol=1e-10)
    # the append's cone, as counted on the receipt, is exactly the descendants of the new token
    seed = np.zeros(s.T, bool)
    seed[-1] = True
    cone = s.engine.descendants({"tokens": seed})
    assert r.stale_by_tensor == {k: int(m.sum()) for k, m in cone.items() if k != "tokens"}
    s.append(2)
    assert s.text == "CABCC"
    s.undo()
    s.undo()
    assert s.text == "CAB" and np.array_equal(s.values("logit"), MODEL.sheet("CAB").values("logit"))
    full = MODEL.sheet("CABACABACAB")
    with pytest.raises(SequenceLengthError, match="block_size 11"):
        full.append("A")


def test_undo_redo_bit_for_bit_and_states():
    s = MODEL.sheet("CABACA")
    base = {t: s.values(t).copy() for t in ("logit", "prob", "h[0].attn.att", "h[2].out")}
    assert s.state("wte[A][0]") == "fresh" and s.state("logit[5][A]") == "fresh"
    s.set_many({"tokens[1]": "C", "wte[A][0]": -1.0, "temperature": 0.5})
    assert s.text == "CCBACA" and s.state("wte[A][0]") == "edited" and s.state("logit[5][A]") == "stale"
    s.set("h[0].attn.att[1][4][2]", 0.25)
    assert s.state("h[0].attn.att[1][4][2]") == "pinned"
    assert s.value("h[0].attn.att[1][4][2]") == 0.25
    edited = s.values("logit").copy()
    s.unpin("h[0].attn.att[1][4][2]")
    assert s.state("h[0].attn.att[1][4][2]") == "stale"
    s.undo()  # the unpin
    assert s.value("h[0].attn.att[1][4][2]") == 0.25 and np.array_equal(s.values("logit"), edited)
    s.undo()
    s.undo()
    assert s.text == "CABACA" and s.state("wte[A][0]") == "fresh"
    for t, v in base.items():
        assert np.array_equal(s.values(t), v), t
    with pytest.raises(EditError, match="nothing to undo"):
        s.undo()
    s.redo()
    assert s.text == "CCBACA" and float(s.value("temperature")) == 0.5
    s.set("wpe[3][3]", 0.0)
    with pytest.raises(EditError, match="nothing to redo"):
        s.redo()
    unset = MODEL.sheet("CABACA")
    assert unset.state("logit[5][A]") == "unset"


@pytest.mark.parametrize(
    "edits, error, words",
    [
        ({"wpe[0][0]": float("nan")}, EditError, "finite"),
        ({"wpe[0][0]": float("inf")}, EditError, "finite"),
        ({"wpe[0][0]": "0.5"}, EditError, "expected a number"),
        ({"wpe[0][0]": None}, EditError, "expected a number"),
        ({"wpe[0][0]": True}, EditError, "expected a number"),
        ({"h[0].mlp.fc[2][3]": -np.inf}, EditError, "finite"),
        ({"wpx[0][0]": 1.0}, UnknownNameError, "wpe"),
        ({"wpe[0]": 1.0}, IndexError_, "more than one cell"),
        ({"wpe[99][0]": 1.0}, IndexError_, "out of range"),
        ({"tokens[1]": "Z"}, TokenError, "vocabulary"),
        ({"tokens[1]": 3}, TokenError, "0..2"),
        ({"tokens[1]": 1.0}, TokenError, "integer id"),
        ({"temperature": -0.5}, EditError, ">= 0"),  # 0 is greedy (allowed); below it is not
        ({"h[0].attn.att[0][1][4]": 0.5}, EditError, "causal mask"),
        ({"wpe[0][0]": 0.5, "tokens[2]": "B", "wte[A][1]": float("nan")}, EditError, "wte\\[A\\]\\[1\\]"),
        ({}, EditError, "non-empty"),
    ],
)
def test_bad_input_leaves_the_sheet_exactly_as_before(edits, error, words):
    s = MODEL.sheet("CABACA")
    s.value("logit[3]")
    s.set("wpe[1][1]", 0.5)  # an earlier edit on the log, and stale cells
    before = snapshot(s)
    with pytest.raises(error, match=words) as e:
        s.set_many(edits)
    assert isinstance(e.value, DfgptError)
    assert_same(snapshot(s), before)


def test_bad_undo_unpin_append_leave_sheet_unchanged():
    s = MODEL.sheet("CABACA")
    s.values("logit")
    before = snapshot(s)
    for call, error in [(s.undo, EditError), (s.redo, EditError), (lambda: s.unpin("logit[2][A]"), EditError),
                        (lambda: s.append("Q"), TokenError), (lambda: s.append(5), TokenError)]:
        with pytest.raises(error):
            call()
        assert_same(snapshot(s), before)


def test_to_model_and_checkpoint_round_trip(tmp_path):
    s = MODEL.sheet("CABACA")
    s.set_many({"h[0].ln_1.g[3]": 2.0, "lm_head.w[B][7]": -0.5})
    m = s.to_model()
    assert m.params["h[0].ln_1.g"][3] == 2.0 and MODEL.params["h[0].ln_1.g"][3] != 2.0
    m.save(tmp_path / "edited")
    back = dfgpt.load(str(tmp_path / "edited"))
    assert np.array_equal(back.sheet("CABACA").values("logit"), s.values("logit"))
    assert s.state_dict()["lm_head.weight"][1, 7] == -0.5


def _brute_sort(sheet, inputs):
    """Greedy decoding with the independent reference, one input at a time."""
    cfg, state = sheet.config.to_dict(), sheet.state_dict()
    out = []
    for text in inputs:
        ids = ["ABC".index(c) for c in text]
        for _ in range(6):
            ids.append(int(forward(state, cfg, ids)["logits"][-1].argmax()))
        out.append("".join("ABC"[i] for i in ids[6:]))
    return out


def test_task_score_matches_brute_force():
    s = MODEL.sheet("CABACA")
    base = s.task_score()
    assert base.total == 729
    s.set("h[2].mlp.c_proj.w[3][4]", 3.0)
    s.set("lm_head.w[A][5]", 2.0)
    score = s.task_score()
    rng = np.random.default_rng(0)
    everything = ["".join(p) for p in itertools.product("ABC", repeat=6)]
    sample = [everything[i] for i in rng.choice(729, 15, replace=False)]
    got = dict(b.split(" -> ") for b in score.broken)
    for text, out in zip(sample, _brute_sort(s, sample)):
        ok = out == "".join(sorted(text))
        assert (text not in got) == ok, text
        if not ok:
            assert got[text] == out
    assert score.correct == 729 - len(score.broken) and 0 <= score.accuracy <= 1
    base_broken = {b.split(" -> ")[0] for b in base.broken}
    assert {b.split(" -> ")[0] for b in score.newly_broken} == {b.split(" -> ")[0] for b in score.broken} - base_broken


def test_task_score_needs_the_sort_vocabulary():
    with pytest.raises(DfgptError, match="sort task"):
        dfgpt.load("aab").sheet("aab").task_score()


def test_cli_set(capsys):
    assert main(["set", "h[2].mlp.c_proj.w[0][0]", "0.5", "--model", "sort-random", "--score"]) == 0
    out = capsys.readouterr().out
    assert "marked stale" in out and "recomputed" in out and "/729" in out
    assert main(["set", "tokens[2]", "C", "--model", "sort-random"]) == 0
    out = capsys.readouterr().out
    assert "tokens[2] = 'C' (was 'B')" in out and "largest change: logit" in out and "cut-off" in out
    assert main(["set", "wpe[0][0]", "abc", "--model", "sort-random"]) == 2
    assert "expected a number" in capsys.readouterr().err


def test_cli_set_scores_a_file_of_inputs_before_and_after(tmp_path, capsys):
    path = tmp_path / "inputs.jsonl"
    path.write_text('"CABACA"\n"ABCCBA"\n"BBACAC"\n')
    assert main(["set", "lm_head.w[A][26]", "-5", "--score", "--inputs", str(path)]) == 0
    out = capsys.readouterr().out
    # the same scores as the Python API gives for the same inputs, before and after the edit
    s = dfgpt.load("sort").sheet("CABACA")
    before = dfgpt.task_score(s, str(path))
    s.set("lm_head.w[A][26]", -5)
    after = dfgpt.task_score(s, str(path))
    assert f"before: {before}" in out and f"after:  {after}" in out
    assert (before.correct, after.correct, after.total) == (3, 0, 3)
    assert main(["set", "lm_head.w[A][26]", "-5", "--inputs", str(path)]) == 2  # --inputs without --score
    assert "add --score" in capsys.readouterr().err
