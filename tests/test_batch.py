"""Datasets: sweeps over pairs, ablation sweeps, influence and the task score over inputs; in process,
and on a local Dask cluster of two worker processes.

The oracle of a dataset sweep is the one-pair sweep of each pair: the same values bit for
bit, in the same order; of an ablation sweep, `sheet.ablate` on each input; of dataset
influence, `sheet.influence` on each input. A distributed sweep must equal the in-process one
exactly, lose and duplicate no site when a worker dies mid-sweep, and leave every sheet as it
was. Tests that are not about the cluster run in process (`scheduler="inline"`).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import random_model
from serving import dask_client

import dfgpt
from dfgpt.batch import api
from dfgpt.batch import cluster as cluster_mod
from dfgpt.batch import plan as plan_mod
from dfgpt.batch import worker as worker_mod
from dfgpt.batch.cluster import AUTO, where
from dfgpt.batch.plan import chunks, work
from dfgpt.cli import main
from dfgpt.errors import ClusterError, IndexError_, QueryError, SequenceLengthError, TokenError
from dfgpt.interventions.metrics import parse_metric
from dfgpt.interventions.sweep import blocks, order

MODEL = dfgpt.load("sort")
PAIRS = [("CABACAAAA", "CACACAAAA"), ("CBBACAAAA", "CCBACAAAA"), ("ABCABCAAB", "ACCABCAAB"), ("BACCBAAAB", "BABCBAAAB")]
INPUTS = [a for a, _ in PAIRS]  # one length: the sites of an ablation sweep are the same cells in every input
RAGGED = ["CABACA", "BCAACAAAA", "ABCAB", "CCBA"]  # lengths 6, 9, 5, 4: influence takes any
METRIC = "logit_diff:B,C"
INLINE = "inline"


def same(a, b):
    """Equal bit for bit, nan where nan, in the same order."""
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


def snapshot(s):
    for n in s.graph.computed:
        s.values(n)
    return {n: np.array(s.engine.view(n)) for n in s.graph.computed}, {k: dict(v) for k, v in s.engine.pins.items()}


@pytest.mark.parametrize("over,metric", [("resid_pre", METRIC), ("head_out", "kl"), ("pattern", "prob:B"),
                                         ("h[*].attn.att[*][8]", "logprob:C")])
def test_a_dataset_sweep_is_each_pair_s_sweep_and_their_mean(over, metric):
    r = dfgpt.sweep_pairs(MODEL, PAIRS, metric, over=over, scheduler="inline")
    assert r.axes[0] == "pair" and r.values.shape[0] == len(PAIRS)
    for i, (a, b) in enumerate(PAIRS):
        one = dfgpt.sweep(MODEL.sheet(a), MODEL.sheet(b), metric, over=over)
        assert same(r.pair(i).values, one.values) and r.axes[1:] == one.axes
        assert (r.clean[i], r.corrupted[i]) == (one.clean, one.corrupted)
        assert r.pair(i).table() == one.table()  # position labels are the pair's own
    mean = r.mean()
    assert same(mean.values, r.values.mean(axis=0)) and mean.clean == r.clean.mean()
    assert r.top(3) == mean.top(3)


def test_a_callable_metric_and_token_lists_give_the_same_sweep():
    ids = [(MODEL.encode(a), MODEL.encode(b)) for a, b in PAIRS[:2]]
    spec = dfgpt.sweep_pairs(MODEL, PAIRS[:2], METRIC, over="resid_pre", scheduler="inline")
    call = dfgpt.sweep_pairs(dfgpt.load("sort"), ids, lambda s: s.value("logit[8][B]") - s.value("logit[8][C]"),
                             over="resid_pre", scheduler="inline")
    assert same(spec.values, call.values) and spec.axes == call.axes


def test_the_result_prints_short_and_as_html():
    r = dfgpt.sweep_pairs(MODEL, PAIRS[:2], METRIC, over="resid_pre", scheduler="inline")
    assert repr(r) == "PairSweep(resid_pre, logit_diff:B,C@8, pair 2 × layer 3 × position 9, exact)"
    assert repr(r.mean()) == "Sweep(resid_pre, logit_diff:B,C@8 (mean of 2 pairs), layer 3 × position 9, exact)"
    text = r.table()
    assert "CBBACAAAA / CCBACAAAA" in text and text.splitlines()[0].startswith("exact sweep of logit_diff")
    assert "<table" in r._repr_html_() and r.value(pair=1, layer=0, position=2) == r.values[1, 0, 2]


def test_attribution_patching_takes_a_dataset():
    r = dfgpt.attribution_patch(MODEL, PAIRS[:2], METRIC, over="head_out")
    for i, (a, b) in enumerate(PAIRS[:2]):
        one = dfgpt.attribution_patch(MODEL.sheet(a), MODEL.sheet(b), METRIC, over="head_out")
        assert same(r.pair(i).values, one.values)
    assert r.method == "attribution"


def test_pairs_from_a_jsonl_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"clean": PAIRS[0][0], "corrupted": PAIRS[0][1]}) + "\n\n"
                    + json.dumps(list(PAIRS[1])) + "\n")
    assert dfgpt.read_pairs(path) == PAIRS[:2]
    assert same(dfgpt.sweep_pairs(MODEL, dfgpt.read_pairs(path), METRIC, scheduler="inline").values,
                dfgpt.sweep_pairs(MODEL, PAIRS[:2], METRIC, scheduler="inline").values)


@pytest.mark.parametrize("pairs,error,words", [
    ([], QueryError, "pairs is empty"),
    ("CABACA", QueryError, "list of (clean, corrupted)"),
    ([("CABACA",)], QueryError, "pair 0 must be two inputs"),
    ([("CABACA", "CABAC")], SequenceLengthError, "same length"),
    ([("CABACA", "CABACC"), ("CAB", "CAC")], SequenceLengthError, "pair 1 has 3 tokens"),
    ([("CABACA", "CABACX")], dfgpt.DfgptError, "pair 0's corrupted input"),
    ([("CABACA", 5)], QueryError, "a text or a list of token ids"),
])
def test_bad_pairs_are_refused_and_say_how_to_fix(pairs, error, words):
    with pytest.raises(error, match=None) as e:
        dfgpt.sweep_pairs(MODEL, pairs, METRIC)
    assert words in str(e.value)


def test_bad_files_and_models_are_refused(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"clean": "CAB"}\n')
    with pytest.raises(QueryError, match="expected"):
        dfgpt.read_pairs(bad)
    with pytest.raises(QueryError, match="cannot read the pairs file"):
        dfgpt.read_pairs(tmp_path / "missing.jsonl")
    with pytest.raises(QueryError, match="the model first"):
        dfgpt.sweep(3, PAIRS, METRIC)
    with pytest.raises(QueryError, match="not sheets"):
        dfgpt.sweep(MODEL.sheet("CAB"), MODEL.sheet("CAC"), METRIC, scheduler="local")
    built = dfgpt.Model.of(dfgpt.Model.from_state_dict(MODEL.state_dict(), MODEL.config, MODEL.tokenizer))
    with pytest.raises(ClusterError, match="was not loaded by dfgpt.load"):
        dfgpt.sweep_pairs(built, PAIRS[:1], METRIC, scheduler="tcp://127.0.0.1:1")


def test_import_dfgpt_does_not_import_dask():
    code = "import sys, dfgpt; print(sorted(m for m in ('dask', 'distributed') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_chunks_cover_every_item_once_in_order():
    items = work(3, [(0,), (1,), (2,)])
    for workers, size in ((1, None), (2, None), (5, None), (1, 4), (1, 100)):
        parts = chunks(items, workers, size)
        assert [it for p in parts for it in p] == items
    for cost in ([1.0] * 9, [9, 0, 0, 0, 0, 0, 0, 0, 1], [0.05] * 8 + [50]):
        parts = chunks(items, 2, cost=cost)
        assert [it for p in parts for it in p] == items and 1 <= len(parts) <= 8


def test_chunks_cut_by_cost_hold_about_equal_work():
    pairs = [("CABACAAAA", "CACACAAAA"), ("CBBACAAAA", "CBBACAAAC"), ("ABCABCAAB", "CBCABCAAB")]  # differ at 2, 8, 0
    plan = plan_mod.Plan.of(MODEL, pairs, METRIC, "head_out")
    g = worker_mod.first_sites(plan)
    items = work(plan.n_pairs, order(list(g.sites)))
    cost = plan_mod.costs(plan, worker_mod.sweep_site_costs(plan, g), items)
    per_pair = [sum(cost[p * 81:(p + 1) * 81]) for p in range(3)]
    skipped = [c == plan_mod.SKIPPED for c in cost]
    assert sum(skipped[81:162]) == 72 and sum(skipped[:81]) == 18 and not any(skipped[162:])  # before the change
    assert per_pair[1] < per_pair[0] < per_pair[2]
    for scale, n in ((100, 8), (1, 2)):  # a large sweep: four chunks per worker; a small one: one each
        c = [x * scale for x in cost]
        parts = chunks(items, 2, cost=c)
        work_of = [sum(c[items.index(p[0]):items.index(p[0]) + len(p)]) for p in parts]
        assert len(parts) == n and max(work_of) < 1.5 * sum(c) / n
        assert min(work_of) > 0.5 * plan_mod.CHUNK_COST  # each chunk amortises its scheduling
    group = blocks(g)
    block = [(p, group[k]) for p, k in items]
    parts = chunks(items, 2, cost=cost, block=block)  # two chunks, cut between blocks, nearest the half
    cut = len(parts[0])
    assert len(parts) == 2 and block[cut] != block[cut - 1]
    before = np.concatenate([[0.0], np.cumsum(cost)])
    bounds = [j for j in range(1, len(items)) if block[j] != block[j - 1]]
    assert abs(before[cut] - before[-1] / 2) == min(abs(before[j] - before[-1] / 2) for j in bounds)


def test_a_chunk_s_collections_skip_older_objects_and_leave_them_collectable_after():
    seen = []

    def metric(s):  # runs inside the chunk
        seen.append(gc.get_freeze_count())
        return s.value("logit[8][B]")

    plan = plan_mod.Plan.of(MODEL, PAIRS[:1], metric, "resid_pre")
    items = work(1, [(0, 8), (1, 8)])
    assert gc.get_freeze_count() == 0
    worker_mod.run_chunk(plan, items)
    worker_mod.forget(plan.token)
    assert seen and min(seen) > 0 and gc.get_freeze_count() == 0  # frozen during the chunk, unfrozen after
    gc.freeze()  # someone else froze objects: the chunk leaves them so
    try:
        frozen = gc.get_freeze_count()
        seen.clear()
        again = plan_mod.Plan.of(MODEL, PAIRS[:1], metric, "resid_pre")
        worker_mod.run_chunk(again, items)
        worker_mod.forget(again.token)
        # nothing more frozen nor unfrozen (a frozen object freed by its last reference leaves the count)
        assert 0 < gc.get_freeze_count() <= frozen and max(seen) <= frozen
    finally:
        gc.unfreeze()


def test_a_sweep_s_sites_are_kept_for_the_next_sweep_only_when_small(monkeypatch):
    a = plan_mod.Plan.of(MODEL, PAIRS[:2], METRIC, "head_out")
    b = plan_mod.Plan.of(MODEL, PAIRS[2:], METRIC, "head_out")
    assert worker_mod.first_sites(a) is worker_mod.first_sites(b)  # same model, length and family
    assert worker_mod.first_sites(plan_mod.Plan.of(MODEL, PAIRS[:1], METRIC, "resid_pre")) is not \
        worker_mod.first_sites(a)
    monkeypatch.setattr(worker_mod, "KEPT_BYTES", 0)
    monkeypatch.setattr(worker_mod, "CACHE", worker_mod.Cache())
    c = plan_mod.Plan.of(MODEL, PAIRS[:2], METRIC, "head_out")
    d = plan_mod.Plan.of(MODEL, PAIRS[:2], METRIC, "head_out")
    assert worker_mod.first_sites(c) is worker_mod.first_sites(c)  # within one sweep, always once
    assert worker_mod.first_sites(c) is not worker_mod.first_sites(d)
    worker_mod.forget(c.token)
    worker_mod.forget(d.token)


def test_a_site_delivered_twice_or_never_is_refused_not_assembled():
    plan = plan_mod.Plan.of(MODEL, PAIRS[:2], METRIC, "resid_pre")
    g = worker_mod.first_sites(plan)
    items = work(2, order(list(g.sites)))
    whole = worker_mod.run_chunk(plan, items)
    worker_mod.forget(plan.token)
    r = api._assemble(plan, MODEL, g, items, [whole], [], False)
    assert np.isfinite(r.values).all() and r.values[1, 2, 4] == whole.values[items.index((1, (2, 4)))]
    head = plan_mod.Chunk(whole.items[:5], whole.values[:5], whole.ends)
    with pytest.raises(ClusterError, match="1 site\\(s\\) twice and 0 not at all"):
        api._assemble(plan, MODEL, g, items, [whole, plan_mod.Chunk(items[3:4], whole.values[3:4], {})], [], False)
    with pytest.raises(ClusterError, match="0 site\\(s\\) twice and 49 not at all \\(0 in failed"):
        api._assemble(plan, MODEL, g, items, [head, plan_mod.Chunk(items[5:-49], whole.values[5:-49], {})], [],
                      False)


def test_an_interrupted_sweep_leaves_every_sheet_as_it_was():
    clean, bad = MODEL.sheet(PAIRS[0][0]), MODEL.sheet(PAIRS[0][1])
    before = snapshot(clean), snapshot(bad)
    calls = []

    def metric(s):
        calls.append(1)
        if len(calls) == 20:
            raise KeyboardInterrupt
        return s.value("logit[8][B]")

    with pytest.raises(KeyboardInterrupt):
        dfgpt.sweep(clean, bad, metric, over="head_out")
    with pytest.raises(KeyboardInterrupt):
        calls.clear()
        dfgpt.sweep_pairs(MODEL, PAIRS, metric, over="head_out", scheduler="inline")
    after = snapshot(clean), snapshot(bad)
    for (v0, p0), (v1, p1) in zip(before, after):
        assert p0 == p1 == {} and all(np.array_equal(v0[n], v1[n]) for n in v0)
    assert not [k for k in worker_mod.CACHE.entries if k[0] == "runner"]  # the interrupted sweep dropped its sheets


# -- the default: an embedded cluster for a dataset of more than one ----------------------------
def test_where_a_dataset_runs_by_default(monkeypatch):
    monkeypatch.setattr(cluster_mod, "cores", lambda: 2)
    assert where(None, None, 2) == AUTO and where(None, 3, 1) == "local"  # more than one: timed; workers: a cluster
    assert where(None, None, 1) is None and where(INLINE, None, 8) is None  # one pair, or inline: in process
    assert where(None, None, 8, shippable=False) is None  # a model built in memory cannot be loaded by a worker
    assert where("tcp://10.0.0.1:8786", None, 1) == "tcp://10.0.0.1:8786"
    with pytest.raises(QueryError, match="drop one of them"):
        where(INLINE, 2, 8)
    monkeypatch.setattr(cluster_mod, "cores", lambda: 1)
    assert where(None, None, 8) is None  # one core: a cluster never pays for itself


def test_a_script_s_top_level_is_told_apart_from_its_main_guard(tmp_path):
    script = tmp_path / "sweep.py"
    script.write_text("from dfgpt.batch.cluster import unguarded_script\n"
                      "print(unguarded_script())\n"
                      "def f():\n    return unguarded_script()\n"
                      "print(f())\n"
                      "if __name__ == '__main__':\n    print(unguarded_script(), f())\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True", "False", "False"]  # a worker would run the first two again
    code = "from dfgpt.batch.cluster import unguarded_script; print(unguarded_script())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# -- ablation sweeps over inputs -----------------------------------------------------------------
def ablated(text, cells, metric, how, reference):
    """The oracle: the metric of one input after `sheet.ablate`, read by the engine."""
    s = MODEL.sheet(text)
    m = parse_metric(metric, s)
    s.ablate(cells, how=how, reference=reference)
    return m(s)


@pytest.mark.parametrize("how", ["zero", "mean"])
@pytest.mark.parametrize("over,metric", [("resid_pre", METRIC), ("head_out", "kl"),
                                         ("pattern", lambda s: s.value("logit[8][B]"))])
def test_an_ablation_sweep_is_each_input_s_ablation_bit_for_bit(how, over, metric):
    reference = INPUTS if how == "mean" else None
    r = dfgpt.ablation_sweep(MODEL, INPUTS, metric, over=over, how=how, scheduler=INLINE)
    assert r.axes[0] == "input" and r.values.shape[0] == len(INPUTS) and r.method == f"{how} ablation"
    keys = sorted(r.cells)[::7]  # a spread of sites, every input
    for i, text in enumerate(INPUTS):
        m = parse_metric(metric, MODEL.sheet(text))
        assert r.base[i] == m(MODEL.sheet(text)) == r.clean[i] == r.corrupted[i]
        for key in keys:
            assert r.values[(i, *key)] == ablated(text, r.cells[key], metric, how, reference), (i, r.cells[key])
    mean = r.mean()
    assert same(mean.values, r.values.mean(axis=0)) and mean.clean == r.base.mean()
    assert r.top(3) == mean.top(3)


def test_a_mean_ablation_averages_over_its_reference_inputs():
    other = ["AAAAAAAAA", "CCCCCCCCC"]
    r = dfgpt.ablation_sweep(MODEL, INPUTS[:2], METRIC, over="head_out", how="mean", reference=other,
                             scheduler=INLINE)
    cells = r.cells[(0, 1, 8)]
    for i, text in enumerate(INPUTS[:2]):
        assert r.value(input=i, layer=0, head=1, position=8) == ablated(text, cells, METRIC, "mean", other)
    # Zero is no "absence of B" on this model: zeroing one head moves the gap little. Its mean over inputs
    # without a B (the corrupted ones) moves head 1 of block 0 at the last position most, as patching found.
    zero = dfgpt.ablation_sweep(MODEL, INPUTS, METRIC, over="head_out", scheduler=INLINE)
    assert np.abs(zero.values - zero.base[:, None, None, None]).max() < 0.5
    no_b = dfgpt.ablation_sweep(MODEL, INPUTS, METRIC, over="head_out", how="mean",
                                reference=[b for _, b in PAIRS], scheduler=INLINE)
    assert no_b.top(1)[0][0] == "h[0].attn.y[8][16:32]" and no_b.mean().value(layer=0, head=1, position=8) < 1


def test_the_ablation_sweep_prints_its_inputs_and_their_unablated_metric():
    r = dfgpt.ablation_sweep(MODEL, INPUTS[:2], METRIC, over="resid_pre", how="mean", scheduler=INLINE)
    assert repr(r) == "AblationSweep(resid_pre, logit_diff:B,C@8, input 2 × layer 3 × position 9, mean ablation)"
    text = r.table()
    assert text.splitlines()[0] == f"mean ablation sweep of logit_diff:B,C@8 (mean of 2 inputs) over resid_pre " \
                                   f"(unablated {r.base.mean():+.3f})"
    assert f"    1     {r.base[1]:+.3f}  CBBACAAAA" in text and r.texts == tuple(INPUTS[:2])
    assert same(r.input(1).values, r.values[1]) and "<table" in r._repr_html_()
    with pytest.raises(IndexError_, match="input 2 is out of range"):
        r.input(2)


@pytest.mark.parametrize("kw,error,words", [
    ({"how": "resample"}, QueryError, "dfgpt.sweep_pairs(model, [(other, input)"),
    ({"how": "zero", "reference": ["CABACAAAA"]}, QueryError, "how='zero' takes none"),
    ({"how": "mean", "reference": ["CAB"]}, SequenceLengthError, "references of the same length"),
    ({"inputs": ["CABACAAAA", "CAB"]}, SequenceLengthError, "input 1 has 3 tokens"),
    ({"inputs": []}, QueryError, "inputs is empty"),
    ({"inputs": ["CABACAAAX"]}, TokenError, "input 0"),
    ({"inputs": "CABACAAAA"}, QueryError, "a list of texts or token lists"),
])
def test_bad_ablation_sweeps_are_refused_and_say_how_to_fix(kw, error, words):
    kw = {"inputs": INPUTS, **kw}
    with pytest.raises(error) as e:
        dfgpt.ablation_sweep(MODEL, kw.pop("inputs"), METRIC, scheduler=INLINE, **kw)
    assert words in str(e.value)


# -- influence over inputs -----------------------------------------------------------------------
def score_in(res, tensor, index):
    """A cell's score in one input's `sheet.influence` (0 where the input has not the cell)."""
    sc = res.scores.get(tensor)
    return float(sc[index]) if sc is not None and all(i < n for i, n in zip(index, sc.shape)) else 0.0


@pytest.mark.parametrize("by", ["grad*value", "grad"])
def test_dataset_influence_ranks_the_mean_of_each_input_s_influence(by):
    r = dfgpt.influence(MODEL, RAGGED, "logit[-1][A]", top=12, by=by)
    assert r.targets == ("logit[5][A]", "logit[8][A]", "logit[4][A]", "logit[3][A]")
    per = [MODEL.sheet(x).influence(t, top=1, by=by) for x, t in zip(RAGGED, r.targets)]
    assert r.target_values.tolist() == [res.target_value for res in per]
    for j, it in enumerate(r):
        each = [score_in(res, it.tensor, it.index) for res in per]
        assert r.scores[:, j].tolist() == each and it.score == np.mean(each)
    # the mean of every scored cell, ranked with sheet.influence's total order: no cell left out scores more
    best = abs(r[len(r) - 1].score)
    for t in {t for res in per for t in res.scored}:
        mean = np.mean([np.pad(res.scores[t], [(0, n - m) for n, m in zip(per[1].scores[t].shape,
                        res.scores[t].shape)]) if t in res.scores else 0 for res in per], axis=0)
        ranked = {it.index for it in r if it.tensor == t}
        assert all(abs(v) <= best for idx, v in np.ndenumerate(mean) if idx not in ranked)
    scores = [abs(it.score) for it in r]
    assert scores == sorted(scores, reverse=True)


def test_dataset_influence_of_one_input_is_sheet_influence():
    for by in ("grad*value", "grad"):
        one = dfgpt.influence(MODEL, ["CABACA"], "logit[5][A]", top=20, by=by)
        ref = MODEL.sheet("CABACA").influence("logit[5][A]", top=20, by=by)
        assert [(i.cell, i.score) for i in one] == [(i.cell, i.score) for i in ref]
    s = MODEL.sheet("CABACA")
    assert dfgpt.influence(s, "logit[5][A]", top=3).items == s.influence("logit[5][A]", top=3).items


def test_dataset_influence_of_a_logit_difference_is_the_difference_of_two_cells():
    r = dfgpt.influence(MODEL, RAGGED[:2], METRIC, top=6)
    assert r.targets == ("logit[5][B] - logit[5][C]", "logit[8][B] - logit[8][C]")
    for i, x in enumerate(RAGGED[:2]):
        s = MODEL.sheet(x)
        b, c = s.influence("logit[-1][B]", top=1), s.influence("logit[-1][C]", top=1)
        assert r.target_values[i] == b.target_value - c.target_value
        for j, it in enumerate(r):
            assert r.scores[i, j] == score_in(b, it.tensor, it.index) - score_in(c, it.tensor, it.index)
    at = dfgpt.influence(MODEL, RAGGED[:2], "prob:B@3", top=2)
    assert at.targets == ("prob[3][B]", "prob[3][B]")
    text = r.table()
    assert text.startswith("top 6 cells for logit_diff:B,C over 2 inputs") and "<table" in r._repr_html_()
    assert r.input(1) == [(it.cell, float(v)) for it, v in zip(r, r.scores[1])]


@pytest.mark.parametrize("target,kw,error,words", [
    ("logit[-1][A]", {"by": "ablation"}, QueryError, "its mean is not defined"),
    ("kl", {}, QueryError, "logprob and kl are not cells"),
    ("logprob:A", {}, QueryError, "logprob and kl are not cells"),
    ("logit[5][A]", {}, IndexError_, "input 2 (ABCAB)"),
    ("logit[-1]", {}, IndexError_, "selects more than one cell"),
    ("logit[-1][A]", {"top": 0}, QueryError, "top must be a whole number"),
    (None, {}, QueryError, "the target is one cell's name"),
])
def test_dataset_influence_refuses_what_it_cannot_mean(target, kw, error, words):
    with pytest.raises(error) as e:
        dfgpt.influence(MODEL, RAGGED, target, **kw)
    assert words in str(e.value)


# -- the task score over inputs ------------------------------------------------------------------
def test_the_task_score_over_inputs_is_per_input_and_its_mean():
    texts = ["CABACA", "CCCBBB", "ABCABC", "BBBBBB"]
    r = dfgpt.task_score(MODEL, texts)
    assert r.outputs == tuple(MODEL.generate(t, max_new_tokens=6) for t in texts)
    assert r.sorted.tolist() == [o == "".join(sorted(t)) for t, o in zip(texts, r.outputs)]
    assert r.accuracy == r.sorted.mean() and not r.broken.any()
    s = MODEL.sheet("CABACA")
    s.set("lm_head.w[A][26]", -5.0)
    whole = dfgpt.task_score(s)  # every input, under the sheet's edit
    old = s.task_score()
    assert (whole.correct, whole.total) == (old.correct, old.total)
    assert {f"{a} -> {b}" for a, b, k in zip(whole.inputs, whole.outputs, whole.broken) if k} == set(old.newly_broken)
    some = dfgpt.task_score(s, [*texts, [2, 2, 2, 2, 2, 2]])
    by_input = dict(zip(whole.inputs, zip(whole.outputs, whole.sorted, whole.letters, whole.broken)))
    assert list(zip(some.outputs, some.sorted, some.letters, some.broken)) == [by_input[t] for t in some.inputs]
    assert some.letters.tolist() == [np.mean([a == b for a, b in zip(o, sorted(t))])
                                     for t, o in zip(some.inputs, some.outputs)]
    assert str(some).startswith(f"sort task over 5 inputs: {some.correct}/5 sorted")
    assert some.table().splitlines()[2].startswith("  CABACA ") and "<table" in some._repr_html_()


@pytest.mark.parametrize("model,inputs,error,words", [
    (MODEL, ["CABAC"], SequenceLengthError, "sorts 6 letters"),
    (MODEL, ["CABACA", "CAB"], SequenceLengthError, "input 1 has 3 tokens"),
    (MODEL, ["CABACX"], TokenError, "input 0"),
    ("aab", None, QueryError, "tokens A, B, C"),
    (3, None, QueryError, "the model first"),
])
def test_the_task_score_refuses_inputs_it_cannot_sort(model, inputs, error, words):
    with pytest.raises(error) as e:
        dfgpt.task_score(model, inputs)
    assert words in str(e.value)


def test_inputs_from_files(tmp_path):
    jl = tmp_path / "inputs.jsonl"
    jl.write_text('"CABACA"\n\n[2, 0, 1, 0, 2, 0]\n{"input": "BBBCCC"}\n')
    assert dfgpt.read_inputs(jl) == ["CABACA", [2, 0, 1, 0, 2, 0], "BBBCCC"]
    txt = tmp_path / "inputs.txt"
    txt.write_text("CABACA\n\nBBBCCC\n")
    assert dfgpt.read_inputs(txt) == ["CABACA", "BBBCCC"]
    assert dfgpt.task_score(MODEL, str(jl)).inputs == ("CABACA", "CABACA", "BBBCCC")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"clean": "CAB", "corrupted": "CAC"}) + "\n")
    with pytest.raises(QueryError, match="read by read_pairs"):
        dfgpt.read_inputs(pairs)
    with pytest.raises(QueryError, match="cannot read the inputs file"):
        dfgpt.read_inputs(tmp_path / "missing.txt")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(QueryError, match="holds no input"):
        dfgpt.read_inputs(tmp_path / "empty.jsonl")


def test_the_cli_ablates_and_ranks_influence_over_inputs(tmp_path, capsys):
    path = tmp_path / "inputs.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in INPUTS[:2]))
    assert main(["patch", "--ablate", "mean", "--inputs", str(path), "--metric", METRIC, "--over", "head_out",
                 "--scheduler", INLINE, "--no-progress"]) == 0
    want = dfgpt.ablation_sweep(MODEL, INPUTS[:2], METRIC, over="head_out", how="mean", scheduler=INLINE)
    assert capsys.readouterr().out == want.table() + "\n"
    ragged = tmp_path / "ragged.txt"
    ragged.write_text("\n".join(RAGGED) + "\n")
    assert main(["why", "logit[-1][A]", "--inputs", str(ragged), "--top", "4"]) == 0
    assert capsys.readouterr().out == dfgpt.influence(MODEL, RAGGED, "logit[-1][A]", top=4).table() + "\n"
    assert main(["why", METRIC, "--inputs", str(ragged), "--top", "2", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["targets"][1] == "logit[8][B] - logit[8][C]" and len(got["top"][0]["scores"]) == 4
    for argv, words in ((["patch", "--ablate", "zero"], "give --inputs"),
                        (["patch", "--inputs", str(path)], "for --ablate zero|mean"),
                        (["patch", "--ablate", "zero", "--inputs", str(path), "--reference", str(path)],
                         "--reference is what --ablate mean averages over"),
                        (["why", "logit[-1][A]", "--inputs", str(ragged), "--by", "head"], "drop --by"),
                        (["why", "logit[-1][A]", "--inputs", str(ragged), "--rank", "ablation"], "not defined")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("dfgpt: error: ") and words in err and err.count("\n") == 1


# -- on a Dask cluster ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client():
    with dask_client(2) as c:
        yield c


def test_a_distributed_sweep_equals_the_in_process_one_exactly(client):
    for over, metric in (("head_out", METRIC), ("resid_pre", "kl")):
        here = dfgpt.sweep_pairs(MODEL, PAIRS, metric, over=over, scheduler="inline")
        for scheduler, chunk in ((client, 7), (client.scheduler.address, None)):
            there = dfgpt.sweep_pairs(MODEL, PAIRS, metric, over=over, scheduler=scheduler, chunk=chunk)
            assert same(here.values, there.values) and same(here.clean, there.clean)
            assert same(here.corrupted, there.corrupted) and here.axes == there.axes and not there.failed
            assert here.table() == there.table()


def test_a_fast_mode_sweep_on_the_cluster_equals_the_in_process_one_exactly(client, tmp_path):
    """float32: a group's linear layers run as one product, so the bits follow the group; chunks never split one."""
    cfg = dfgpt.Config(n_layer=3, n_head=2, n_embd=8, block_size=9, vocab_size=40, n_inner=12, dtype="float32")
    random_model(cfg, seed=4)[0].save(tmp_path / "f32")
    model = dfgpt.load(tmp_path / "f32")
    pairs = [([1, 2, 3, 4, 5, 6, 7, 8], [1, 9, 3, 4, 5, 6, 7, 8]), ([5, 2, 3, 4, 5, 6, 7, 1], [5, 2, 3, 4, 8, 6, 7, 1])]
    here = dfgpt.sweep_pairs(model, pairs, "logit_diff:#3,#4", over="head_out", scheduler="inline")
    assert np.ptp(here.values) > 0.05
    for chunk in (5, 13, None):
        there = dfgpt.sweep_pairs(model, pairs, "logit_diff:#3,#4", over="head_out", scheduler=client, chunk=chunk)
        assert same(here.values, there.values) and not there.failed


