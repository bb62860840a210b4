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


# -- item 15: a Python callable metric on the fast path ------------------------------------------
PAIR = ("CABACAAAA", "CACACAAAA")


def _patched_one_by_one(r, metric):
    """Each site patched on a fresh corrupted sheet by `sheet.patch` (the engine's own recompute)."""
    out = np.full(r.values.shape, np.nan)
    for key, cells in r.cells.items():
        s = SORT.sheet(PAIR[1])
        s.patch(SORT.sheet(PAIR[0]), cells.split(", ") if ", " in cells else cells)
        out[key] = metric(s)
    return out


@pytest.mark.parametrize("over", ["resid_pre", "head_out", "mlp_out"])
def test_a_callable_metric_runs_on_the_fast_path_with_the_values_of_a_spec(over):
    def diff(s):
        return s.value("logit[8][1]") - s.value("logit[8][2]")

    clean, bad = SORT.sheet(PAIR[0]), SORT.sheet(PAIR[1])
    got = dfgpt.sweep(clean, bad, diff, over=over)
    spec = dfgpt.sweep(clean, bad, "logit_diff:B,C", over=over)
    assert got.fallback is None
    assert got.values.tobytes() == spec.values.tobytes()  # exact mode: bit for bit
    assert (got.clean, got.corrupted) == (spec.clean, spec.corrupted)


def test_a_callable_metric_reading_several_tensors_equals_patching_each_site():
    def mixed(s):
        return float(s.values("prob")[8, 1]) + s.value("h[1].out[8][3]") - s.value("logit[7][0]")

    r = dfgpt.sweep(SORT.sheet(PAIR[0]), SORT.sheet(PAIR[1]), mixed, over="resid_pre")
    assert r.fallback is None
    np.testing.assert_allclose(r.values, _patched_one_by_one(r, mixed), rtol=0, atol=1e-12)


def test_a_callable_that_reads_different_cells_on_the_two_runs_falls_back_to_pins_and_says_so():
    def by_token(s):  # the position read depends on the input: its reads cannot be replayed
        return s.value("logit[8][1]") if s.tokens[2] == 1 else s.value("logit[7][1]")

    r = dfgpt.sweep(SORT.sheet(PAIR[0]), SORT.sheet(PAIR[1]), by_token, over="resid_pre")
    assert r.fallback is not None and "different cells" in r.fallback
    np.testing.assert_allclose(r.values, _patched_one_by_one(r, by_token), rtol=0, atol=1e-12)


def test_a_site_whose_run_reads_beyond_the_recorded_cells_gets_its_value_from_pins():
    def branchy(s):  # above 6.57 (one patched site, not the clean or corrupted run) it reads one more cell
        b = s.value("logit[8][1]")
        return b + (s.value("logit[3][0]") if b > 6.57 else 0.0)

    r = dfgpt.sweep(SORT.sheet(PAIR[0]), SORT.sheet(PAIR[1]), branchy, over="resid_pre")
    assert r.fallback is not None and "sites ran on pins" in r.fallback
    want = _patched_one_by_one(r, branchy)
    assert abs(want[1, 8] - 6.583) > 1  # that site took the other branch (logit[8][B] is 6.583 there)
    np.testing.assert_allclose(r.values, want, rtol=0, atol=1e-12)


# -- item 19: sweep tables on small effects -------------------------------------------------------
def _panels(text: str, head_lines: int) -> list[list[str]]:
    """The panels of a sweep table: [header, row, row, ...] each."""
    body = text.splitlines()[head_lines:]
    out: list[list[str]] = [[]]
    for line in body:
        if line:
            out[-1].append(line)
        else:
            out.append([])
    return out


def _columns(line: str) -> list[tuple[int, int]]:
    spans, i = [], 0
    for word in line.split():
        i = line.index(word, i)
        spans.append((i, i + len(word)))
        i += len(word)
    return spans


@pytest.mark.parametrize("share", [False, True])
def test_a_sweep_table_fits_80_columns_with_each_value_under_its_label_in_every_panel(share):
    r = dfgpt.sweep(SORT.sheet(PAIR[0]), SORT.sheet(PAIR[1]), "logit_diff:B,C", over="head_out")
    text = r.table(share=share)
    assert max(len(line) for line in text.splitlines()) <= 80
    panels = _panels(text, 2 if share else 1)
    assert len(panels) == 2
    want = r.normalized() if share else r.values
    seen = []
    for panel in panels:
        head, rows = panel[0], panel[1:]
        labels = _columns(head)[2:]  # "position", "→", then the labels
        seen += [head[a:b] for a, b in labels]
        assert len(rows) == 9
        for k, row in enumerate(rows):
            cols = _columns(row)[2:]  # "L0", "H0", then the values
            assert len(cols) == len(labels)
            for (a, b), (c, d), pos in zip(cols, labels, range(len(seen) - len(labels), len(seen))):
                assert a < d and c < b  # under its label
                shown = float(row[a:b])
                assert shown == pytest.approx(float(want.reshape(9, 9)[k, pos]), abs=6e-4)
    assert seen == ["0:C", "1:A", "2:B/C", "3:A", "4:C", "5:A", "6:A", "7:A", "8:A"]
    assert len(r.table(share=share, width=None).splitlines()) == (2 if share else 1) + 1 + 9  # one panel


