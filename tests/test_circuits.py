"""Circuits: the component graph, exact edge patching against an independent numpy circuit, discovery."""

from __future__ import annotations

import json
from dataclasses import replace

import circuit_reference as cref
import numpy as np
import pytest
from conftest import random_model, ref_cfg

import dfgpt
from dfgpt import Config
from dfgpt.analysis.formula import formula
from dfgpt.circuits.circuit import Circuit
from dfgpt.circuits.components import Components
from dfgpt.circuits.replay import EdgeReplay
from dfgpt.circuits.runs import Runs
from dfgpt.errors import DfgptError, EditError, QueryError, UnknownNameError

SORT_LIKE = Config(n_layer=2, n_head=2, n_embd=8, block_size=7, vocab=("a", "b", "c"), n_inner=12)
BARE = Config(n_layer=2, n_head=2, n_embd=8, block_size=7, vocab=("a", "b", "c"), n_inner=12, layer_norm=False,
              bias=False, tied=True, gelu="erf", layout="in_out")
NO_MLP = Config(n_layer=2, n_head=3, n_embd=12, block_size=7, vocab=("a", "b", "c"), mlp=False)
CONFIGS = {"sort-like": SORT_LIKE, "bare-in_out-erf": BARE, "no-mlp": NO_MLP}
CLEAN, CORRUPTED = [0, 2, 1, 1, 0, 2], [0, 2, 2, 1, 0, 1]


def made(cfg):
    model, state = random_model(cfg, seed=7)
    return model, state, ref_cfg(cfg)


# -- the component graph ------------------------------------------------------------------
@pytest.mark.parametrize("layers, edges", [(4, 3135), (12, 32491), (3, 1630), (1, 36 + 13 + 14)])
def test_edge_counts_are_auto_circuits(layers, edges):
    """Sources: the embedding, every head, every MLP; destinations: every head's q, k and v, every MLP, the logits."""
    c = Components(Config(n_layer=layers, n_head=12, n_embd=24, block_size=4, vocab_size=3))
    assert len(c) == edges


def test_a_destination_reads_every_earlier_source_and_an_mlp_its_own_blocks_heads():
    c = Components(Config(n_layer=2, n_head=2, n_embd=8, block_size=4, vocab_size=3))
    names = {e.name for e in c}
    assert "h[0].head[1] -> h[0].mlp" in names and "h[0].head[1] -> h[0].head[0].q" not in names
    srcs = [e.src.name for e in c.into(c.nodes["h[1].head[0].k"])]
    assert srcs == ["emb", "h[0].head[0]", "h[0].head[1]", "h[0].mlp"]
    parallel = Components(Config(n_layer=2, n_head=2, n_embd=8, block_size=4, vocab_size=3), parallel=True)
    assert "h[0].head[1] -> h[0].mlp" not in {e.name for e in parallel}


def test_edge_names_round_trip_and_select_by_wildcard():
    c = Components(Config(n_layer=3, n_head=3, n_embd=12, block_size=4, vocab_size=3))
    assert all(c.edge(e.name) is e and c.select(e.name) == [e] for e in c)
    assert c.edge("h[0].head[1]->h[2].head[0].q").name == "h[0].head[1] -> h[2].head[0].q"
    assert [e.name for e in c.select("h[*].head[*] -> logits")] == [f"h[{l}].head[{h}] -> logits"
                                                                    for l in range(3) for h in range(3)]
    assert [e.dest.part for e in c.select("emb -> h[1].head[2]")] == ["q", "k", "v"]
    assert len(c.select("* -> h[2].mlp")) == 1 + 2 * 4 + 3
    assert len(c.select(["emb -> logits", "emb -> logits", c.edges[0]])) == 2


