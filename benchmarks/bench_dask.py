"""Dataset sweeps on Dask: in process against 1 and 2 local worker processes, and a projection.

    pip install "dask[distributed]" torch==2.13.0 transformers   # the GPT-2-shaped model is saved by transformers
    python benchmarks/bench_dask.py            # sort, and a 4-layer GPT-2 shape at T = 16 (about four minutes)
    python benchmarks/bench_dask.py --quick    # sort, and the GPT-2 shape at T = 8
    python benchmarks/bench_dask.py --default  # only: a few sort pairs, the default scheduler against in process

A head × position sweep (`head_out`, logit difference of two tokens at the last position)
over 8 pairs, each pair one token apart (seeded), on `sort` and on a seeded random 4-layer
GPT-2-shaped model (n_embd 768, 12 heads, saved by `transformers`, loaded by path on every
worker). Timed: the in-process sweep; the same sweep on a local cluster of 1 and of 2
single-threaded worker processes (cluster start-up apart, printed on its own; the first sweep
on a fresh cluster includes each worker loading the model), then in-process and distributed
sweeps interleaved, their medians compared (see `compare`). Asserts real work: the distributed
values equal the in-process ones bit for bit, in the same order, and patching moved the metric.
Then projects a 100-pair GPT-2-small sweep on 8 and 64 workers from the measured per-site cost
and per-chunk overhead (see `project`). First it prints what two processes give compute-bound
work here (a matmul loop), against which the sweeps' own two-process ceiling (two warm plain
processes, each running half the work as `plan.costs` estimates it) can be read. The clusters
are `dfgpt.batch.cluster.local_cluster`, the embedded cluster `dfgpt.sweep` starts.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_patching import save_gpt2

import dfgpt
from dfgpt.batch.cluster import local_cluster
from dfgpt.batch.plan import Plan, chunks, costs, work
from dfgpt.batch.worker import first_sites, sweep_site_costs
from dfgpt.interventions.sweep import blocks, order

A, B = 11, 22  # the logit difference's two tokens (ids) on the GPT-2 shape
N_PAIRS = 8


def pairs_of(model: dfgpt.Model, T: int, seed: int = 0, n: int = N_PAIRS) -> list[tuple[list[int], list[int]]]:
    """n seeded pairs of T tokens, the corrupted one with one token changed (a random position)."""
    rng = np.random.default_rng(seed)
    V = model.config.vocab_size
    out = []
    for _ in range(n):
        clean = rng.integers(0, V, T).tolist()
        bad = list(clean)
        p = int(rng.integers(0, T - 1))
        bad[p] = (bad[p] + 1 + int(rng.integers(0, V - 1))) % V
        out.append((clean, bad))
    return out


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


HALF = """
import json, sys, time
import dfgpt
from dfgpt.batch.plan import Plan
from dfgpt.batch.worker import run_chunk
model, pairs, metric, items = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
start, every, rounds = float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
m = dfgpt.load(model)
items = [(p, tuple(k)) for p, k in items]
run_chunk(Plan.of(m, pairs, metric, "head_out"), items)  # warm, as the sweeps compared are
out = []
for k in range(rounds):
    while time.time() < start + k * every:  # both halves start together, each in a warm process
        time.sleep(0.0005)
    plan = Plan.of(m, pairs, metric, "head_out")
    t = time.perf_counter()
    run_chunk(plan, items)
    out.append(time.perf_counter() - t)
print(json.dumps(out))
"""


def halves(model: dfgpt.Model, pairs: list, metric: str) -> list[list]:
    """The sweep's (pair, site) items cut in two runs of about equal estimated work (`plan.costs`):
    the pairs differ several-fold in work (a site before the corrupted token is skipped)."""
    plan = Plan.of(model, pairs, metric, "head_out")
    g = first_sites(plan)
    items = work(plan.n_pairs, order(list(g.sites)))
    before = np.concatenate([[0.0], np.cumsum(costs(plan, sweep_site_costs(plan, g), items))])
    group = blocks(g)
    block = [(p, group[k]) for p, k in items]
    can = [j for j in range(1, len(items)) if block[j] != block[j - 1]]
    cut = min(can, key=lambda j: abs(before[j] - before[-1] / 2))  # between blocks, as `chunks` cuts
    return [items[:cut], items[cut:]]


def ceiling(model: str | Path, pairs: list, metric: str, t_in: float, rounds: int = 3) -> float:
    """What two cores give this workload with no Dask at all: two plain processes, each running half
    the work (`halves`) at once, timed inside, `rounds` times after a first run of it (model
    loading and the first run apart); the median of the slower half. About the best 2 workers can
    do, and a reading of how much the machine's two cores give at the time (on a shared virtual
    machine that varies from run to run)."""
    import json
    import subprocess
    import sys

    parts = halves(dfgpt.load(model), pairs, metric)
    start = time.time() + 5 + 1.5 * t_in  # after both processes have loaded the model and run their half once
    args = [str(start), str(t_in + 0.1), str(rounds)]  # a round every in-process sweep's time: room for a half
    procs = [subprocess.Popen([sys.executable, "-c", HALF, str(model), json.dumps(pairs), metric, json.dumps(part),
                               *args], stdout=subprocess.PIPE, text=True) for part in parts]
    secs = np.array([json.loads(p.communicate()[0].split("\n")[-2]) for p in procs])  # [2, rounds]
    walls = secs.max(axis=0)
    wall = float(np.median(walls))
    print(f"  2 plain processes, half the work each, at once: {wall:7.3f} s ({t_in / wall:4.2f}x; median of {rounds}, "
          f"{t_in / walls.max():.2f}x to {t_in / walls.min():.2f}x; halves {np.median(secs[0]):.3f} and "
          f"{np.median(secs[1]):.3f} s): this machine's two cores, no Dask")
    return wall


MATMULS = """
import sys, time
import numpy as np
n, size = int(sys.argv[1]), int(sys.argv[2])
a = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
a @ a
t = time.perf_counter()
for _ in range(n):
    a @ a
