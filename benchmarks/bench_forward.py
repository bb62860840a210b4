"""Full forward through the engine vs a plain numpy forward of the same weights.

    python benchmarks/bench_forward.py

Prints ratios (goals, DESIGN §6: ≤ 3× on sort, ≤ 1.2× at GPT-2-small shape, T = 64).
GPT-2-shaped weights are seeded random, made on the fly (no download).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

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


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench(model: dfgpt.Model, tokens: list[int], repeat: int) -> tuple[float, float]:
    state = model.state_dict()
    cfg = ref_cfg(model.config)
    numpy_t = best(lambda: reference.forward(state, cfg, tokens), repeat)
    engine_t = best(lambda: model.sheet(tokens).values("logit"), repeat)
    return engine_t, numpy_t


def main() -> None:
    sort = dfgpt.load("sort-random")
    e, n = bench(sort, [0, 2, 1, 0, 2, 0, 0, 1, 1, 2, 2], repeat=30)
    print(f"sort (T=11, float64, exact mode): engine {e * 1e3:.2f} ms, numpy {n * 1e3:.2f} ms, "
          f"ratio {e / n:.2f}x (goal <= 3x)")
    rng = np.random.default_rng(0)
    state = reference.random_state(ref_cfg(GPT2_SMALL), 50257, 1024, seed=0, dtype=np.float32)
    model = dfgpt.Model.from_state_dict(state, GPT2_SMALL)
    tokens = rng.integers(0, 50257, 64).tolist()
    e, n = bench(model, tokens, repeat=5)
    print(f"GPT-2 small shape (T=64, float32, fast mode): engine {e * 1e3:.1f} ms, numpy {n * 1e3:.1f} ms, "
          f"ratio {e / n:.2f}x (goal <= 1.2x)")


if __name__ == "__main__":
    main()