@pytest.mark.parametrize("name, error, hint", [
    ("h[0].head[1] -> h[0].head[0].q", UnknownNameError, "'h[0].head[1] -> h[1].head[0].q'"),
    ("h[0].haed[1] -> logits", UnknownNameError, "Did you mean 'h[0].head[1]'"),
    ("h[1].mlp -> logit", UnknownNameError, "Did you mean 'logits'"),
    ("h[5].head[0] -> logits", UnknownNameError, "no source of this model"),
    ("h[0].head[1] => logits", QueryError, "write 'SRC -> DEST'"),
    ("h[9].* -> logits", UnknownNameError, "no edge matches"),
])
def test_bad_edge_names_get_typed_errors_saying_what_to_write(name, error, hint):
    c = Components(Config(n_layer=3, n_head=3, n_embd=12, block_size=4, vocab_size=3))
    with pytest.raises(error) as e:
        c.select(name)
    assert hint in str(e.value) and isinstance(e.value, DfgptError)


# -- the circuit graph, exactly -------------------------------------------------------------
@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
def test_with_every_switch_off_the_circuit_graph_is_the_model_to_rounding(cfg):
    model, _, _ = made(cfg)
    cs = dfgpt.CircuitSheet(model, CLEAN)
    np.testing.assert_allclose(cs.values("logit"), model.sheet(CLEAN).values("logit"), rtol=0, atol=1e-12)


@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
def test_the_circuit_graph_is_the_independent_numpy_circuit_bit_for_bit(cfg):
    model, state, rc = made(cfg)
    cs = dfgpt.CircuitSheet(model, CLEAN)
    ref = cref.forward(state, rc, CLEAN, cs.engine.cap)
    assert np.array_equal(cs.values("logit"), ref["logits"])
    for s in cs.components.sources:
        name = "emb" if s.name == "emb" else f"{s.name}.out"
        assert np.array_equal(cs.values(name), ref["contrib"][s.name]), s.name