def test_a_worker_killed_mid_sweep_loses_and_duplicates_no_site(client, tmp_path):
    marker = str(tmp_path / "killed")
    driver = os.getpid()

    def metric(s):  # the first chunk of pair 2 to run on a worker kills that worker's process, mid-sweep
        if os.getpid() != driver and s.text in PAIRS[2] and not os.path.exists(marker):
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL))  # one worker only wins the marker
            except FileExistsError:
                pass
            else:
                os._exit(1)
        return s.value("logit[8][B]") - s.value("logit[8][C]")

    here = dfgpt.sweep_pairs(MODEL, PAIRS, metric, over="head_out", scheduler="inline")
    there = dfgpt.sweep_pairs(MODEL, PAIRS, metric, over="head_out", scheduler=client, chunk=40)
    assert os.path.exists(marker)  # a worker did die
    assert same(here.values, there.values) and not there.failed and np.isfinite(there.values).all()
    client.wait_for_workers(2, timeout=30)


def test_a_chunk_that_fails_every_retry_is_reported_or_kept_as_a_hole(client):
    def metric(s):
        if s.text == PAIRS[1][0] or s.text == PAIRS[1][1]:
            raise ValueError("this pair breaks the metric")
        return s.value("logit[8][B]")

    with pytest.raises(ClusterError, match="failed on every retry.*this pair breaks the metric"):
        dfgpt.sweep_pairs(MODEL, PAIRS[:3], metric, over="resid_pre", scheduler=client, retries=0, chunk=27)
    r = dfgpt.sweep_pairs(MODEL, PAIRS[:3], metric, over="resid_pre", scheduler=client, retries=1, chunk=27,
                          partial=True)
    assert np.isnan(r.values[1]).all() and np.isfinite(r.values[[0, 2]]).all()
    assert len(r.failed) == 27 and r.failed[0][0] == 1 and "27 sites failed" in repr(r)
    here = dfgpt.sweep_pairs(MODEL, [PAIRS[0], PAIRS[2]], metric, over="resid_pre", scheduler="inline")
    assert same(r.values[[0, 2]], here.values)


