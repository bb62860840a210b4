"""The stacked path of circuit discovery (fast mode): every pair in one run, against the per-pair path.

Exact mode keeps each pair's circuit sheet and `EdgeReplay` (bit for bit, tests/test_circuits.py);
the stacked run sums in another order, so it equals them to the rounding of its dtype, and ACDC
makes the same decisions."""

from __future__ import annotations

from dataclasses import replace

import families
import numpy as np
import pytest
from conftest import random_model

import dfgpt
from dfgpt import Config
from dfgpt.circuits import discovery
from dfgpt.circuits.circuit_graph import input_name
from dfgpt.circuits.discovery import evaluate
from dfgpt.circuits.runs import Runs
from dfgpt.circuits.stacked import switches_of
from dfgpt.errors import QueryError

SORT_LIKE = Config(n_layer=2, n_head=2, n_embd=8, block_size=7, vocab=("a", "b", "c"), n_inner=12)
BARE = Config(n_layer=2, n_head=2, n_embd=8, block_size=7, vocab=("a", "b", "c"), n_inner=12, layer_norm=False,
              bias=False, tied=True, gelu="erf", layout="in_out")
NO_MLP = Config(n_layer=2, n_head=3, n_embd=12, block_size=7, vocab=("a", "b", "c"), mlp=False)
CONFIGS = {"sort-like": SORT_LIKE, "bare-in_out-erf": BARE, "no-mlp": NO_MLP}
PAIRS = [([0, 2, 1, 1, 0, 2], [0, 2, 2, 1, 0, 1]), ([1, 2, 0, 0, 1, 2], [1, 2, 1, 0, 1, 2]),
         ([2, 1, 0, 1, 1], [2, 1, 0, 0, 1])]  # two lengths: two stacked runs


def model_of(cfg: Config) -> dfgpt.Model:
    return random_model(cfg, seed=7)[0]


def _set(st, e, value=1.0):
    s = st.switches[input_name(e.dest)].copy()
    s[e.slot] = value
    return st.update({e.dest: s})


