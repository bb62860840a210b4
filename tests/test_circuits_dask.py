"""Circuit discovery on Dask: EAP, EAP-IG and ACDC over pairs give the in-process circuit bit for bit,
whatever worker dies, and stay in process when a cluster would not pay."""

from __future__ import annotations

import os
import signal

import families
import numpy as np
import pytest
from conftest import random_model
from serving import dask_client

import dfgpt
from dfgpt.batch import circuits as bc
from dfgpt.errors import ClusterError

SORT = dfgpt.load("sort")
PAIRS = [("CABACAAAA", "CACACAAAA"), ("CBBACAAAA", "CCBACAAAA"), ("ABCABCAAA", "ABCBBCAAA"),
         ("CCBAAAAAA", "CCBABAAAA"), ("BACBACAAA", "BACCACAAA")] * 2 + [("CABACA", "CACACA"), ("BBCACA", "BBCCCA")]


@pytest.fixture(scope="module")
def client():
    with dask_client(2) as c:
        yield c


def same(a, b):
    """Two circuits alike to the bit: scores, kept edges, curve, value and both ends."""
    return (a.edges == b.edges and np.array_equal(a.scores, b.scores) and a.kept == b.kept and a.curve == b.curve
            and a.value == b.value and a.clean == b.clean and a.corrupted == b.corrupted and a.params == b.params)


@pytest.mark.parametrize("method, kw", [(dfgpt.eap, {"top": 12}), (dfgpt.eap_ig, {"steps": 3}),
                                        (dfgpt.acdc, {"threshold": 0.05})], ids=["eap", "eap-ig", "acdc"])
def test_discovery_on_dask_is_the_in_process_circuit_bit_for_bit(client, method, kw):
    pairs = PAIRS if method is not dfgpt.acdc else PAIRS[:6]  # EAP: 12 pairs of two lengths, 3 blocks
    here = method(SORT, pairs, "logit_diff:B,C", scheduler="inline", **kw)
    there = method(SORT, pairs, "logit_diff:B,C", scheduler=client, **kw)
    assert same(here, there) and 0 < len(there.kept) < len(there.edges)
    assert here.ran_on == "this process (scheduler='inline')" and "(2 workers)" in there.ran_on


def test_discovery_on_dask_on_a_family_checkpoint_loaded_by_path(client, tmp_path):
    families.make("llama", tmp_path)
    model = dfgpt.load(str(tmp_path), dtype="float64")
    pairs = [([3, 17, 5, 40, 22, 9, 31], [3, 17, 8, 40, 22, 1, 31]),
             ([7, 2, 30, 11, 4, 45, 6], [7, 2, 30, 12, 4, 45, 26])]
    for method, kw in ((dfgpt.eap, {}), (dfgpt.acdc, {"threshold": 0.05})):
        here = method(model, pairs, "kl", scheduler="inline", **kw)
        assert same(here, method(model, pairs, "kl", scheduler=client, **kw))


def _killing(monkeypatch, client, at):
    """The `at`-th gather of this process first kills one worker's process (its nanny starts another)."""
    real, calls = bc._Cluster.gather, [0]

    def gather(self, futures):
        calls[0] += 1
        if calls[0] == at:
            pids = client.run(os.getpid)  # a local cluster: its workers are this machine's processes
            os.kill(pids[sorted(pids)[0]], signal.SIGKILL)
        return real(self, futures)

    monkeypatch.setattr(bc._Cluster, "gather", gather)
    return calls


@pytest.mark.parametrize("method, kw, at", [(dfgpt.eap, {}, 2), (dfgpt.acdc, {"threshold": 0.05}, 40)],
                         ids=["eap", "acdc"])
def test_a_worker_killed_mid_discovery_loses_nothing(monkeypatch, method, kw, at):
    pairs = PAIRS[:6]
    here = method(SORT, pairs, "logit_diff:B,C", scheduler="inline", **kw)
    with dask_client(2) as own:  # its own cluster: the others' tests need not wait for the worker to come back
        calls = _killing(monkeypatch, own, at)
        there = method(SORT, pairs, "logit_diff:B,C", scheduler=own, **kw)
    assert calls[0] > at and same(here, there)


