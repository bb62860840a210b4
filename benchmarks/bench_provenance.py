"""Provenance speed: cone + top-20 influence on the sort model, and one logit's cone at GPT-2 size.

    python benchmarks/bench_provenance.py

Goals (issue 4): cone + top-20 influence of logit[5][A] on sort ≤ 50 ms; the cone of one
logit at GPT-2-small shape (T = 64, random weights) ≤ 1 s.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

import dfgpt
from dfgpt import Config, Model
from dfgpt.analysis.influence import influence
from dfgpt.analysis.provenance import provenance
from dfgpt.models.catalog import random_params


def _ms(fn: Callable[[], object], reps: int) -> tuple[float, float]:
    """(median, best) wall time in ms."""
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), min(times)


def bench_sort(reps: int = 30) -> None:
    model = dfgpt.load("sort-random")
    warm = model.sheet("CABACA")
    _ = warm.value("logit[5][A]")

    def both(sheet: dfgpt.Sheet) -> None:
        res = influence(sheet, "logit[5][A]", top=20)  # computes the cone once, kept as res.provenance
        len(res.provenance)

    rows = [
        ("cone + top-20 influence of logit[5][A], values cached", lambda: both(warm), reps),
        ("same on a fresh sheet (forward included)", lambda: both(model.sheet("CABACA")), reps),
        ("cone + summary()", lambda: provenance(warm, "logit[5][A]").summary(), reps),
        ("top-20 by ablation (40 candidates)", lambda: influence(warm, "logit[5][A]", by="ablation"), 3),
    ]
    for label, fn, n in rows:
        med, best = _ms(fn, n)
        print(f"sort-random, {label:<55} median {med:7.1f} ms, best {best:7.1f} ms")


def bench_gpt2(reps: int = 3) -> None:
    cfg = Config(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257, tied=True,
                 layout="in_out", dtype="float32", name="gpt2-shape")
    t = time.perf_counter()
    model = Model(cfg, random_params(cfg, seed=0))
    print(f"gpt2-shape random weights made in {time.perf_counter() - t:.1f} s")
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, 64).tolist()
    sheet = model.sheet(ids)
    holder: dict[str, object] = {}

    def cone() -> None:
        holder["prov"] = provenance(sheet, "logit[63][0]")

    med, best = _ms(cone, reps)
    prov = holder["prov"]
    print(f"gpt2-shape T=64, cone of logit[63][0]: median {med:.0f} ms, best {best:.0f} ms "
          f"({len(prov):,} cells)")  # type: ignore[arg-type]


if __name__ == "__main__":
    bench_sort()
    bench_gpt2()