@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
def test_a_patched_edge_is_the_numpy_circuit_with_that_contribution_swapped_bit_for_bit(cfg):
    model, state, rc = made(cfg)
    cs = dfgpt.CircuitSheet(model, CLEAN)
    cap = cs.engine.cap
    bad = cref.forward(state, rc, CORRUPTED, cap)["contrib"]
    _ = cs.values("logit")
    names = cref.edge_names(rc)
    assert names == [e.name for e in cs.components]
    for name in names[:: max(1, len(names) // 12)] + names[-2:]:  # early, middle and last destinations
        r = cs.patch_edges(CORRUPTED, name)
        src = name.split(" -> ")[0]
        ref = cref.forward(state, rc, CLEAN, cap, {name: 1.0}, {src: bad[src]})
        assert np.array_equal(cs.values("logit"), ref["logits"]), name
        assert r.action == "patch_edges" and r.cells == (name,)
        cs.undo()
    assert cs.switched() == []


def test_a_patch_recomputes_only_its_destinations_cone():
    model, _, _ = made(SORT_LIKE)
    cs = dfgpt.CircuitSheet(model, CLEAN)
    _ = cs.values("logit")
    r = cs.patch_edges(CORRUPTED, "h[1].head[0] -> logits")
    _ = cs.values("logit")
    # The switch and the source's patch cells were written: the patch is read by every destination of
    # h[1].head[0] (the logits and h[1].mlp), where an unswitched edge's sum comes out the same (cut off).
    assert set(r.recomputed_by_tensor) == {"h[1].mlp.in", "ln_f.in", "ln_f.mean", "ln_f.var", "ln_f.out", "logit"}
    assert r.cutoff_by_tensor["h[1].mlp.in"] == r.recomputed_by_tensor["h[1].mlp.in"]  # every row: the same bits
    r = cs.patch_edges(CORRUPTED, "h[1].head[0] -> h[1].mlp")  # the same patch: a switch cell alone
    _ = cs.values("logit")
    assert set(r.recomputed_by_tensor) == {"h[1].mlp.in", "h[1].ln_2.mean", "h[1].ln_2.var", "h[1].ln_2.out",
                                           "h[1].mlp.fc", "h[1].mlp.gelu", "h[1].mlp.out", "ln_f.in", "ln_f.mean",
                                           "ln_f.var", "ln_f.out", "logit"}


def test_patching_no_edge_changes_nothing_and_every_edge_gives_the_source_run():
    model, _, _ = made(SORT_LIKE)
    cs = dfgpt.CircuitSheet(model, CLEAN)
    before = cs.values("logit")
    with pytest.raises(EditError, match="no edge to switch"):
        cs.patch_edges(CORRUPTED, [])
    assert np.array_equal(cs.values("logit"), before) and cs.switched() == []
    cs.patch_edges(CORRUPTED, "* -> *")
    # Every edge from the corrupted run is the corrupted run: the same terms summed in another order.
    np.testing.assert_allclose(cs.values("logit"), model.sheet(CORRUPTED).values("logit"), rtol=0, atol=1e-12)
    cs.undo()
    assert np.array_equal(cs.values("logit"), before)


def test_ablations_zero_mean_resample_and_keep_only():
    model, state, rc = made(SORT_LIKE)
    cs = dfgpt.CircuitSheet(model, CLEAN)
    cap = cs.engine.cap
    edge = "h[0].head[1] -> h[1].head[0].v"
    cs.ablate_edges(edge, "zero")
    zero = cref.forward(state, rc, CLEAN, cap, {edge: 1.0}, {"h[0].head[1]": np.zeros((6, 8))})
    assert np.array_equal(cs.values("logit"), zero["logits"])
    cs.undo()
    refs = [CORRUPTED, [1, 1, 0, 2, 2, 0]]
    cs.ablate_edges(edge, "mean", reference=refs)
    mean = np.mean([cref.forward(state, rc, x, cap)["contrib"]["h[0].head[1]"] for x in refs], axis=0)
    assert np.array_equal(cs.values("logit"), cref.forward(state, rc, CLEAN, cap, {edge: 1.0},
                                                           {"h[0].head[1]": mean})["logits"])
    cs.undo()
    cs.ablate_edges(edge, "resample", reference=refs, seed=3)
    assert cs.switched() == [edge]
    cs.undo()
    cs.keep_only(["emb -> logits"], source=CORRUPTED)
    assert len(cs.switched()) == len(cs.components) - 1
    with pytest.raises(EditError, match=r"ablation 'mean' needs reference=\[inputs of 6 positions\]"):
        cs.ablate_edges(edge, "mean")
    with pytest.raises(EditError, match="is not one of zero, mean, resample"):
        cs.ablate_edges(edge, "median")


def test_a_source_holds_one_patch_value_and_a_conflict_is_refused_unchanged():
    model, _, _ = made(SORT_LIKE)
    cs = dfgpt.CircuitSheet(model, CLEAN)
    cs.patch_edges(CORRUPTED, "emb -> logits")
    before, rev = cs.values("logit"), cs.engine.revision
    with pytest.raises(EditError, match="already carries another value of emb"):
        cs.patch_edges([1, 1, 0, 2, 2, 0], "emb -> h[0].mlp")
    assert np.array_equal(cs.values("logit"), before) and cs.engine.revision == rev
    with pytest.raises(EditError, match="has 3 positions and this sheet 6"):
        cs.patch_edges([0, 1, 2], "emb -> h[0].mlp")
    edited = model.sheet(CORRUPTED)
    edited.set("wpe[0][0]", 0.5)
    with pytest.raises(EditError, match="has edits"):
        cs.patch_edges(edited, "emb -> h[0].mlp")


def test_sheet_circuit_is_the_same_circuit_sheet():
    model, _, _ = made(SORT_LIKE)
    s = model.sheet(CLEAN)
    cs = s.circuit()
    assert isinstance(cs, dfgpt.CircuitSheet) and cs.tokens == CLEAN
    text = formula(cs, "h[1].mlp.in", (2, 3))
    assert text.startswith("h[1].mlp.in[2][3] = (1 − h[1].mlp.switch[0]) · emb[2][3] + h[1].mlp.switch[0] · "
                           "emb.patch[2][3]")
    assert text.endswith("(1 − h[1].mlp.switch[5]) · h[1].head[1].out[2][3] + h[1].mlp.switch[5] · "
                         "h[1].head[1].patch[2][3] + h[0].attn.c_proj.b[3] + h[1].attn.c_proj.b[3]")


# -- discovery --------------------------------------------------------------------------------
PAIRS = [(CLEAN, CORRUPTED), ([1, 2, 0, 0, 1, 2], [1, 2, 1, 0, 1, 2])]


@pytest.mark.parametrize("metric", ["logit_diff:a,c", "kl", "logprob:b"])
def test_eap_is_the_finite_difference_of_the_metric_in_each_switch(metric):
    model, _, _ = made(SORT_LIKE)
    runs = Runs(model, PAIRS, metric)
    g = runs.gradient()
    h = 1e-6
    for i in range(0, len(runs.components), 9):
        runs.set(i, h)
        up = runs.measure()
        runs.set(i, -h)
        down = runs.measure()
        runs.set(i, 0.0)
        assert (up - down) / (2 * h) == pytest.approx(g[i], rel=1e-5, abs=1e-7), runs.components.edges[i].name
    c = dfgpt.eap(model, PAIRS, metric, top=5)
    assert np.array_equal(np.array(c.scores), g)


@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("metric", ["logit_diff:a,c", "kl", "logprob:b"])
def test_the_batched_switch_gradient_is_the_autodiffs_one_pair_at_a_time(cfg, metric):
    """The sweep sums in another order (running sums over sources and destinations, one product for
    every edge): equal to 1e-12 of the largest score in float64; pairs of two lengths, off the path too."""
    model, _, _ = made(cfg)
    runs = Runs(model, [*PAIRS, ([2, 1, 0, 1, 1], [2, 1, 0, 0, 1])], metric)
    for alpha in (0.0, 0.3, 0.7):
        got, want = runs.gradient(alpha), runs.gradient_by_autodiff(alpha)
        if alpha == 0 and metric == "kl":  # KL is flat at the clean run: both gradients are rounding
            assert np.abs(got).max() < 1e-12 and np.abs(want).max() < 1e-12
            continue
        assert np.abs(want).max() > 1e-3
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())


def test_the_batched_switch_gradient_in_float32_is_the_autodiffs_to_1e_5():
    model, _, _ = made(replace(SORT_LIKE, dtype="float32"))
    runs = Runs(model, PAIRS, "logit_diff:a,c")
    got, want = runs.gradient(), runs.gradient_by_autodiff()
    assert got.dtype == np.float64 and np.abs(want).max() > 0.1
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_eap_ig_scores_sum_to_the_metrics_change_from_clean_to_corrupted():
    model, _, _ = made(SORT_LIKE)
    c = dfgpt.eap_ig(model, PAIRS, "logit_diff:a,c", steps=32)
    assert sum(c.scores) == pytest.approx(c.corrupted - c.clean, rel=1e-3)


def test_acdc_keeps_what_moves_the_metric_and_its_circuit_is_checked_by_keeping_only_it():
    model, _, _ = made(SORT_LIKE)
    c = dfgpt.acdc(model, PAIRS, "kl", threshold=0.02)
    assert 0 < len(c.kept) < len(c.edges)
    assert all(c.score(e) >= 0.02 for e in c.kept)
    # The circuit's value is the metric with every other edge patched from the corrupted runs.
    total = 0.0
    for clean, bad in PAIRS:
        cs = dfgpt.CircuitSheet(model, clean)
        ref = cs.values("logit")[-1]
        cs.keep_only(c.kept, source=bad)
        p, q = (np.exp(z - z.max()) / np.exp(z - z.max()).sum() for z in (ref, cs.values("logit")[-1]))
        total += float(np.sum(p * np.log(p / q)))
    assert c.value == pytest.approx(total / len(PAIRS), rel=1e-9, abs=1e-12)
    assert c.curve[0] == (0, pytest.approx(c.corrupted)) and c.curve[-1] == (len(c.edges), pytest.approx(0, abs=1e-12))


def test_acdc_with_a_callable_metric_matches_the_spec():
    model, _, _ = made(SORT_LIKE)
    spec = dfgpt.acdc(model, PAIRS, "logit_diff:a,c", threshold=0.05)

    def diff(sheet):
        return sheet.value("logit[5][a]") - sheet.value("logit[5][c]")

    mine = dfgpt.acdc(model, PAIRS, diff, threshold=0.05)
    assert mine.kept == spec.kept
    np.testing.assert_allclose(mine.scores, spec.scores, rtol=0, atol=1e-9)


class Boom(Exception):
    pass


def test_every_sheet_is_as_it_was_after_a_discovery_whatever_interrupts_it():
    model, _, _ = made(SORT_LIKE)
    sheets = [(model.sheet(a), model.sheet(b)) for a, b in PAIRS]
    circ = dfgpt.CircuitSheet(model, CLEAN)
    circ.patch_edges(CORRUPTED, "emb -> logits")
    snap = [(s.engine.revision, s.values("logit").copy()) for pair in sheets for s in pair]
    csnap = (circ.engine.revision, circ.values("logit").copy(), circ.switched())
    calls = [0]

    def flaky(sheet):
        calls[0] += 1
        if calls[0] > 5:
            raise Boom
        return sheet.value("logit[5][a]")

    for run in (lambda: dfgpt.acdc(model, sheets, flaky, threshold=0.1),
                lambda: dfgpt.eap(model, [(circ, CORRUPTED)], flaky),
                lambda: dfgpt.acdc(model, [(circ, CORRUPTED)], "kl", threshold=float("nan"))):
        calls[0] = 0
        with pytest.raises((Boom, QueryError)):
            run()
    for (rev, logit), pair_sheet in zip(snap, [s for pair in sheets for s in pair]):
        assert pair_sheet.engine.revision == rev and np.array_equal(pair_sheet.values("logit"), logit)
    assert circ.engine.revision == csnap[0] and np.array_equal(circ.values("logit"), csnap[1])
    assert circ.switched() == csnap[2]


def test_a_circuit_saves_and_loads_as_json_prints_and_draws(tmp_path):
    model, _, _ = made(SORT_LIKE)
    c = dfgpt.eap(model, PAIRS, "logit_diff:a,c", top=4)
    path = c.save(tmp_path / "c.json")
    back = Circuit.load(path)
    assert back == c and json.loads(path.read_text())["kept"] == c.kept
    assert c.table().splitlines()[1].split() == ["edge", "score"] and len(c.table().splitlines()) == 6
    assert "<table" in c._repr_html_()
    svg = c.save(tmp_path / "c.svg").read_text()
    assert svg.count('class="node"') == len({n for e in c.kept for n in _components(e)})
    w, h = (float(x[:-2]) for x in (svg.split('width="')[1].split('"')[0], svg.split('height="')[1].split('"')[0]))
    assert 1 / 3 <= w / h <= 3 and max(w, h) <= 2500
    assert c.curve_svg().count("<circle") == len(c.curve)
    (tmp_path / "bad.json").write_text('{"method": "eap"}')
    with pytest.raises(QueryError, match="not a circuit"):
        Circuit.load(tmp_path / "bad.json")


def _components(edge):
    src, dest = edge.split(" -> ")
    return {src, dest[:-2] if dest.endswith((".q", ".k", ".v")) else dest}


def test_the_cli_finds_and_writes_a_circuit(tmp_path, capsys):
    from dfgpt.cli.main import main

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"clean": "CABACAAAA", "corrupted": "CACACAAAA"}\n')
    assert main(["circuit", "--pairs", str(pairs), "--metric", "kl", "--threshold", "0.01",
                 "-o", str(tmp_path / "c.json"), "-o", str(tmp_path / "c.svg")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("acdc circuit of kl@8 over 1 pair:") and "emb -> h[0].head[1].v" in out
    assert Circuit.load(tmp_path / "c.json").kept[0] == "emb -> h[0].head[1].v"
    assert (tmp_path / "c.svg").read_text().startswith("<?xml")
    assert main(["circuit", "--pairs", str(pairs), "--method", "acdc", "--top", "3"]) == 2
    assert "--top and --steps choose edges for eap" in capsys.readouterr().err


def test_an_edge_sum_as_sympy_is_linear_in_its_switch_and_evaluates_to_the_engines_value():
    from dfgpt.analysis.symbolic import expr

    model, _, _ = made(SORT_LIKE)
    cs = dfgpt.CircuitSheet(model, CLEAN)
    cs.patch_edges(CORRUPTED, "emb -> h[1].mlp")
    for cell, free in [("h[1].mlp.in[2][5]", "h[1].mlp.switch[0]"), ("h[0].head[1].out[4][2]", "h[0].head[1].y[4][0]")]:
        e = expr(cs, cell, free=[free])
        (s,) = e.free_symbols
        assert e.diff(s).free_symbols == set()  # linear in the free cell
        assert float(e.subs(s, cs.value(free))) == pytest.approx(cs.value(cell), rel=1e-12, abs=1e-15)


def test_an_edited_weight_reaches_the_head_outputs_every_time():
    model, state, rc = made(SORT_LIKE)
    cs = dfgpt.CircuitSheet(model, CLEAN)
    for v in (0.5, -0.25):  # the second write lands in the sheet's own copy, in place
        cs.set("h[1].attn.c_proj.w[3][5]", v)
        state["transformer.h.1.attn.c_proj.weight"][3, 5] = v
        assert np.array_equal(cs.values("logit"), cref.forward(state, rc, CLEAN, cs.engine.cap)["logits"])


def test_an_edge_test_recomputes_from_the_first_changed_row_and_equals_the_engine_bit_for_bit():
    model, _, _ = made(SORT_LIKE)
    runs = Runs(model, PAIRS[:1], "logit_diff:a,c")
    rep = EdgeReplay(runs.cells[0], 5)  # the whole logit row (the runs' own replays compute a and c alone)
    before = rep.values["logit"].copy()
    for e in runs.components.edges[::7]:
        row = rep.try_edge(e, 1.0).copy()
        runs.set(e.index, 1.0)
        assert np.array_equal(row, runs.cells[0].values("logit")[5]), e.name
        runs.set(e.index, 0.0)
        rep.revert()
        assert np.array_equal(rep.values["logit"], before)
    # The corrupted token sits at position 2: an edge from the embedding leaves rows 0 and 1 as they were.
    x = "h[1].head[0].k.in"
    rep.try_edge(runs.components.edge("emb -> h[1].head[0].k"), 1.0)
    saved = {n: a for n, _, a in rep._saved}
    assert np.array_equal(saved[x][:2], rep.values[x][:2]) and not np.array_equal(saved[x][2], rep.values[x][2])


@pytest.mark.parametrize("metric", ["logit_diff:a,c", "logit:b"])
def test_an_edge_test_of_a_few_logits_computes_only_those_to_the_rounding_of_one_dot_product(metric):
    """The columns alone (no 50k-wide row per pair and edge at GPT-2): float64 products of another
    shape than the engine's row, so equal to 1e-12 of their size, not bit for bit; revert is exact."""
    model, _, _ = made(SORT_LIKE)
    runs = Runs(model, PAIRS[:1], metric)
    rep, m = runs.replays()[0], runs.metrics[0]
    assert rep.columns is not None and list(rep.columns) == list(m.tokens)
    before = rep.values["logit"].copy()
    for e in runs.components.edges[::5]:
        got = m.of_row(rep.try_edge(e, 1.0))
        runs.set(e.index, 1.0)
        want = m(runs.cells[0])
        runs.set(e.index, 0.0)
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12), e.name
        rep.revert()
        assert np.array_equal(rep.values["logit"], before)
    assert Runs(model, PAIRS[:1], "kl").replays()[0].columns is None
