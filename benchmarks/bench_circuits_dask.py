"""Circuit discovery on Dask: in process against a local cluster of 2 single-threaded workers.

    python benchmarks/bench_circuits_dask.py          # sort (8 pairs), and a 4-layer GPT-2 shape at T = 16
    python benchmarks/bench_circuits_dask.py --quick  # sort only

Timed, one BLAS thread each side, the cluster's start-up apart (printed on its own), each side
best of `--repeat` runs interleaved:

- EAP over the pairs (a full `dfgpt.eap`: the switch gradients and the curve), in process against
  the cluster;
- ACDC's edge test: `--edges` edges tried over every pair, in process (each pair's `EdgeReplay`)
  against the cluster (`dfgpt.batch.circuits._acdc_step`, one task per slice of the pairs and per
  edge, gathered before the next, as the distributed ACDC runs); and on `sort` a full ACDC pass.

Asserts real work: the distributed circuits equal the in-process ones bit for bit and the edge
tests' metrics are equal; prints the ratios and the per-edge round trip that decides whether ACDC
pays on a cluster (`dfgpt.batch.circuits.ROUND_TRIP`).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_circuits import pairs_for
from bench_patching import save_gpt2

import dfgpt
from dfgpt.batch import circuits as bc
from dfgpt.batch.cluster import local_cluster
from dfgpt.circuits.runs import Runs


def best(fn: Any, repeat: int) -> tuple[float, Any]:
    times, got = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        got = fn()
        times.append(time.perf_counter() - t)
    return min(times), got


def edge_tests_here(model: dfgpt.Model, pairs: list[Any], metric: str, edges: int) -> tuple[float, list[Any]]:
    """(seconds of the edge tests alone, each edge's metrics): the runs and replays are made first."""
    runs = Runs(model, pairs, metric)
    reps, rows = runs.replays(), [m.of_row for m in runs.metrics]
    out = []
    t = time.perf_counter()
    for e in list(reversed(runs.components.edges))[:edges]:
        out.append([f(r.try_edge(e, 1.0)) for f, r in zip(rows, reps)])
        for r in reps:
            r.revert()
    return time.perf_counter() - t, out


def edge_tests_there(client: Any, model: dfgpt.Model, pairs: list[Any], metric: str,
                     edges: int) -> tuple[float, list[Any]]:
    """As `edge_tests_here`, on the cluster: the slices made first (the start task), then one round trip an edge."""
    plan = bc._plan(model, pairs, metric)
    c = bc._Cluster(plan, client, None, False, 0, "")
    comps = dfgpt.CircuitSheet(model, pairs[0][0]).components
    n, W = len(pairs), len(c.addresses)
    slices = [list(range(n * k // W, n * (k + 1) // W)) for k in range(W)]
    try:
        c.gather([c.submit(bc._acdc_step, k, idx, 0, 0, None, None, None, at=k) for k, idx in enumerate(slices)])
        out = []
        t = time.perf_counter()
        for i, e in enumerate(list(reversed(comps.edges))[:edges]):
            got = c.gather([c.submit(bc._acdc_step, k, idx, i, 0, e.index, None, None, at=k)
                            for k, idx in enumerate(slices)])
            out.append([v for s in got for v in s])
        return time.perf_counter() - t, out
    finally:
        c.own = False  # the benchmark's client stays open
        c.close()


def bench(name: str, model: dfgpt.Model, pairs: list[Any], metric: str, client: Any, args: Any, full: bool) -> None:
    print(f"\n{name}: {len(pairs)} pairs of {len(pairs[0][0])} tokens, "
          f"{len(dfgpt.CircuitSheet(model, pairs[0][0]).components):,} edges, load {os.getloadavg()[0]:.1f}")
    here_t, there_t = [], []
    for _ in range(args.repeat):  # interleaved
        here_t.append(best(lambda: dfgpt.eap(model, pairs, metric, scheduler="inline"), 1))
        there_t.append(best(lambda: dfgpt.eap(model, pairs, metric, scheduler=client), 1))
    (h, here), (t, there) = min(here_t, key=lambda x: x[0]), min(there_t, key=lambda x: x[0])
    assert here == there and np.array_equal(here.scores, there.scores) and here.curve == there.curve
    assert np.abs(here.scores).max() > 0, "EAP measured nothing"
    print(f"  EAP: in process {h:.3f} s, on 2 workers {t:.3f} s ({h / t:.2f}x)")
    h, a = min(edge_tests_here(model, pairs, metric, args.edges) for _ in range(args.repeat))
    t, b = min(edge_tests_there(client, model, pairs, metric, args.edges) for _ in range(args.repeat))
    assert a == b and len(a) == args.edges, "the edge tests differ"
    per_h, per_t = h / args.edges * 1e3, t / args.edges * 1e3
    print(f"  ACDC edge tests ({args.edges} edges, each over every pair, set-up apart): in process "
          f"{per_h:.2f} ms an edge, on 2 workers {per_t:.2f} ms an edge ({per_h / per_t:.2f}x)")
    if full:
        h, here = best(lambda: dfgpt.acdc(model, pairs, metric, threshold=0.05, scheduler="inline"), args.repeat)
        t, there = best(lambda: dfgpt.acdc(model, pairs, metric, threshold=0.05, scheduler=client), args.repeat)
        assert here == there and here.kept == there.kept and here.scores == there.scores
        print(f"  ACDC full pass: in process {h:.3f} s, on 2 workers {t:.3f} s ({h / t:.2f}x), "
              f"{len(here.kept)} edges kept")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--edges", type=int, default=40)
    args = ap.parse_args()
    from dask.distributed import Client

    t = time.perf_counter()
    cluster = local_cluster(2)
    client = Client(cluster)
    print(f"local cluster of 2 workers started in {time.perf_counter() - t:.2f} s")
    try:
        sort = dfgpt.load("sort")
        bench("sort", sort, [(a, b) for a, b in pairs_for(sort, T=9)], "logit_diff:B,C", client, args, True)
        if not args.quick:
            with tempfile.TemporaryDirectory() as tmp:
                save_gpt2(Path(tmp), 4)
                gpt = dfgpt.load(str(Path(tmp) / "model"))
                bench("GPT-2 shape, 4 layers", gpt, pairs_for(gpt, T=16), "logit_diff:11,22", client, args, False)
    finally:
        client.close()
        cluster.close()


if __name__ == "__main__":
    main()