def test_an_interrupt_cancels_the_distributed_sweep(client, monkeypatch):
    class Interrupting:
        def __init__(self, *a, **k):
            pass

        def update(self, n):
            raise KeyboardInterrupt

        def close(self):
            pass

    monkeypatch.setattr(cluster_mod, "tqdm", Interrupting)
    with pytest.raises(KeyboardInterrupt):
        dfgpt.sweep_pairs(MODEL, PAIRS, METRIC, over="head_out", scheduler=client, chunk=10)
    monkeypatch.undo()
    r = dfgpt.sweep_pairs(MODEL, PAIRS[:1], METRIC, over="head_out", scheduler=client)  # the cluster still works
    assert same(r.values, dfgpt.sweep_pairs(MODEL, PAIRS[:1], METRIC, over="head_out").values)


def test_the_cli_sweeps_pairs_in_process_and_on_a_cluster(client, tmp_path, capsys):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(list(p)) + "\n" for p in PAIRS[:2]))
    assert main(["patch", "--pairs", str(path), "--metric", METRIC, "--over", "resid_pre",
                 "--scheduler", "inline"]) == 0
    here = capsys.readouterr().out
    assert main(["patch", "--pairs", str(path), "--metric", METRIC, "--over", "resid_pre",
                 "--scheduler", client.scheduler.address]) == 0
    assert capsys.readouterr().out == here
    assert "(mean of 2 pairs)" in here and "CBBACAAAA / CCBACAAAA" in here
    assert main(["patch", "--clean", "CAB", "--pairs", str(path)]) == 2
    assert "either --pairs or --clean" in capsys.readouterr().err


