"""Circuit discovery at GPT-2 shapes: ACDC's full pass, EAP end to end, top-k circuits, against auto-circuit's figures.

    python benchmarks/bench_circuits.py [--layers 4 12] [--threshold 1e-4] [--no-full] [--full-12]

Seeded random GPT2LMHeadModels (768 wide, 12 heads) saved by `transformers` (no download),
float32, T = 16, 8 (clean, corrupted) pairs one or two tokens apart, metric the logit
difference of two tokens at the last position; one BLAS thread (set before numpy loads: on a
shared 2-core machine OpenBLAS's threads make a 128 × 768 × 64 product 25× slower). Times are
wall clock and this process's CPU time (the machine is shared: the load is printed with them).

- Setup: `Runs` (the corrupted and the clean forward, every pair stacked).
- ACDC edge tests on a sample stratified by destination layer (every layer's edges, `--sample`
  of them each): the stacked replay (`Stacked.update`, every pair at once) against the per-pair
  `EdgeReplay` (the path before, measured in the same run on the same edges); their metrics
  agree to float32 rounding and an edge must move the metric. The per-layer means weighted by
  the layers' edge counts give a PROJECTED pass: an upper bound of the work, since every edge
  is tested with no other edge removed (ACDC's removed edges cut what a test recomputes).
- ACDC, one full pass at `--threshold` (4 layers; 12 with `--full-12`): `dfgpt.acdc` end to end.
- EAP end to end (`dfgpt.eap`: setup, scores, the faithfulness curve), and its scores against
  the autodiff's per pair (`Runs.gradient_by_autodiff`) to 1e-4 of the largest.
- Top-k circuits for 10 values of k (`discovery.evaluate`: every pair stacked, from scratch)
  against the per-pair replays' evaluation of the same circuits, equal to float32 rounding.

auto-circuit 1.0.1 is not installed here: its figures are quoted from issue 30 (measured on
this machine, one thread), not measured in this run (benchmarks/bench_autocircuit.py runs it).
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
from dfgpt.circuits.circuit_graph import input_name, switch_name  # noqa: E402
from dfgpt.circuits.discovery import evaluate  # noqa: E402
from dfgpt.circuits.runs import Runs  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_patching import save_gpt2  # noqa: E402

T, PAIRS, A, B = 16, 8, 10, 20
# auto-circuit 1.0.1 on this machine (issue 30, one thread): EAP over the 8 pairs, ACDC per edge tested
# and per full pass, one top-k circuit evaluated.
QUOTED = {4: {"edges": 3135, "eap": (2.6, 3.0), "acdc": (0.29, 0.44), "pass": (15 * 60, 23 * 60), "topk": 1.8},
          12: {"edges": 32491, "eap": (14.7, 14.7), "acdc": (1.23, 1.23), "pass": (11 * 3600, 11 * 3600),
               "topk": 5.1}}


def pairs_for(model: dfgpt.Model, seed: int = 0, T: int = T, n: int = PAIRS) -> list[tuple[list[int], list[int]]]:
    """n random clean inputs of T tokens, each with one or two tokens (never the last) moved by one."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        clean = rng.integers(0, model.config.vocab_size, T).tolist()
        bad = list(clean)
        for j in rng.choice(T - 1, 1 + i % 2, replace=False):
            bad[j] = (bad[j] + 1) % model.config.vocab_size
        out.append((clean, bad))
    return out


def quoted(lo: float, hi: float, unit: str = "s") -> str:
    return f"{lo:g} {unit}" if lo == hi else f"{lo:g}–{hi:g} {unit}"


class Clock:
    """Wall and CPU seconds of a block."""

    def __enter__(self) -> Clock:
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c

    def __str__(self) -> str:
        return f"{self.wall:7.2f} s (cpu {self.cpu:.2f} s)"


