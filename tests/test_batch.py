"""Sweeps over datasets of pairs: in process, and on a local Dask cluster of two worker processes.

The oracle of a dataset sweep is the one-pair sweep of each pair: the same values bit for
bit, in the same order. A distributed sweep must equal the in-process one exactly, lose and
duplicate no site when a worker dies mid-sweep, and leave every sheet as it was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import dfgpt
from dfgpt.batch import chunks as chunks_mod
from dfgpt.batch import cluster as cluster_mod
from dfgpt.batch.chunks import chunks, work
from dfgpt.cli import main
from dfgpt.errors import ClusterError, QueryError, SequenceLengthError

MODEL = dfgpt.load("sort")
PAIRS = [("CABACAAAA", "CACACAAAA"), ("CBBACAAAA", "CCBACAAAA"), ("ABCABCAAB", "ACCABCAAB"), ("BACCBAAAB", "BABCBAAAB")]
METRIC = "logit_diff:B,C"


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
    r = dfgpt.sweep(MODEL, PAIRS, metric, over=over)
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
    spec = dfgpt.sweep(MODEL, PAIRS[:2], METRIC, over="resid_pre")
    call = dfgpt.sweep("sort", ids, lambda s: s.value("logit[8][B]") - s.value("logit[8][C]"), over="resid_pre")
    assert same(spec.values, call.values) and spec.axes == call.axes


def test_the_result_prints_short_and_as_html():
    r = dfgpt.sweep(MODEL, PAIRS[:2], METRIC, over="resid_pre")
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
    assert same(dfgpt.sweep(MODEL, str(path), METRIC).values, dfgpt.sweep(MODEL, PAIRS[:2], METRIC).values)


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
        dfgpt.sweep(MODEL, pairs, METRIC)
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
        dfgpt.sweep(built, PAIRS[:1], METRIC, scheduler="tcp://127.0.0.1:1")


def test_import_dfgpt_does_not_import_dask():
    code = "import sys, dfgpt; print(sorted(m for m in ('dask', 'distributed') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_chunks_cover_every_item_once_in_order():
    items = work(3, [(0,), (1,), (2,)])
    for workers, size in ((1, None), (2, None), (5, None), (1, 4), (1, 100)):
        parts = chunks(items, workers, size)
        assert [it for p in parts for it in p] == items


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
        dfgpt.sweep(MODEL, PAIRS, metric, over="head_out")
    after = snapshot(clean), snapshot(bad)
    for (v0, p0), (v1, p1) in zip(before, after):
        assert p0 == p1 == {} and all(np.array_equal(v0[n], v1[n]) for n in v0)
    assert not chunks_mod._RUNNERS  # the interrupted dataset sweep dropped its sheets


# -- on a Dask cluster ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address="127.0.0.1:0")
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def test_a_distributed_sweep_equals_the_in_process_one_exactly(client):
    for over, metric in (("head_out", METRIC), ("resid_pre", "kl")):
        here = dfgpt.sweep(MODEL, PAIRS, metric, over=over)
        for scheduler, chunk in ((client, 7), (client.scheduler.address, None)):
            there = dfgpt.sweep(MODEL, PAIRS, metric, over=over, scheduler=scheduler, chunk=chunk)
            assert same(here.values, there.values) and same(here.clean, there.clean)
            assert same(here.corrupted, there.corrupted) and here.axes == there.axes and not there.failed
            assert here.table() == there.table()


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

    here = dfgpt.sweep(MODEL, PAIRS, metric, over="head_out")
    there = dfgpt.sweep(MODEL, PAIRS, metric, over="head_out", scheduler=client, chunk=40)
    assert os.path.exists(marker)  # a worker did die
    assert same(here.values, there.values) and not there.failed and np.isfinite(there.values).all()
    client.wait_for_workers(2, timeout=30)


def test_a_chunk_that_fails_every_retry_is_reported_or_kept_as_a_hole(client):
    def metric(s):
        if s.text == PAIRS[1][0] or s.text == PAIRS[1][1]:
            raise ValueError("this pair breaks the metric")
        return s.value("logit[8][B]")

    with pytest.raises(ClusterError, match="failed on every retry.*this pair breaks the metric"):
        dfgpt.sweep(MODEL, PAIRS[:3], metric, over="resid_pre", scheduler=client, retries=0, chunk=27)
    r = dfgpt.sweep(MODEL, PAIRS[:3], metric, over="resid_pre", scheduler=client, retries=1, chunk=27, partial=True)
    assert np.isnan(r.values[1]).all() and np.isfinite(r.values[[0, 2]]).all()
    assert len(r.failed) == 27 and r.failed[0][0] == 1 and "27 sites failed" in repr(r)
    here = dfgpt.sweep(MODEL, [PAIRS[0], PAIRS[2]], metric, over="resid_pre")
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
        dfgpt.sweep(MODEL, PAIRS, METRIC, over="head_out", scheduler=client, chunk=10)
    monkeypatch.undo()
    r = dfgpt.sweep(MODEL, PAIRS[:1], METRIC, over="head_out", scheduler=client)  # the cluster still works
    assert same(r.values, dfgpt.sweep(MODEL, PAIRS[:1], METRIC, over="head_out").values)


def test_the_cli_sweeps_pairs_in_process_and_on_a_cluster(client, tmp_path, capsys):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(list(p)) + "\n" for p in PAIRS[:2]))
    assert main(["patch", "--pairs", str(path), "--metric", METRIC, "--over", "resid_pre"]) == 0
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
    r = dfgpt.sweep(MODEL, PAIRS[:2], METRIC, over="resid_pre", scheduler="local", workers=2, progress=False)
    assert same(r.values, dfgpt.sweep(MODEL, PAIRS[:2], METRIC, over="resid_pre").values)
    assert set(multiprocessing.active_children()) <= before
    with pytest.raises(QueryError, match="workers must be a whole number"):
        dfgpt.sweep(MODEL, PAIRS[:1], METRIC, workers=0)
    dask = pytest.importorskip("dask")
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), \
            pytest.raises(ClusterError, match="no Dask scheduler answers"):
        dfgpt.sweep(MODEL, PAIRS[:1], METRIC, scheduler="tcp://127.0.0.1:9")