def test_a_sweep_table_of_small_effects_shows_decimals_that_tell_them_apart():
    from dfgpt.interventions.sweep import Sweep
    values = np.array([[1.0, 1.0 + 2.5e-5, 1.0 - 4.0e-5]])
    r = Sweep("resid_pre", "logit_diff:B,C@2", ("layer", "position"), ((0,), (0, 1, 2)), values, 1.0001, 1.0)
    row = r.table().splitlines()[2].split()
    assert row == ["L0", "+1.000000", "+1.000025", "+0.999960"]  # 6 decimals: two significant digits of 4e-5
    assert r.table(digits=3).splitlines()[2].split() == ["L0", "+1.000", "+1.000", "+1.000"]
    share = r.table(share=True).splitlines()[3].split()
    assert share == ["L0", "0.000", "0.250", "-0.400"]


def test_dfgpt_patch_shows_the_share_and_every_position_on_request(capsys):
    from dfgpt.cli import main
    args = ["patch", "--clean", PAIR[0], "--corrupted", PAIR[1], "--metric", "logit_diff:B,C"]
    assert main([*args, "--share", "--width", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("the share of the gap restored") and len(out[2].split()) == 2 + 9
    assert out[3].split()[3] == "1.000"  # layer 0, position 2: patching the letter restores the gap
    assert main(["patch", "--pairs", "x.jsonl", "--share"]) != 0
    assert "--share shows one pair's sweep" in capsys.readouterr().err


# -- item 20: a folder's model named from its config ----------------------------------------------
@pytest.mark.parametrize("fields, want", [
    ({"_name_or_path": "openai-community/gpt2"}, "openai-community/gpt2"),
    ({"_name_or_path": "/tmp/tmpab12cd/model"}, "my-gpt"),  # a path is where it was saved from
    ({"name": "toy", "_name_or_path": "openai-community/gpt2"}, "toy"),
    ({}, "my-gpt"),
])
def test_a_model_loaded_from_a_folder_is_named_from_its_config(hf_dir, tmp_path, fields, want):
    import json
    import shutil
    folder = tmp_path / "my-gpt"
    shutil.copytree(hf_dir[0], folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.pop("_name_or_path", None)
    cfg.update(fields)
    (folder / "config.json").write_text(json.dumps(cfg))
    assert dfgpt.load(folder).config.name == want


# -- item 19: a Hub name says where to point instead ----------------------------------------------
@pytest.mark.parametrize("name", ["gpt2", "gpt2-medium", "openai-community/gpt2", "distilgpt2"])
def test_loading_a_hub_name_says_to_save_a_local_folder_and_load_that(name):
    from dfgpt.errors import CheckpointError
    with pytest.raises(CheckpointError, match="downloads nothing") as e:
        dfgpt.load(name)
    assert f"from_pretrained({name!r}).save_pretrained('gpt2-local')" in str(e.value)
    assert "docs/gpt2.md" in str(e.value)


# -- item 20: ablation ranking with the normalisation scales held ---------------------------------
def test_ablation_with_fixed_norms_ranks_no_scale_and_zeroes_through_the_linear_paths():
    s = SORT.sheet("CABACA")
    exact = s.influence("logit[5][A]", top=3, by="ablation")
    assert exact[0].cell == "ln_f.var[5]"  # zeroing a variance divides by √eps: it ranks first
    fixed = s.influence("logit[5][A]", top=40, by="ablation-fixed-norms", candidates=200)
    kinds = {s.graph.ops[it.tensor].kind for it in fixed if it.tensor in s.graph.computed}
    assert not kinds & {"ln_var", "softmax_max", "softmax_sum"}
    # h[2].out[5][17] zeroed with ln_f's variance held: logit moves by W[A]·g·(Δx − mean(Δx))/√(var+eps)
    item = next(it for it in fixed if it.cell == "h[2].out[5][17]")
    x = s.values("h[2].out")[5]
    delta = np.zeros_like(x)
    delta[17] = -x[17]
    scale = np.sqrt(s.value("ln_f.var[5]") + SORT.config.ln_eps)
    change = s.values("lm_head.w")[0] @ (s.values("ln_f.g") * (delta - delta.mean()) / scale)
    assert item.score == pytest.approx(-change, abs=1e-12)
    assert "norms' scales held" in fixed.table().splitlines()[0]


def test_dfgpt_why_offers_the_fixed_norm_ranking_and_says_which_is_the_default(capsys):
    from dfgpt.cli import main
    with pytest.raises(SystemExit):
        main(["why", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "grad*value (the default" in help_text and "ablation-fixed-norms" in help_text
    assert main(["why", "logit[5][A]", "--rank", "ablation-fixed-norms", "--top", "1"]) == 0
    assert "  ln_f.g[26] " in capsys.readouterr().out