@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("metric", ["logit_diff:a,c", "kl", "logprob:b"])
def test_the_stacked_runs_are_the_per_pair_circuit_sheets_to_rounding(cfg, metric):
    model = model_of(cfg)
    fast, exact = Runs(model, PAIRS, metric, exact=False), Runs(model, PAIRS, metric)
    assert fast._cells is None and [m.name for m in fast.metrics] == [m.name for m in exact.metrics]
    assert fast.clean == pytest.approx(exact.clean, rel=1e-12, abs=1e-12)
    assert fast.corrupted == pytest.approx(exact.corrupted, rel=1e-12, abs=1e-12)
    assert len(fast.stacked()) == 2  # one per length
    for st, idx in fast.groups():
        for j, i in enumerate(idx):
            want = exact.cells[i].values("logit")[st.t]
            cols = st.columns if st.columns is not None else slice(None)
            np.testing.assert_allclose(st.logits()[j][cols], want[cols], rtol=0, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
def test_an_edge_test_on_the_stacked_runs_is_the_engines_value_and_revert_is_exact(cfg):
    model = model_of(cfg)
    runs = Runs(model, PAIRS, "logit_diff:a,c", exact=False)
    st, idx = runs.groups()[0]
    before = {n: a.copy() for n, a in st.V.maps[0].items()}
    for e in runs.components.edges[::3]:
        z = _set(st, e).copy()
        runs.set(e.index, 1.0)  # the engine's own incremental recompute on each pair's circuit sheet
        for j, i in enumerate(idx):
            want = runs.cells[i].values("logit")[st.t][[0, 2]]
            np.testing.assert_allclose(z[j][[0, 2]], want, rtol=0, atol=1e-12 * max(1, np.abs(want).max()))
        runs.set(e.index, 0.0)
        st.revert()
        assert all(np.array_equal(st.V.maps[0][n], a) for n, a in before.items()), e.name


def test_kept_edge_tests_add_up_to_the_from_scratch_circuit():
    """Edges switched one by one and kept (ACDC's state) end where one forward with those switches lands."""
    model = model_of(SORT_LIKE)
    runs = Runs(model, PAIRS[:2], "logit_diff:a,c", exact=False)
    st = runs.stacked()[0]
    comps = runs.components
    rng = np.random.default_rng(0)
    s = np.zeros(len(comps))
    for i in rng.choice(len(comps), 40, replace=False)[::-1]:
        _set(st, comps.edges[int(i)])
        st.keep()
        s[i] = 1.0
    tokens = np.array([c for c, _ in runs.tokens])
    want = st.forward(tokens, st.patches, switches_of(comps, s))
    for n, a in want.items():
        if n in st.rows and n != "logit":
            r = st.rows[n]
            ra = st.graph.row_axis[n] + 1
            got = np.take(st.V[n], r, axis=ra)
            np.testing.assert_allclose(got, np.take(a, r, axis=ra), rtol=1e-9, atol=1e-9, err_msg=n)
    np.testing.assert_allclose(st.logits()[:, [0, 2]], want["logit"][:, [0, 2]], rtol=1e-9, atol=1e-9)


def test_many_destinations_at_once_equal_a_forward_and_evaluate_equals_the_per_pair_path():
    model = model_of(SORT_LIKE)
    fast, exact = Runs(model, PAIRS, "kl", exact=False), Runs(model, PAIRS, "kl")
    comps = fast.components
    order = np.random.default_rng(3).permutation(len(comps))
    for k in (0, 1, 5, 30, len(comps)):
        assert evaluate(fast, order[:k].tolist()) == pytest.approx(evaluate(exact, order[:k].tolist()),
                                                                   rel=1e-9, abs=1e-12)
    st = fast.stacked()[0]
    s = np.ones(len(comps))
    s[order[:20]] = 0.0
    sw = switches_of(comps, s)
    z = st.update({d: sw[input_name(d)] for d in comps.dests}).copy()
    want = st.forward(np.array([fast.tokens[i][0] for i in fast.groups()[0][1]]), st.patches, sw)["logit"]
    np.testing.assert_allclose(z, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("metric", ["logit_diff:a,c", "kl", "logprob:b"])
def test_acdc_and_eap_on_the_stacked_runs_decide_as_the_per_pair_path(metric):
    model = model_of(SORT_LIKE)
    fast = dfgpt.acdc(model, PAIRS, metric, threshold=0.02, exact=False)
    slow = dfgpt.acdc(model, PAIRS, metric, threshold=0.02, exact=True)
    assert 0 < len(fast.kept) < len(fast.edges) and fast.kept == slow.kept
    np.testing.assert_allclose(fast.scores, slow.scores, rtol=0, atol=1e-9)
    assert fast.value == pytest.approx(slow.value, rel=1e-9, abs=1e-12)
    assert [k for k, _ in fast.curve] == [k for k, _ in slow.curve]
    np.testing.assert_allclose([v for _, v in fast.curve], [v for _, v in slow.curve], rtol=1e-9, atol=1e-12)
    a, b = dfgpt.eap(model, PAIRS, metric, exact=False), dfgpt.eap(model, PAIRS, metric, exact=True)
    np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-9 * max(1e-3, np.abs(b.scores).max()))


def test_acdc_in_float32_keeps_the_edges_the_per_pair_replays_keep():
    model = model_of(replace(SORT_LIKE, dtype="float32"))
    fast = dfgpt.acdc(model, PAIRS, "logit_diff:a,c", threshold=0.05)  # float32: the stacked path
    runs = Runs(model, PAIRS, "logit_diff:a,c")
    assert runs._groups is not None
    slow = dfgpt.acdc(model, PAIRS, lambda s: s.value(f"logit[{s.T - 1}][a]") - s.value(f"logit[{s.T - 1}][c]"),
                      threshold=0.05)  # a callable: each pair's circuit sheet, the engine's reads
    assert 0 < len(fast.kept) < len(fast.edges) and fast.kept == slow.kept
    np.testing.assert_allclose(fast.scores, slow.scores, rtol=0, atol=1e-4)


def test_discovery_on_the_stacked_path_makes_no_circuit_sheet_and_the_per_pair_views_still_work():
    model = model_of(SORT_LIKE)
    runs = Runs(model, PAIRS[:2], "logit_diff:a,c", exact=False)
    runs.gradient()
    assert runs._cells is None
    runs.keep_only([])  # the per-pair views are made on first use
    assert runs.measure() == pytest.approx(runs.corrupted, rel=1e-12)
    with pytest.raises(QueryError, match="replays"):
        Runs(model, PAIRS[:2], "logit_diff:a,c", exact=True).stacked()


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama", "mistral", "qwen2", "gemma"])
def test_the_fast_path_of_every_family_equals_its_per_pair_circuit_sheets(tmp_path, family):
    """In float64 the stacked runs (exact=False) and the circuit sheets (exact=True) must agree to 1e-9:
    a family whose ops the stacked run does not compute right must run per pair (it once gave Llama's
    metric 0.04 where the sheets give -0.34)."""
    if family == "gpt2":  # nanoGPT's graph, as GPT-2 checkpoints load
        model = dfgpt.load("sort", dtype="float64")
        pairs = [("CABACAAAA", "CACACAAAA"), ("ABCABCAAA", "ABCCBCAAA")]
        metric = "logit_diff:B,C"
    else:
        families.make(family, tmp_path)
        model = dfgpt.load(str(tmp_path), dtype="float64")
        pairs = [([3, 17, 5, 40, 22, 9], [3, 17, 8, 40, 22, 9]), ([7, 2, 30, 11, 4, 45], [7, 2, 30, 12, 4, 45])]
        metric = "logit_diff:#3,#5"
    fast, exact = Runs(model, pairs, metric, exact=False), Runs(model, pairs, metric, exact=True)
    assert not exact.is_stacked and fast.is_stacked == (family == "gpt2")
    scale = max(abs(exact.clean), abs(exact.corrupted), 1.0)
    assert abs(fast.clean - exact.clean) <= 1e-9 * scale and abs(fast.corrupted - exact.corrupted) <= 1e-9 * scale
    rng = np.random.default_rng(0)
    for _ in range(3):
        kept = sorted(rng.choice(len(exact.components), len(exact.components) // 3, replace=False).tolist())
        np.testing.assert_allclose(discovery.evaluate_each(fast, kept), discovery.evaluate_each(exact, kept),
                                   rtol=0, atol=1e-9 * scale)
    g = exact.gradient(0.0)
    np.testing.assert_allclose(fast.gradient(0.0), g, rtol=0, atol=1e-9 * max(np.abs(g).max(), 1.0))