def test_a_mean_ablation_takes_a_dataset_of_inputs():
    texts = [a for a, _ in PAIRS]
    by_sheet, by_text = MODEL.sheet("CABACAAAA"), MODEL.sheet("CABACAAAA")
    by_sheet.ablate("h[0].attn.y[8][16:32]", how="mean", reference=[MODEL.sheet(t) for t in texts])
    by_text.ablate("h[0].attn.y[8][16:32]", how="mean", reference=texts[:2] + [MODEL.encode(t) for t in texts[2:]])
    assert np.array_equal(by_sheet.values("logit"), by_text.values("logit"))
    before = by_text.values("logit").copy()
    with pytest.raises(dfgpt.DfgptError, match="not in the vocabulary"):
        by_text.ablate("h[0].attn.y[8][0:16]", how="mean", reference=["CABACAAAX"])
    assert np.array_equal(by_text.values("logit"), before)  # refused: nothing changed


def test_an_embedded_local_cluster_needs_no_set_up_and_leaves_no_process():
    import multiprocessing

    pytest.importorskip("distributed")
    before = set(multiprocessing.active_children())
    r = dfgpt.sweep_pairs(MODEL, PAIRS[:2], METRIC, over="resid_pre", scheduler="local", workers=2, progress=False)
    assert same(r.values, dfgpt.sweep_pairs(MODEL, PAIRS[:2], METRIC, over="resid_pre", scheduler="inline").values)
    assert set(multiprocessing.active_children()) <= before
    with pytest.raises(QueryError, match="workers must be a whole number"):
        dfgpt.sweep_pairs(MODEL, PAIRS[:1], METRIC, workers=0)
    dask = pytest.importorskip("dask")
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), \
            pytest.raises(ClusterError, match="no Dask scheduler answers"):
        dfgpt.sweep_pairs(MODEL, PAIRS[:1], METRIC, scheduler="tcp://127.0.0.1:9")


