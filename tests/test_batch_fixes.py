"""Dataset sweeps: the plan and the worker apart, a worker cache keyed by the checkpoint, one meaning per
argument, a default scheduler chosen by the work, and Dask that never hangs nor raises raw errors.

Issue 28 items 1 (a kept client swept a replaced checkpoint's old model), 9 (arguments refused on a
cluster only), 10 (an address that does not speak Dask hung), 12 (raw exceptions) and 14 (small
sweeps slow by default), and issue 27's split of `batch/chunks.py`. The oracle of every distributed
value is the in-process sweep, bit for bit.
"""

from __future__ import annotations

import ast
import http.server
import inspect
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import random_model
from serving import dask_client

import dfgpt
from dfgpt.batch import api, plan, worker
from dfgpt.batch import cluster as cluster_mod
from dfgpt.errors import ClusterError, QueryError

MODEL = dfgpt.load("sort")
PAIRS = [("CABACAAAA", "CACACAAAA"), ("CBBACAAAA", "CCBACAAAA"), ("ABCABCAAB", "ACCABCAAB"), ("BACCBAAAB", "BABCBAAAB")]
METRIC = "logit_diff:B,C"
CFG = dfgpt.Config(n_layer=2, n_head=2, n_embd=8, block_size=8, vocab_size=12, n_inner=12)
IDS = [([1, 2, 3, 4, 5, 6], [1, 7, 3, 4, 5, 6]), ([5, 2, 3, 4, 9, 1], [5, 2, 3, 8, 9, 1])]


def same(a, b):
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


@pytest.fixture(scope="module")
def client():
    with dask_client(1) as c:
        yield c


@pytest.fixture
def short_connect():
    dask = pytest.importorskip("dask")
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        yield


# -- issue 28 item 1: a kept client and a checkpoint saved again at the same path -----------------
def test_a_kept_client_sweeps_the_checkpoint_saved_again_at_the_same_path(client, tmp_path):
    path = tmp_path / "ck"
    values, models = [], []
    for seed in (1, 2):  # the same architecture and file sizes, other weights
        random_model(CFG, seed=seed)[0].save(path)
        models.append(dfgpt.load(path))
        here = dfgpt.sweep_pairs(models[-1], IDS, "logit_diff:#3,#4", over="resid_pre", scheduler="inline")
        there = dfgpt.sweep_pairs(models[-1], IDS, "logit_diff:#3,#4", over="resid_pre", scheduler=client)
        assert same(here.values, there.values) and same(here.clean, there.clean) and not there.failed
        values.append(there.values)
    assert not np.array_equal(values[0], values[1])  # the second sweep is the second model's, not the first's
    # The first model, still in memory, is no longer what its path holds: refused, not swept as the second.
    with pytest.raises(ClusterError, match=f"the model at {path} is not the one this sweep was given"):
        dfgpt.sweep_pairs(models[0], IDS, "logit_diff:#3,#4", over="resid_pre", scheduler=client, retries=0)


# -- the worker cache: keyed by the checkpoint's identity, one eviction rule ----------------------
def test_the_worker_cache_keys_a_model_by_its_checkpoint_identity_with_one_eviction_rule(tmp_path):
    path = tmp_path / "ck"
    random_model(CFG, seed=1)[0].save(path)
    first = plan.checkpoint(str(path), None)
    assert first[:2] == (str(path), None) and {f for f, *_ in first[2]} >= {"config.json", "model.safetensors"}
    assert plan.checkpoint(str(path), None) == first and plan.checkpoint("sort", None) == ("sort", None, ())
    a = plan.Plan.of(dfgpt.load(path), IDS, "logit_diff:#3,#4", "resid_pre").shipped()  # as a worker gets it
    assert a.checkpoint == first and a.local is None
    loaded = worker.model_of(a)
    assert worker.model_of(a) is loaded  # once per process and checkpoint
    time.sleep(0.01)
    random_model(CFG, seed=2)[0].save(path)
    b = plan.Plan.of(dfgpt.load(path), IDS, "logit_diff:#3,#4", "resid_pre").shipped()
    assert b.checkpoint != first and worker.model_of(b) is not loaded  # saved again: loaded again
    assert not np.array_equal(worker.model_of(b).params["wte"], loaded.params["wte"])
    want = api.sweep_pairs(dfgpt.load(path), IDS, "logit_diff:#3,#4", over="resid_pre", scheduler="inline")
    got = worker.run_chunk(b, plan.work(2, sorted(want.cells)))
    assert got.values == [want.values[p][k] for p, k in got.items]
    worker.forget(b.token)
    cache = worker.Cache(keep=3)  # the one rule: the least recently used entry goes once more than `keep`
    for k in "abc":
        cache.put((k, "t1"), k)
    assert cache.get(("a", "t1")) == "a"
    cache.put(("d", "t2"), "d")
    assert list(cache.entries) == [("c", "t1"), ("a", "t1"), ("d", "t2")]
    cache.forget("t1")
    assert list(cache.entries) == [("d", "t2")]