print(time.perf_counter() - t)
"""


def compute_ceiling(size: int = 1536, n: int = 8) -> float:
    """Two cores on compute-bound work: a float32 matmul loop alone, then twice at once in two
    processes; what the machine gives a workload that does not wait on memory."""
    import subprocess
    import sys

    def run(k: int) -> float:
        procs = [subprocess.Popen([sys.executable, "-c", MATMULS, str(n), str(size)], stdout=subprocess.PIPE,
                                  text=True) for _ in range(k)]
        return max(float(p.communicate()[0].split()[-1]) for p in procs)

    one = min(run(1) for _ in range(2))
    two = min(run(2) for _ in range(2))
    speed = 2 * one / two
    print(f"compute-bound ceiling: {n} matmuls {size}² float32 in 1 process {one:.2f} s; the same in each of 2 "
          f"at once {two:.2f} s: two cores give {speed:.2f}x")
    return speed


def compare(name: str, model: str | Path, pairs: list, metric: str, rounds: int = 3) -> dict[str, float]:
    """In process, then on 1 and 2 local workers; the values must be equal.

    Each cluster's first sweep includes its workers loading the model. Then `rounds` rounds of
    one in-process sweep and one distributed sweep, interleaved, so the machine's drift falls on
    both sides alike and no sweep starts within Dask's 10 ms message batching of the previous
    one's last message; the medians are compared.
    """
    from dask.distributed import Client

    m = dfgpt.load(model)
    # Warm, like the workers' later sweeps: a first sweep in a process also builds its kernels and plans.
    dfgpt.sweep_pairs(m, pairs[:1], metric, over="head_out", scheduler="inline", progress=False)

    def inline():
        return dfgpt.sweep_pairs(m, pairs, metric, over="head_out", scheduler="inline", progress=False)

    here = inline()
    assert np.ptp(here.values[np.isfinite(here.values)]) > 0, "patching never moved the metric"
    sites = int(np.isfinite(here.values).sum())
    print(f"{name}: {here!r}, {sites} sites")
    got = {"sites": sites}
    ins: list[float] = []
    for n in (1, 2):
        def start(n: int = n):
            c = local_cluster(n)  # the embedded cluster `dfgpt.sweep` starts, kept for every sweep
            return c, Client(c)

        (cluster, client), t_up = timed(start)
        try:
            # The loaded model, as in process (the workers load it by the path it was loaded from).
            def there(c=client):
                return dfgpt.sweep_pairs(m, pairs, metric, over="head_out", scheduler=c, progress=False)

            cold, t_cold = timed(there)
            t_in, t_there, results = [], [], [cold]
            for _ in range(rounds):
                t_in.append(timed(inline)[1])
                r, t = timed(there)
                t_there.append(t)
                results.append(r)
        finally:
            client.close()
            cluster.close()
        for r in results:
            assert np.array_equal(r.values, here.values, equal_nan=True), "a distributed sweep differs"
            assert np.array_equal(r.clean, here.clean) and np.array_equal(r.corrupted, here.corrupted)
        a, b = float(np.median(t_in)), float(np.median(t_there))
        ins += t_in
        print(f"  {n} worker{'s' if n > 1 else ' '} (start-up {t_up:4.1f} s, first sweep {t_cold:6.2f} s): in process "
              f"{a:7.3f} s, on the cluster {b:7.3f} s, medians of {rounds} interleaved: {a / b:4.2f}x in-process speed "
              f"(best {min(t_in) / min(t_there):4.2f}x)")
        got[f"in{n}"], got[f"warm{n}"], got[f"cold{n}"] = a, b, t_cold
    got["in"] = float(np.median(ins))
    print(f"  in process              {got['in']:7.3f} s   ({got['in'] / sites * 1e3:.2f} ms/site)")
    got["ceiling"] = ceiling(model, pairs, metric, got["in"], rounds)
    return got


def project(per_site: float, overhead: float, per_pair: float, T: int = 64) -> None:
    """A 100-pair head × position sweep of GPT-2 small (12 layers × 12 heads × T positions), on W workers.

    The per-site cost measured on the 4-layer shape at the measured T is scaled (by the caller)
    for deeper cones (a head in layer l recomputes layers l..L-1: on average 2.5 of 4 layers, 6.5
    of 12) and for more rows per site (about linear in T); `per_pair` is one pair's set-up (two
    forwards), paid once per pair and once more per chunk that starts inside a pair;
    `overhead` the measured scheduling cost per chunk. Rough by design: it says the order of
    magnitude, and where the time goes.
    """
    sites = 100 * 12 * 12 * T
    for W in (8, 64):
        n_chunks = 4 * W
        work = sites * per_site + 100 * per_pair
        wall = work / W + n_chunks * overhead / W + per_pair * (n_chunks / 100)
        print(f"  {W:>2} workers: {sites} sites, {n_chunks} chunks of {math.ceil(sites / n_chunks)} → about "
              f"{wall / 60:6.1f} min (in process: {work / 3600:5.1f} h)")


def default_scheduler(n: int = 4, rounds: int = 7) -> None:
    """A few pairs on `sort` with the default scheduler against `scheduler="inline"`, interleaved, medians
    (goal: the default ≤ in process + 0.5 s; it used to start an embedded cluster: 2.7 s against 0.13 s)."""
    m = dfgpt.load("sort")
    pairs = pairs_of(m, 9, seed=1, n=n)
    dfgpt.sweep_pairs(m, pairs[:1], "kl", over="head_out", scheduler="inline", progress=False)  # warm
    t_in, t_default = [], []
    for _ in range(rounds):
        t_in.append(timed(lambda: dfgpt.sweep_pairs(m, pairs, "kl", over="head_out", scheduler="inline",
                                                     progress=False))[1])
        r, t = timed(lambda: dfgpt.sweep_pairs(m, pairs, "kl", over="head_out", progress=False))
        t_default.append(t)
    a, b = float(np.median(t_in)), float(np.median(t_default))
    print(f"sort, head_out × {n} pairs, default scheduler: {b:.3f} s against {a:.3f} s in process "
          f"(+{b - a:.3f} s; goal ≤ +0.5 s), medians of {rounds} interleaved; ran on {r.ran_on}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--T", type=int, default=16, help="positions of the GPT-2-shaped pairs (sites: 48 × T per pair)")
    ap.add_argument("--default", action="store_true", help="only the default scheduler on a few sort pairs")
    args = ap.parse_args()
    default_scheduler()
    if args.default:
        return
    T = 8 if args.quick else args.T
    compute_ceiling()
    sort = dfgpt.load("sort")
    sort_pairs = [(p, q) for p, q in pairs_of(sort, 9, seed=1)]
    s = compare("sort, head_out × 8 pairs", "sort", sort_pairs, "kl", rounds=21)
    # The same sweep over 8 times the pairs: what a sort sweep gives once its work outweighs the
    # fixed costs of a distributed sweep (about 15 ms: the client's set-up, the tasks' dispatch, the
    # results' return, a pair's sheets made on both workers, two busy cores sharing one machine).
    s64 = compare("sort, head_out × 64 pairs", "sort", pairs_of(sort, 9, seed=1, n=64), "kl", rounds=5)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_gpt2(folder, 4)
        path = folder / "model"
        g2 = dfgpt.load(path)
        g = compare(f"GPT-2 shape, 4 layers, T = {T}, head_out × 8 pairs", path, pairs_of(g2, T),
                    f"logit_diff:#{A},#{B}")
        speedup = g["in2"] / g["warm2"]
        print(f"2 workers against in process on the GPT-2 shape: {speedup:.2f}x (goal ≥ 1.7x; two plain "
              f"processes reach {g['in'] / g['ceiling']:.2f}x here); on sort: {s['in2'] / s['warm2']:.2f}x with 8 "
              f"pairs, {s64['in2'] / s64['warm2']:.2f}x with 64")
        # Per-site cost from the in-process run; per-chunk overhead from the 1-worker run's excess
        # over in process, spread over its chunks (about four per worker: 4).
        per_site = g["in"] / g["sites"]
        overhead = max(0.0, (g["warm1"] - g["in1"]) / len(chunks(list(range(int(g["sites"]))), 1)))
        m = dfgpt.load(path)
        a, b = pairs_of(m, T)[0]
        _, per_pair = timed(lambda: (m.sheet(a).values("logit"), m.sheet(b).values("logit")))
        scale = (6.5 / 2.5) * (64 / T)  # deeper cones (12 layers), more rows per site (T = 64)
        print(f"projection (per site {per_site * 1e3:.2f} ms at 4 layers, T = {T}, ×{scale:.1f} for GPT-2 small at "
              f"T = 64; per chunk {overhead * 1e3:.0f} ms; per pair set-up {per_pair * 1e3:.0f} ms ×{scale:.1f}):")
        project(per_site * scale, overhead, per_pair * scale)


if __name__ == "__main__":
    main()
