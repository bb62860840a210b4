"""The sort task score (greedy decoding of all 729 inputs) against one batched numpy forward.

    python benchmarks/bench_task.py

`sheet.task_score()` decodes every 6-letter input greedily, 6 tokens each (dfgpt.toys.sort_task:
the batched per-op forward, one new position per step, keys and values kept). The baseline is
one plain numpy forward of all 729 full sequences ([729, 11]: the input and the 5 answers fed
back) through the same weights: what a single teacher-forced pass costs. The goal (project issue
#18): the task score is no slower than that one forward.

Asserts the answers agree: the numpy forward's argmax at positions 5..10, fed the task's own
answers, gives those answers back (the decoding is greedy), and the score counts them right.
One BLAS thread each side; the two sides interleaved and the best of each kept.
"""

from __future__ import annotations

import math
import time

import numpy as np
from threadpoolctl import threadpool_limits

import dfgpt
from dfgpt.toys.sort_task import N_IN, all_inputs, greedy_sort, sort_ids


def _ln(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, eps: float) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    d = x - mu
    var = (d * d).mean(axis=-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps) * w
    return y if b is None else y + b


def numpy_forward(state: dict[str, np.ndarray], cfg: dfgpt.Config, tokens: np.ndarray,
                  flat: bool = False) -> np.ndarray:
    """A plain nanoGPT forward of a batch: tokens [B, T] -> logits [B, T, V] (independent of the engine).

    `flat`: each linear layer as one [B·T, K] @ [K, n] product instead of numpy's [B, T, K] @ [K, n]
    (a loop over the batch inside matmul); the same numbers to rounding, ~3x faster here.
    """
    B, T = tokens.shape
    C, H = cfg.n_embd, cfg.n_head
    hs = C // H
    eps = cfg.ln_eps

    def linear(x: np.ndarray, prefix: str) -> np.ndarray:
        W = state[prefix + ".weight"]
        shape = x.shape
        if flat:
            x = x.reshape(-1, shape[-1])
        y = x @ W.T if cfg.layout == "out_in" else x @ W
        y = y.reshape(*shape[:-1], -1)
        b = state.get(prefix + ".bias")
        return y if b is None else y + b

    def ln(x: np.ndarray, prefix: str) -> np.ndarray:
        return _ln(x, state[prefix + ".weight"], state.get(prefix + ".bias"), eps)

    x = state["transformer.wte.weight"][tokens] + state["transformer.wpe.weight"][:T]  # [B, T, C]
    causal = np.tril(np.ones((T, T), bool))
    for layer in range(cfg.n_layer):
        h = f"transformer.h.{layer}"
        qkv = linear(ln(x, h + ".ln_1"), h + ".attn.c_attn")  # [B, T, 3C]
        q, k, v = (a.reshape(B, T, H, hs).transpose(0, 2, 1, 3) for a in np.split(qkv, 3, axis=-1))
        s = np.where(causal, q @ k.transpose(0, 1, 3, 2) / math.sqrt(hs), -np.inf)  # [B, H, T, T]
        e = np.exp(s - s.max(axis=-1, keepdims=True))
        y = (e / e.sum(axis=-1, keepdims=True)) @ v  # [B, H, T, hs]
        x = x + linear(y.transpose(0, 2, 1, 3).reshape(B, T, C), h + ".attn.c_proj")
        m = linear(ln(x, h + ".ln_2"), h + ".mlp.c_fc")
        m = 0.5 * m * (1 + np.tanh(math.sqrt(2 / math.pi) * (m + 0.044715 * (m * m * m))))
        x = x + linear(m, h + ".mlp.c_proj")
    head = state["transformer.wte.weight"] if cfg.tied else state["lm_head.weight"]
    return ln(x, "transformer.ln_f") @ head.T


def main(repeat: int = 7) -> None:
    model = dfgpt.load("sort")
    sheet = model.sheet("CBABBC")
    cfg = model.config
    assert cfg.gelu == "tanh" and cfg.mlp and cfg.layer_norm, "the lean forward is written for the sort model"
    state = model.state_dict()
    ids = sort_ids(cfg)[all_inputs()]  # [729, 6]
    out = greedy_sort(model.graph, model.params, ids)  # the task's answers, [729, 6]
    seqs = np.concatenate([ids, out[:, :-1]], axis=1)  # [729, 11]: each input and its answers fed back
    t_score, t_numpy, t_flat = [], [], []
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(repeat):
            t = time.perf_counter()
            score = sheet.task_score()
            t_score.append(time.perf_counter() - t)
            t = time.perf_counter()
            logits = numpy_forward(state, cfg, seqs)
            t_numpy.append(time.perf_counter() - t)
            t = time.perf_counter()
            flat = numpy_forward(state, cfg, seqs, flat=True)
            t_flat.append(time.perf_counter() - t)
    # The same answers: the plain forward, fed the answers, predicts each of them (greedy decoding).
    for lg in (logits, flat):
        want = lg[:, N_IN - 1 :].argmax(axis=-1)  # [729, 6]
        assert (want == out).all(), ("answers disagree", int((want != out).any(axis=1).sum()))
    assert score.correct == int((out == np.sort(ids, axis=1)).all(axis=1).sum()) and score.total == 729
    s, n, f = min(t_score), min(t_numpy), min(t_flat)
    print(f"sort task score, all 729 inputs ({score.correct}/729 sorted): task_score {s * 1e3:.2f} ms")
    print(f"  one batched numpy forward [729, 11]:          {n * 1e3:7.2f} ms, ratio {s / n:.2f}x (goal <= 1.0x)")
    print(f"  the same, each linear one 2-D matmul:         {f * 1e3:7.2f} ms, ratio {s / f:.2f}x")


if __name__ == "__main__":
    main()