# -- the split: the plan knows nothing of the worker; the worker keeps one cache ------------------
def test_the_plan_and_the_worker_are_apart_and_the_worker_keeps_one_cache():
    plan_imports = {n.module for n in ast.walk(ast.parse(inspect.getsource(plan))) if isinstance(n, ast.ImportFrom)}
    assert "worker" not in plan_imports and "cluster" not in plan_imports  # the plan is below the worker
    tree = ast.parse(inspect.getsource(worker))
    state = [t.id for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign))
             for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)
             and isinstance(n.value, ast.Call)]
    assert state == ["CACHE"]  # every module-level object made by a call: the one cache
    assert not hasattr(dfgpt.batch, "chunks") and isinstance(worker.CACHE, worker.Cache)
    p = plan.Plan.of(MODEL, PAIRS[:2], METRIC, "head_out")
    g = worker.first_sites(p)
    items = plan.work(p.n_pairs, sorted(g.sites))
    cost = plan.costs(p, worker.sweep_site_costs(p, g), items)
    assert worker.sweep_site_costs(p, g) is worker.sweep_site_costs(p, g)  # kept with the sites
    assert [it for c in plan.chunks(items, 2, cost=cost) for it in c] == items
    here = worker.run_chunk(p, items)
    there = worker.run_chunk(p.shipped(), items)  # as a worker runs it: the model loaded by name
    worker.forget(p.token)
    assert here.values == there.values and here.ends == there.ends
    assert not [k for k in worker.CACHE.entries if k[-1] == p.token]


# -- one meaning per argument ---------------------------------------------------------------------
def test_sweep_pairs_takes_one_type_per_argument_and_sweep_takes_two_sheets(tmp_path):
    r = dfgpt.sweep_pairs(MODEL, PAIRS[:2], METRIC, over="resid_pre")
    for i, (a, b) in enumerate(PAIRS[:2]):
        assert same(r.pair(i).values, dfgpt.sweep(MODEL.sheet(a), MODEL.sheet(b), METRIC, over="resid_pre").values)
    old = dfgpt.sweep(MODEL, PAIRS[:2], METRIC, over="resid_pre")  # the mixed call still works, for now
    assert type(old) is type(r) and same(old.values, r.values)
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(f'["{a}", "{b}"]\n' for a, b in PAIRS[:2]))
    assert same(dfgpt.sweep_pairs(MODEL, dfgpt.read_pairs(path), METRIC, over="resid_pre").values, r.values)
    for model, pairs, words in (("sort", PAIRS, "takes a loaded model first"),
                                (MODEL.sheet("CAB"), PAIRS, "takes a loaded model first"),
                                (MODEL, str(path), "dfgpt.read_pairs(path)"),
                                (MODEL, path, "dfgpt.read_pairs(path)")):
        with pytest.raises(QueryError) as e:
            dfgpt.sweep_pairs(model, pairs, METRIC)
        assert words in str(e.value)
    with pytest.raises(QueryError, match="two sheets of one model; the corrupted one is NoneType"):
        dfgpt.sweep(MODEL.sheet("CAB"), None, METRIC)  # issue 28 item 12: was an AttributeError
    sig = inspect.signature(dfgpt.sweep_pairs)
    assert list(sig.parameters)[:3] == ["model", "pairs", "metric"] and "sweep_pairs" in dfgpt.__all__


# -- issue 28 item 14: the default scheduler follows the work ------------------------------------
def test_a_few_pairs_run_in_process_by_default_no_slower_and_say_so(monkeypatch):
    pytest.importorskip("distributed")
    def no_cluster(*a):
        pytest.fail(f"a cluster was started for {len(PAIRS)} pairs of sort (CLUSTER_START {api.CLUSTER_START} s)")

    monkeypatch.setattr(cluster_mod, "_client", no_cluster)
    for mod in (cluster_mod, api):
        monkeypatch.setattr(mod, "cores", lambda: 2)  # where a cluster could pay
    inline = dfgpt.sweep_pairs(MODEL, PAIRS, METRIC, over="head_out", scheduler="inline")
    r = dfgpt.sweep_pairs(MODEL, PAIRS, METRIC, over="head_out", progress=False)  # no_cluster: none is started
    assert same(r.values, inline.values)
    assert r.ran_on.startswith("this process (about ") and "would not pay for its 3 s start-up" in r.ran_on
    assert inline.ran_on == "this process (scheduler='inline')"
    one = dfgpt.sweep_pairs(MODEL, PAIRS[:1], METRIC)
    assert one.ran_on == "this process (one pair)"


def test_a_default_sweep_whose_cluster_does_not_start_finishes_in_process(monkeypatch):
    pytest.importorskip("distributed")

    def broken(n):
        raise OSError("no room for workers")

    monkeypatch.setattr(cluster_mod, "local_cluster", broken)
    for mod in (cluster_mod, api):
        monkeypatch.setattr(mod, "cores", lambda: 2)
    monkeypatch.setattr(api, "CLUSTER_START", 0.0)  # the cluster would pay: it is tried
    r = dfgpt.sweep_pairs(MODEL, PAIRS, METRIC, over="head_out", progress=False)
    assert same(r.values, dfgpt.sweep_pairs(MODEL, PAIRS, METRIC, over="head_out", scheduler="inline").values)
    assert r.ran_on.startswith("this process (the local cluster did not start: the embedded Dask cluster did not "
                               "start (OSError: no room for workers)")
    with pytest.raises(ClusterError, match="no room for workers"):  # asked for by name: refused, not replaced
        dfgpt.sweep_pairs(MODEL, PAIRS, METRIC, over="head_out", scheduler="local")