def test_a_distributed_ablation_sweep_equals_the_in_process_one_exactly(client):
    for how, over, metric in (("zero", "head_out", METRIC), ("mean", "resid_pre", "kl"),
                              ("mean", "head_out", lambda s: s.value("logit[8][B]"))):
        here = dfgpt.ablation_sweep(MODEL, INPUTS, metric, over=over, how=how, scheduler=INLINE)
        there = dfgpt.ablation_sweep(MODEL, INPUTS, metric, over=over, how=how, scheduler=client, chunk=7)
        assert same(here.values, there.values) and same(here.base, there.base) and not there.failed
        assert here.table() == there.table()


def test_a_dataset_runs_on_an_embedded_cluster_when_its_work_pays_and_leaves_no_process(monkeypatch):
    import multiprocessing

    pytest.importorskip("distributed")
    started = []
    real = cluster_mod._client

    def spy(scheduler, workers):
        started.append(scheduler)
        return real(scheduler, workers)

    monkeypatch.setattr(cluster_mod, "_client", spy)
    for mod in (cluster_mod, api):
        monkeypatch.setattr(mod, "cores", lambda: 2)
    monkeypatch.setattr(api, "CLUSTER_START", 0.0)  # a free start-up: any work left pays for it
    before = set(multiprocessing.active_children())
    r = dfgpt.ablation_sweep(MODEL, INPUTS[:3], METRIC, over="resid_pre", how="mean", progress=False)
    assert started == ["local"]  # the first input here, the rest on the embedded cluster, closed at the end
    assert r.ran_on.startswith("a local cluster of 2 workers (about ") and not r.failed
    assert set(multiprocessing.active_children()) <= before
    here = dfgpt.ablation_sweep(MODEL, INPUTS[:3], METRIC, over="resid_pre", how="mean", scheduler=INLINE)
    assert same(r.values, here.values) and same(r.base, here.base)
    one = dfgpt.sweep_pairs(MODEL, PAIRS[:1], METRIC, over="resid_pre", progress=False)  # one pair: in process
    alone = dfgpt.sweep_pairs(MODEL, PAIRS[:1], METRIC, scheduler=INLINE)
    assert started == ["local"] and same(one.values, alone.values)