def test_an_interrupt_on_the_cluster_cancels_and_leaves_every_sheet_as_it_was(client, monkeypatch):
    sheets = [(SORT.sheet(a), SORT.sheet(b)) for a, b in PAIRS[:4]]
    before = [(s.engine.revision, s.values("logit").copy()) for pair in sheets for s in pair]
    real, calls = bc._Cluster.gather, [0]

    def gather(self, futures):
        calls[0] += 1
        if calls[0] == 5:
            raise KeyboardInterrupt
        return real(self, futures)

    monkeypatch.setattr(bc._Cluster, "gather", gather)
    with pytest.raises(KeyboardInterrupt):
        dfgpt.acdc(SORT, sheets, "logit_diff:B,C", scheduler=client)
    after = [(s.engine.revision, s.values("logit")) for pair in sheets for s in pair]
    assert all(r == r2 and np.array_equal(v, v2) for (r, v), (r2, v2) in zip(before, after))


def test_where_discovery_runs_by_default():
    # a few pairs on sort: the estimate says a local cluster would not pay for its start-up
    c = dfgpt.eap(SORT, PAIRS[:3], "logit_diff:B,C")
    assert c.ran_on == "this process (3 pairs: one block of at most 8, one task)"
    c = dfgpt.eap(SORT, PAIRS, "logit_diff:B,C")
    assert c.ran_on.startswith("this process (about ") and "would not pay" in c.ran_on
    c = dfgpt.acdc(SORT, PAIRS[:3], "logit_diff:B,C")
    assert c.ran_on.startswith("this process (about ") and "and its round trips per edge" in c.ran_on
    assert dfgpt.eap(SORT, PAIRS[:1], "logit_diff:B,C").ran_on == "this process (one pair)"
    # ACDC pays on a cluster only when an edge's test costs more than its round trips
    assert not bc._pays(1.0, 172) and bc._pays(600.0, 3135) and not bc._pays(60.0, 32491)
    # a Python metric stays in process; on a cluster it is refused, saying why
    c = dfgpt.acdc(SORT, PAIRS[:2], lambda s: s.value("logit[8][B]"), threshold=0.5)
    assert c.ran_on == "this process (a Python metric: a cluster reads a spec)"
    with pytest.raises(ClusterError, match="metric spec"):
        dfgpt.acdc(SORT, PAIRS[:2], lambda s: s.value("logit[8][B]"), scheduler="tcp://127.0.0.1:1")


def test_a_model_built_in_memory_is_refused_on_a_cluster_and_runs_in_process_by_default(client):
    model, _ = random_model(dfgpt.Config(n_layer=1, n_head=2, n_embd=8, block_size=7, vocab=("A", "B", "C")), seed=1)
    pairs = [("CABACA", "CACACA"), ("CBBACA", "CCBACA")]
    assert dfgpt.eap(model, pairs, "logit_diff:B,C").ran_on.startswith("this process (the model was built")
    with pytest.raises(ClusterError, match="by name or path"):
        dfgpt.eap(model, pairs, "logit_diff:B,C", scheduler=client)



def test_the_cli_runs_a_discovery_on_a_cluster_by_address(client, tmp_path, capsys):
    from dfgpt.cli.main import main

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(f'["{a}", "{b}"]\n' for a, b in PAIRS[:4]))
    assert main(["circuit", "--pairs", str(pairs), "--metric", "logit_diff:B,C", "--method", "eap", "--top", "5",
                 "--scheduler", client.scheduler.address, "-o", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert f"ran on {client.scheduler.address} (" in out
    here = dfgpt.eap(SORT, PAIRS[:4], "logit_diff:B,C", top=5, scheduler="inline")
    assert same(dfgpt.Circuit.load(tmp_path / "c.json"), here)
    assert main(["circuit", "--pairs", str(pairs), "--metric", "logit_diff:B,C", "--scheduler", "inline"]) == 0
    assert "ran on" not in capsys.readouterr().out  # in process, as without --scheduler