def test_local_in_a_script_without_a_main_guard_is_refused_at_once(tmp_path):
    pytest.importorskip("distributed")
    script = tmp_path / "unguarded.py"
    script.write_text("import dfgpt\n"
                      f"dfgpt.sweep_pairs(dfgpt.load('sort'), {PAIRS[:2]!r}, 'kl', scheduler='local')\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("Traceback") == 1 and len(out.stderr.splitlines()) < 40  # no worker's tracebacks
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("dfgpt.errors.ClusterError: scheduler='local' starts worker processes")
    assert 'if __name__ == "__main__":' in last and "scheduler='inline'" in last
    assert "distributed." not in out.stderr and "nanny" not in out.stderr.lower()  # no worker was started


# -- issue 28 item 10: an address that accepts connections but does not speak Dask ---------------
def test_a_port_that_does_not_speak_dask_is_given_up_with_a_typed_error(short_connect):
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # python -m http.server
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    address = f"tcp://127.0.0.1:{server.server_address[1]}"
    try:
        t = time.perf_counter()
        with pytest.raises(ClusterError) as e:
            dfgpt.sweep_pairs(MODEL, PAIRS[:2], METRIC, scheduler=address)
        took = time.perf_counter() - t
    finally:
        server.shutdown()
        server.server_close()
    assert f"{address} accepted a connection but did not answer as a Dask scheduler within 2 s" in str(e.value)
    assert "dask scheduler" in str(e.value) and took < 10


# -- issue 28 item 12: typed errors, not raw ones ------------------------------------------------
@pytest.mark.parametrize("address,words", [
    ("xyz://127.0.0.1:1", "xyz:// is not an address another process can reach"),
    ("tcp://", "missing port number"),
    ("tcp://[::1", "invalid address"),
    ("inproc://x", "inproc:// is not an address another process can reach"),
    ("tls://127.0.0.1:1", "needs TLS certificates"),
])
def test_a_malformed_scheduler_address_is_a_query_error_naming_it(address, words):
    pytest.importorskip("distributed")
    with pytest.raises(QueryError) as e:
        dfgpt.sweep_pairs(MODEL, PAIRS[:2], METRIC, scheduler=address)
    assert repr(address) in str(e.value) and words in str(e.value)


def test_a_scheduler_with_no_workers_is_a_cluster_error_not_an_allow_other_workers_one(short_connect):
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=0, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0")
    c = distributed.Client(cluster)
    try:
        for scheduler in (c, cluster.scheduler_address):
            with pytest.raises(ClusterError) as e:
                dfgpt.sweep_pairs(MODEL, PAIRS[:2], METRIC, scheduler=scheduler)
            assert f"the Dask scheduler at {cluster.scheduler_address} has no workers (waited 1 s)" in str(e.value)
            assert "dask worker" in str(e.value)
    finally:
        c.close()
        cluster.close()


@pytest.mark.parametrize("read", [dfgpt.read_pairs, dfgpt.read_inputs])
def test_a_deeply_nested_json_line_is_a_query_error(read, tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text('["CAB", "CAC"]\n' + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(QueryError, match=r"deep.jsonl:2 nests lists or objects too deeply to read"):
        read(path)


# -- issue 28 item 9: the same refusals wherever the sweep would run, before any work -------------
@pytest.mark.parametrize("kw,words", [
    ({"chunk": 0}, "chunk must be a whole number of sites ≥ 1"),
    ({"chunk": 2.5}, "chunk must be a whole number of sites ≥ 1"),
    ({"chunk": True}, "chunk must be a whole number of sites ≥ 1"),
    ({"retries": -1}, "retries must be a whole number ≥ 0"),
    ({"retries": 1.5}, "retries must be a whole number ≥ 0"),
    ({"workers": 0}, "workers must be a whole number ≥ 1"),
])
@pytest.mark.parametrize("scheduler", ["inline", None, "local", "tcp://127.0.0.1:9"])
def test_bad_run_arguments_are_refused_the_same_everywhere_before_any_work(kw, words, scheduler, monkeypatch):
    monkeypatch.setattr(api, "first_sites", lambda *a: pytest.fail("work started"))
    monkeypatch.setattr(cluster_mod, "_client", lambda *a: pytest.fail("a cluster was asked for"))
    for call in (lambda: dfgpt.sweep_pairs(MODEL, PAIRS[:2], METRIC, scheduler=scheduler, **kw),
                 lambda: dfgpt.ablation_sweep(MODEL, [a for a, _ in PAIRS[:2]], METRIC, scheduler=scheduler, **kw)):
        with pytest.raises(QueryError) as e:
            call()
        assert words in str(e.value)
