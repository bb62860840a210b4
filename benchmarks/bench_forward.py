"""Full forward through the engine vs a plain numpy forward of the same weights.

    python benchmarks/bench_forward.py              # times, and peak memory at T = 1024
    python benchmarks/bench_forward.py --no-memory  # times only

Prints ratios, one BLAS thread each side, the two sides interleaved call by call and the best
of each kept (load from elsewhere on the machine hits both alike). Goals, DESIGN §6: ≤ 1.5× on
sort (this baseline is the independent reference forward in tests/, not a lean one), ≤ 1.2×
at GPT-2-small shape for T = 64 and T = 1024. GPT-2-shaped weights are seeded random, made on
the fly (no download). Asserts the two forwards agree (float64 to 1e-9, float32 to 1% of the largest logit).

Peak memory (goal ≤ 2× numpy's at T = 1024): each side runs in a fresh process of its own, one BLAS
thread, and reports the peak of numpy's traced allocations during one forward over what was allocated
before it (the weights), so neither side pays for the other's leftovers. The numpy side is the lean
forward of bench_edits.py, which keeps nothing but the logits (the reference forward keeps every
attention matrix, as the tests want). Both sides' logits are checksummed and must agree.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import reference  # the independent forward

import dfgpt
from dfgpt import Config

GPT2_SMALL = Config(
    n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257, tied=True,
    layout="in_out", dtype="float32", name="gpt2-shape",
)


def ref_cfg(cfg: Config) -> dict:
    keys = ("n_layer", "n_head", "n_embd", "n_inner", "layer_norm", "mlp", "bias", "tied", "gelu", "layout", "ln_eps")
    return {k: getattr(cfg, k) for k in keys}


def bench(model: dfgpt.Model, tokens: list[int], repeat: int) -> tuple[float, float]:
    """(engine, numpy) best seconds of full forwards, interleaved."""
    state = model.state_dict()
    cfg = ref_cfg(model.config)
    engine, numpy_ = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        want = reference.forward(state, cfg, tokens)["logits"]
        numpy_.append(time.perf_counter() - t)
        t = time.perf_counter()
        got = model.sheet(tokens).values("logit")
        engine.append(time.perf_counter() - t)
    # float64: the same numbers to 1e-9 relative; float32: two implementations' rounding over 12 layers
    # and up to 1,024 positions drifts apart (each ~0.01 from float64 at 2 layers), so 1% of the largest
    # logit, which still catches any wrong position, head or layer.
    tol = 1e-9 if model.config.dtype == "float64" else 1e-2
    scale = max(1.0, float(np.abs(want).max()))
    assert np.abs(got - want).max() <= tol * scale, ("forwards disagree", float(np.abs(got - want).max()), scale)
    return min(engine), min(numpy_)


def peak(side: str, T: int) -> None:
    """In this (fresh) process: one forward of `side` at length T; prints {peak MiB, logit digest} as JSON."""
    from bench_edits import numpy_forward  # the lean forward: keeps nothing but the logits

    state = reference.random_state(ref_cfg(GPT2_SMALL), 50257, 1024, seed=0, dtype=np.float32)
    model = dfgpt.Model.from_state_dict(state, GPT2_SMALL)
    del state
    tokens = np.random.default_rng(0).integers(0, 50257, T).tolist()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    if side == "numpy":
        logits = numpy_forward(model.config, model.params, tokens)
    else:
        sheet = model.sheet(tokens)
        logits = sheet.values("logit")
    top = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(json.dumps({"peak_mib": (top - before) / 2**20, "argmax": np.argmax(logits, axis=-1).tolist(),
                      "max": float(np.abs(logits).max())}))


def memory(T: int) -> None:
    """Peak memory of one forward, engine vs numpy, each in a fresh process."""
    got = {}
    for side in ("numpy", "engine"):
        out = subprocess.run([sys.executable, __file__, "--peak", side, "--T", str(T)],
                             check=True, capture_output=True, text=True).stdout
        got[side] = json.loads(out.strip().splitlines()[-1])
    e, n = got["engine"], got["numpy"]
    # Real work: the same forward on each side, so the same next token at (nearly) every position.
    same = np.mean(np.array(e["argmax"]) == np.array(n["argmax"]))
    assert same > 0.99 and abs(e["max"] - n["max"]) <= 1e-2 * n["max"], (same, e["max"], n["max"])
    print(f"GPT-2 small shape (T={T}, float32, fast mode) peak memory over the weights: engine "
          f"{e['peak_mib']:.0f} MiB, numpy {n['peak_mib']:.0f} MiB, ratio {e['peak_mib'] / n['peak_mib']:.2f}x "
          f"(goal <= 2x); {same:.1%} of positions predict the same token")


def main() -> None:
    sort = dfgpt.load("sort-random")
    e, n = bench(sort, [0, 2, 1, 0, 2, 0, 0, 1, 1, 2, 2], repeat=30)
    print(f"sort (T=11, float64, exact mode): engine {e * 1e3:.2f} ms, numpy {n * 1e3:.2f} ms, "
          f"ratio {e / n:.2f}x (goal <= 1.5x)")
    rng = np.random.default_rng(0)
    state = reference.random_state(ref_cfg(GPT2_SMALL), 50257, 1024, seed=0, dtype=np.float32)
    model = dfgpt.Model.from_state_dict(state, GPT2_SMALL)
    for T, repeat in ((64, 5), (1024, 2)):
        tokens = rng.integers(0, 50257, T).tolist()
        e, n = bench(model, tokens, repeat=repeat)
        print(f"GPT-2 small shape (T={T}, float32, fast mode): engine {e * 1e3:.0f} ms, numpy {n * 1e3:.0f} ms, "
              f"ratio {e / n:.2f}x (goal <= 1.2x)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--peak", choices=("numpy", "engine"), help=argparse.SUPPRESS)  # one side, in this process
    ap.add_argument("--T", type=int, default=1024)
    ap.add_argument("--no-memory", action="store_true")
    args = ap.parse_args()
    with threadpool_limits(limits=1, user_api="blas"):
        if args.peak:
            peak(args.peak, args.T)
        else:
            main()
            if not args.no_memory:
                memory(args.T)
