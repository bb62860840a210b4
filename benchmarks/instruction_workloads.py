"""The workloads of bench_instructions.py: python instruction_workloads.py NAME (run under callgrind there).

Each uses only the public API that both trees of a comparison have, runs once to warm up, then once
inside a builtin `map` step (what callgrind counts), with the objects made before it frozen out of
the garbage collector's sight, and prints a digest of its result.
"""

from __future__ import annotations

import gc
import hashlib
import sys
import tempfile
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

import dfgpt
from dfgpt import Config
from dfgpt.models.catalog import random_params
from dfgpt.models.checkpoints import to_nanogpt_key

threadpool_limits(1)
SORT = dfgpt.load("sort")


def _g2() -> dfgpt.Model:
    cfg = Config(n_layer=2, n_head=4, n_embd=64, block_size=64, vocab_size=500, dtype="float32", name="g2")
    return dfgpt.Model.from_state_dict({to_nanogpt_key(k): v for k, v in random_params(cfg, seed=3).items()}, cfg)


def forward() -> Any:
    return [SORT.sheet("CABACA").value("logit[5]") for _ in range(200)][-1]


def edit() -> Any:
    s = SORT.sheet("CABACA")
    s.value("logit[5]")
    for i in range(100):
        s.set("h[1].mlp.c_fc.w[3][7]", 0.01 * i)
        s.value("logit[5]")
    return s.value("logit[5]")


def generate() -> Any:
    return [SORT.generate("CBABBC", max_new_tokens=5) for _ in range(30)]


def task() -> Any:
    return str(SORT.sheet("CABACA").task_score())


def sweep() -> Any:
    a, b = SORT.sheet("CABACA"), SORT.sheet("CBABBC")
    return [np.asarray(dfgpt.sweep(a, b, "logit_diff:A,C", over=o).values) for o in ("resid_pre", "head_out")]


def patch() -> Any:
    a, b = SORT.sheet("CABACA"), SORT.sheet("CBABBC")
    out = []
    for _ in range(20):
        a.patch(b, "h[1].out[2]")
        out.append(a.value("logit[5]"))
        a.undo()
    return out


def influence() -> Any:
    s = SORT.sheet("CABACA")
    return [s.influence("logit[5][A]", top=20).table() for _ in range(5)]


def gpt2fwd() -> Any:
    m = _g2()
    return [m.sheet(list(range(1, 49))).value("logit[47]") for _ in range(20)][-1]


def gpt2sweep() -> Any:
    m = _g2()
    a, b = m.sheet(list(range(1, 17))), m.sheet([2, *range(2, 17)])
    return np.asarray(dfgpt.sweep(a, b, "logit_diff:0,1", over="resid_pre").values)


def export() -> Any:
    return SORT.sheet("CABACA").to_xlsx(tempfile.mkdtemp() + "/x.xlsx", progress=False).formulas


def _digest(x: Any) -> str:
    h = hashlib.sha256()
    for part in x if isinstance(x, list) else [x]:
        h.update(np.asarray(part).tobytes() if isinstance(part, np.ndarray) else repr(part).encode())
    return h.hexdigest()[:16]


if __name__ == "__main__":
    fn = globals()[sys.argv[1]]
    fn()  # warm-up: imports, memoised plans, value blocks
    # A full collection landing in the measured run by chance (where the allocation counter happens to
    # cross its threshold) costs ~10% of a small workload: collect and freeze what exists before it.
    gc.collect()
    gc.freeze()
    (result,) = list(map(lambda _: fn(), [0]))  # the measured run: callgrind counts inside map_next
    print("digest", _digest(result))
