"""Issue 28's workflow items 15, 16, 19 and two leftovers of 20: one test per behaviour."""

from __future__ import annotations

import numpy as np
import pytest

import dfgpt

SORT = dfgpt.load("sort")


# -- item 16: receipts that read the same whatever was read before ------------------------------
def _before(sheet, reads: str) -> None:
    if reads == "one logit":
        sheet.value("logit[5][A]")
    elif reads == "everything":
        for name in sheet.graph.computed:
            sheet.values(name)


@pytest.mark.parametrize("edit", [
    lambda s: s.set("lm_head.w[A][26]", -5.0),
    lambda s: s.set("wpe[2][7]", 1.5),
    lambda s: s.set("tokens[3]", "C"),
    lambda s: s.set("h[1].out[4][3]", 2.0),
    lambda s: s.ablate("h[0].out[5]"),
    lambda s: s.set("logit[5][A]", -20.0),  # a pinned output row
], ids=["weight", "position", "token", "pin", "ablate", "output pin"])
def test_a_receipt_states_the_same_effect_on_the_outputs_whatever_was_read_before(edit):
    texts, effects = [], []
    for reads in ("nothing", "one logit", "everything"):
        s = SORT.sheet("CABACA")
        _before(s, reads)
        old = {n: s.values(n).copy() for n in ("logit", "prob")}
        r = edit(s)
        lines = str(r).splitlines()
        texts.append(lines[:3])  # the edit, its cone and its effect on the outputs
        effects.append((r.max_change, r.flipped))
        new = {n: s.values(n) for n in ("logit", "prob")}
        for n in ("logit", "prob"):
            assert r.max_change[n] == np.abs(new[n] - old[n]).max()  # the same numbers, bit for bit
        assert r.flipped == bool((new["logit"].argmax(1) != old["logit"].argmax(1)).any())
    assert texts[0] == texts[1] == texts[2]
    assert effects[0] == effects[1] == effects[2]
    assert "largest change: logit" in texts[0][2]


def test_a_receipt_separates_cells_recomputed_for_the_edit_from_cells_computed_for_the_first_time():
    counts = {}
    for reads in ("nothing", "one logit", "everything"):
        s = SORT.sheet("CABACA")
        _before(s, reads)
        r = s.set("lm_head.w[A][26]", -5.0).settle()
        counts[reads] = (r.recomputed, r.computed_first, r.reused)
        assert r.recomputed + r.computed_first == sum(s.engine.counts.values())
        assert f"recomputed {r.recomputed:,} for this edit, {r.computed_first:,} for the first time" in str(r)
    total = sum(int(np.prod(SORT.sheet("CABACA").engine.shape(t))) for t in SORT.graph.computed)
    assert counts["nothing"] == (0, total, 0)  # a fresh sheet: nothing held a value to recompute
    assert counts["everything"] == (48, 0, total - 48)  # the logits' rows and their softmax: the cone
    assert 0 < counts["one logit"][0] < 48 and counts["one logit"][1] > 0


def test_a_receipt_after_a_later_edit_keeps_the_effect_it_had_stated():
    s = SORT.sheet("CABACA")
    r = s.set("lm_head.w[A][26]", -5.0)
    text = str(r)
    s.set("wpe[0][0]", 1.0)
    s.values("logit")
    assert str(r) == text


def test_drawing_a_receipt_on_a_fresh_sheet_colours_only_the_edits_cone():
    from dfgpt.views.colors import COLORS
    s = SORT.sheet("CABACA")
    r = s.set("lm_head.w[A][26]", -5.0).settle()
    src = dfgpt.draw(r).source
    coloured = {line.split()[0].strip('"') for line in src.splitlines()
                if f'fillcolor="{COLORS["stale"]}"' in line or f'fillcolor="{COLORS["recomputed"]}"' in line}
    assert coloured == set(r.stale_by_tensor) == {"logit", "logit_max", "exp_sum", "prob"}
    assert "first computed" in src  # the rest is labelled, not coloured as the edit's work


def test_a_receipt_of_many_cells_summarises_them_on_one_short_line():
    s = SORT.sheet("CABACA")
    r = s.ablate("h[0].out[5]")
    first = str(r).splitlines()[0]
    assert first == "ablate zero: 48 cells (h[0].out 48); first h[0].out[5][0] = 0 (pinned), was computed"
    assert len(r.cells) == 48  # the field keeps every cell
    few = s.set_many({"wpe[0][0]": 0.5, "wpe[1][0]": 0.25})
    assert str(few).splitlines()[0] == "set: wpe[0][0] = 0.5, was -0.0151254, wpe[1][0] = 0.25, was 0.00121998"