def load() -> str:
    return "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def bench(n_layer: int, threshold: float, sample: int, full: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_gpt2(folder, n_layer)
        model = dfgpt.load(folder / "model")
    ref = QUOTED[n_layer]
    metric = f"logit_diff:#{A},#{B}"
    pairs = pairs_for(model)
    with Clock() as setup:
        runs = Runs(model, pairs, metric)
    comps = runs.components
    E = len(comps)
    assert E == ref["edges"], E
    print(f"GPT-2 shape, {n_layer} layers: {E:,} edges, T = {T}, {PAIRS} pairs, float32, one thread; {load()}")
    print(f"  setup            Runs {setup} (the corrupted and clean forwards, pairs stacked); "
          f"clean {runs.clean:.4f}, corrupted {runs.corrupted:.4f}")

    # -- ACDC edge tests, stratified by destination layer: stacked against per-pair -------------------
    st = runs.stacked()[0]
    with Clock() as old_setup:
        reps = runs.replays()  # each pair's circuit sheet and replay: the path before
    rng = np.random.default_rng(1)
    layers: dict[int, list[int]] = {}
    for e in comps.edges:
        layers.setdefault(e.dest.layer if e.dest.layer >= 0 else n_layer, []).append(e.index)
    base = st.logits().copy()
    new_t, old_t, moved, worst = {}, {}, 0.0, 0.0
    for layer, idx in sorted(layers.items()):
        picks = rng.choice(idx, min(sample, len(idx)), replace=False)
        ns, os_ = [], []
        for i in picks:
            e = comps.edges[int(i)]
            s = st.switches[input_name(e.dest)].copy()
            s[e.slot] = 1.0
            with Clock() as c_new:
                z = st.update({e.dest: s})
                got = np.array([m.of_row(z[j]) for j, m in enumerate(runs.metrics)])  # type: ignore[misc]
                st.revert()
            with Clock() as c_old:
                want = np.array([m.of_row(r.try_edge(e, 1.0)) for m, r in zip(runs.metrics, reps)])  # type: ignore[misc]
                for r in reps:
                    r.revert()
            ns.append(c_new.cpu)
            os_.append(c_old.cpu)
            moved = max(moved, float(np.abs(got - [m.of_row(base[j]) for j, m in enumerate(runs.metrics)]).max()))  # type: ignore[misc]
            worst = max(worst, float(np.abs(got - want).max()))
        new_t[layer], old_t[layer] = float(np.mean(ns)), float(np.mean(os_))
    assert np.array_equal(st.logits(), base), "an edge test left the stacked state changed"
    assert moved > 0, "no edge test moved the metric"
    scale = max(abs(runs.clean), abs(runs.corrupted), 1e-6)
    assert worst <= 1e-4 * scale, f"stacked and per-pair edge tests differ by {worst:.2e}"
    counts = {layer: len(idx) for layer, idx in layers.items()}
    per_new = sum(new_t[k] * counts[k] for k in counts) / E
    per_old = sum(old_t[k] * counts[k] for k in counts) / E
    lo, hi = ref["acdc"]
    print(f"  ACDC edge test   stacked {per_new * 1e3:7.1f} ms cpu per edge, per-pair replay (before) "
          f"{per_old * 1e3:7.1f} ms ({per_old / per_new:.1f}x); {sample} edges per destination layer, weighted by "
          f"the layers' edge counts; metrics agree to {worst:.1e}")
    print("                   by destination layer (ms, stacked / before): " + ", ".join(
        f"{'logits' if k == n_layer else k}: {new_t[k] * 1e3:.0f}/{old_t[k] * 1e3:.0f}" for k in sorted(counts)))
    print(f"                   PROJECTED full pass (upper bound, no edge removed): stacked {per_new * E / 60:.1f} min, "
          f"before {per_old * E / 60:.1f} min; auto-circuit {quoted(lo, hi)} per edge, "
          f"{quoted(ref['pass'][0] / 60, ref['pass'][1] / 60, 'min')} per pass (quoted): "
          f"auto-circuit / dfgpt {lo / per_new:.1f}–{hi / per_new:.1f}x")

    # -- top-k circuits: stacked from scratch against the per-pair replays -------------------------------
    order = np.argsort(-np.abs(runs.gradient(0.0)), kind="stable")
    ks = sorted({int(k) for k in np.geomspace(10, E, 10).round()})
    with Clock() as c_top:
        vals = [evaluate(runs, order[:k].tolist()) for k in ks]
    olds = []
    with Clock() as c_top_old:
        for k in ks:
            s = np.ones(E)
            s[order[:k]] = 0.0
            sw = {switch_name(d): s[comps.first[d]: comps.first[d] + len(comps.reads[d])] for d in comps.dests}
            olds.append(float(np.mean([m.of_row(r.evaluate(sw)) for m, r in zip(runs.metrics, reps)])))  # type: ignore[misc]
    err = float(np.abs(np.subtract(vals, olds)).max())
    assert err <= 1e-4 * scale, f"top-k circuits: stacked and per-pair differ by {err:.2e}"
    assert len(set(np.round(vals, 6))) > 1, "every top-k circuit measured the same"
    per_k, cpu_k = c_top.wall / len(ks), c_top.cpu / len(ks)
    print(f"  top-k circuits   {len(ks)} values of k ({ks[0]}..{ks[-1]}): stacked {per_k:.3f} s per k (cpu "
          f"{cpu_k:.3f}), per-pair (before) {c_top_old.cpu / len(ks):.3f} s cpu per k; auto-circuit "
          f"{ref['topk']:g} s per k (quoted): {ref['topk'] / per_k:.1f}x by wall clock, {ref['topk'] / cpu_k:.1f}x "
          f"by cpu; agree to {err:.1e}")

    # -- EAP end to end ----------------------------------------------------------------------------------
    with Clock() as c_eap:
        circ = dfgpt.eap(model, pairs, metric)
    fast = np.array(circ.scores)
    slow = runs.gradient_by_autodiff(0.0)
    top = float(np.abs(slow).max())
    err = float(np.abs(fast - slow).max()) / top
    assert top > 0 and np.count_nonzero(fast) > E // 2, "EAP scored nothing"
    assert err <= 1e-4, f"EAP's scores differ from the autodiff's by {err:.1e} of the largest"
    lo, hi = ref["eap"]
    print(f"  EAP end to end   dfgpt.eap {c_eap} (setup, scores, curve of {len(circ.curve)} circuits); "
          f"auto-circuit {quoted(lo, hi)} (quoted): dfgpt / auto-circuit {c_eap.wall / hi:.2f}–{c_eap.wall / lo:.2f}x "
          f"by wall clock, {c_eap.cpu / hi:.2f}–{c_eap.cpu / lo:.2f}x by cpu; "
          f"scores agree with the autodiff's to {err:.1e} of the largest")
    print(f"  (the per-pair path's setup, its circuit sheets: {old_setup}; {load()})")

    if full:
        with Clock() as c_acdc:
            got = dfgpt.acdc(model, pairs, metric, threshold=threshold)
        assert 0 < len(got.kept) < E, f"ACDC kept {len(got.kept)} of {E} edges: pick another --threshold"
        plo, phi = ref["pass"]
        print(f"  ACDC full pass   threshold {threshold:g}: dfgpt.acdc {c_acdc}, {len(got.kept):,} of {E:,} edges "
              f"kept, "
              f"faithfulness {got.faithfulness:.0%}; auto-circuit {quoted(plo / 60, phi / 60, 'min')} (quoted): "
              f"{plo / c_acdc.wall:.1f}–{phi / c_acdc.wall:.1f}x by wall clock, "
              f"{plo / c_acdc.cpu:.1f}–{phi / c_acdc.cpu:.1f}x by cpu; {load()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, nargs="+", default=[4, 12], choices=sorted(QUOTED))
    ap.add_argument("--threshold", type=float, default=1e-4, help="ACDC's threshold on |Δ logit difference|")
    ap.add_argument("--sample", type=int, default=4, help="edges tested per destination layer")
    ap.add_argument("--no-full", action="store_true", help="skip the full ACDC pass at 4 layers")
    ap.add_argument("--full-12", action="store_true", help="also run the full ACDC pass at 12 layers (an hour)")
    args = ap.parse_args()
    for n in args.layers:
        bench(n, args.threshold, args.sample, full=(n == 4 and not args.no_full) or (n == 12 and args.full_12))


if __name__ == "__main__":
    main()
