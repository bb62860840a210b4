"""Generation and training speed: one `generate` call (appending to one sheet) against a plain
numpy loop that recomputes every position at each step, and the time to train `sort`.

    python benchmarks/bench_generate.py                 # sort model + training time
    python benchmarks/bench_generate.py --no-train      # generation only
    python benchmarks/bench_generate.py --gpt2          # also a GPT-2-small-shaped model (T = 64, 32 tokens)

Prints times and ratios; never asserts.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import dfgpt
from dfgpt.core.autodiff import forward
from dfgpt.core.blas import one_blas_thread
from dfgpt.core.config import Config
from dfgpt.models.catalog import random_params
from dfgpt.toys.training import train_sort


def recompute_loop(model: dfgpt.Model, ids: list[int], n: int) -> list[int]:
    """nanoGPT's loop: every step recomputes every position of the cropped context (last-row logits used)."""
    ids = list(ids)
    B = model.config.block_size
    for _ in range(n):
        V = forward(model.graph, model.params, np.array([ids[-B:]]), until="logit")
        ids.append(int(np.argmax(V["logit"][0, -1])))
    return ids


def best_of(fs: list, repeat: int) -> list[float]:
    """The best time of each function, the calls interleaved (load from elsewhere hits all alike)."""
    times: list[list[float]] = [[] for _ in fs]
    for _ in range(repeat):
        for f, ts in zip(fs, times):
            t = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t)
    return [min(ts) for ts in times]


def bench(model: dfgpt.Model, prompt: list[int], n: int, repeat: int, label: str) -> None:
    with one_blas_thread():
        want = recompute_loop(model, prompt, n)[len(prompt):]
        got = model.generate(prompt, max_new_tokens=n, crop=True)
        assert got == want, (got, want)
        t_gen, t_loop = best_of([lambda: model.generate(prompt, max_new_tokens=n, crop=True),
                                 lambda: recompute_loop(model, prompt, n)], repeat)
    print(f"{label}: {n} new tokens after {len(prompt)}")
    print(f"  generate (append to one sheet):      {t_gen * 1e3:9.2f} ms")
    print(f"  numpy loop (recompute all positions): {t_loop * 1e3:9.2f} ms")
    print(f"  ratio loop / generate:                {t_loop / t_gen:9.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-train", action="store_true", help="skip the training run")
    ap.add_argument("--gpt2", action="store_true", help="also a GPT-2-small-shaped model (slow, ~1 GB)")
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    sort = dfgpt.load("sort")
    bench(sort, sort.encode("CBABBC"), 6, args.repeat, "sort (CBABBC)")
    if args.gpt2:
        cfg = Config(n_layer=12, n_head=12, n_embd=768, block_size=96, vocab_size=50257, tied=True, dtype="float32",
                     name="gpt2-shaped")
        model = dfgpt.Model(cfg, random_params(cfg, seed=0))
        prompt = list(np.random.default_rng(0).integers(0, 50257, 64))
        bench(model, [int(t) for t in prompt], 32, 2, "GPT-2-small shape, random weights (T = 64)")
    if not args.no_train:
        res = train_sort(seed=0, progress=False)
        print(f"train sort (seed 0): {res.steps} steps, {res.seconds:.1f} s, "
              f"{res.seconds / res.steps * 1e3:.1f} ms/step, greedy sorts {round(res.accuracy * 729)}/729")


if __name__ == "__main__":
    main()
