"""Circuit discovery at GPT-2 shapes: EAP's scores and ACDC's edge tests, against auto-circuit's figures.

    python benchmarks/bench_circuits.py [--layers 4 12]

Seeded random GPT2LMHeadModels (768 wide, 12 heads) saved by `transformers` (no download),
float32, T = 16, 8 (clean, corrupted) pairs one or two tokens apart, metric the logit
difference of two tokens at the last position; one BLAS thread (set before numpy loads: on a
shared 2-core machine OpenBLAS's threads make a 128 × 768 × 64 product 25× slower).

- EAP: `Runs.gradient` (the batched sweep) timed against `Runs.gradient_by_autodiff` (the
  model's autodiff per pair, part one's path), their scores equal to 1e-4 of the largest score
  (float32 sums in another order) and not all zero; the runs' setup (each pair's circuit sheets,
  once per dataset) is timed apart.
- ACDC: edge tests (patch one edge in every pair's replay, read the metric, revert) for edges
  spread over the depth, seconds per edge tested; an edge must move the metric.

auto-circuit 1.0.1 is not installed here: its figures are quoted from issue 30 (measured on
this machine, one thread), not measured in this run.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import dfgpt  # noqa: E402
from dfgpt.circuits.runs import Runs  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_patching import save_gpt2  # noqa: E402

T, PAIRS, A, B = 16, 8, 10, 20
# auto-circuit 1.0.1 on this machine (issue 30, one thread): EAP over the 8 pairs, ACDC per edge tested.
QUOTED = {4: {"edges": 3135, "eap": (2.6, 3.0), "acdc": (0.29, 0.44)},
          12: {"edges": 32491, "eap": (14.7, 14.7), "acdc": (1.23, 1.23)}}


def pairs_for(model: dfgpt.Model, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """8 random clean inputs, each with one or two tokens (never the last) moved by one."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(PAIRS):
        clean = rng.integers(0, model.config.vocab_size, T).tolist()
        bad = list(clean)
        for j in rng.choice(T - 1, 1 + i % 2, replace=False):
            bad[j] = (bad[j] + 1) % model.config.vocab_size
        out.append((clean, bad))
    return out


def quoted(lo: float, hi: float) -> str:
    return f"{lo:g} s" if lo == hi else f"{lo:g}–{hi:g} s"


def bench(n_layer: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_gpt2(folder, n_layer)
        model = dfgpt.load(folder / "model")
    ref = QUOTED[n_layer]
    t = time.perf_counter()
    runs = Runs(model, pairs_for(model), f"logit_diff:#{A},#{B}")
    setup = time.perf_counter() - t
    E = len(runs.components)
    assert E == ref["edges"], E
    print(f"GPT-2 shape, {n_layer} layers: {E:,} edges, T = {T}, {PAIRS} pairs, float32, one thread; "
          f"runs set up in {setup:.1f} s (once per dataset)")

    t = time.perf_counter()
    fast = runs.gradient(0.0)
    first = time.perf_counter() - t
    t = time.perf_counter()
    fast = runs.gradient(0.0)
    again = time.perf_counter() - t
    t = time.perf_counter()
    slow = runs.gradient_by_autodiff(0.0)
    before = time.perf_counter() - t
    top = float(np.abs(slow).max())
    err = float(np.abs(fast - slow).max()) / top
    assert top > 0 and np.count_nonzero(fast) > E // 2, "EAP scored nothing"
    assert err <= 1e-4, f"the batched sweep's scores differ from the autodiff's by {err:.1e} of the largest"
    lo, hi = ref["eap"]
    print(f"  EAP scores       dfgpt {first:6.2f} s (again {again:.2f} s); part one's autodiff path {before:6.2f} s "
          f"({before / first:.1f}x); largest difference {err:.1e} of the largest score {top:.3g}")
    print(f"                   auto-circuit {quoted(lo, hi)} (quoted, not measured): "
          f"dfgpt / auto-circuit {first / hi:.2f}–{first / lo:.2f}x")

    reps = runs.replays()
    comps = runs.components
    picks = [comps.edges[i] for i in np.linspace(0, E - 1, 6).astype(int)]
    base = [m.of_row(r.values["logit"][r.t]) for m, r in zip(runs.metrics, reps)]  # type: ignore[misc]
    moved, secs = 0.0, []
    for e in picks:
        t = time.perf_counter()
        vals = []
        for m, r in zip(runs.metrics, reps):
            vals.append(m.of_row(r.try_edge(e, 1.0)))  # type: ignore[misc]
            r.revert()
        secs.append(time.perf_counter() - t)
        moved = max(moved, float(np.max(np.abs(np.subtract(vals, base)))))
    assert moved > 0, "no edge test moved the metric"
    per = float(np.mean(secs))
    lo, hi = ref["acdc"]
    print(f"  ACDC edge test   dfgpt {per:6.3f} s per edge (8 pairs; {min(secs):.3f}–{max(secs):.3f} s over "
          f"{len(picks)} edges from the embedding's to the logits'); auto-circuit {quoted(lo, hi)} (quoted): "
          f"auto-circuit / dfgpt {lo / per:.1f}–{hi / per:.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, nargs="+", default=[4, 12], choices=sorted(QUOTED))
    for n in ap.parse_args().layers:
        bench(n)


if __name__ == "__main__":
    main()
