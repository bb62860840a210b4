"""Edits and appends at GPT-2-small shape: incremental engine vs plain numpy forwards.

    python benchmarks/bench_edits.py            # GPT-2-small shape, T = 64 (about a minute)
    python benchmarks/bench_edits.py --small    # a quick run on a 4-layer model

Prints ratios (the goals of DESIGN §6): full forward engine / numpy (≤ 1.2× GPT-2, ≤ 3× sort);
read logit[T-1] after one weight edit in the last block vs a numpy forward of only what
logit[T-1] needs (≥ 10×); 32 appended tokens vs recomputing every position each step (≥ 20×).
"""

from __future__ import annotations

import argparse
import os
import time

# One BLAS thread for both sides: on a shared 2-core machine OpenBLAS threads stall ~20 ms
# per small matmul, which would time the scheduler rather than the engine.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

import dfgpt
from dfgpt.catalog import random_params
from dfgpt.config import Config
from dfgpt.ops import gelu

GPT2 = Config(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257, tied=True,
              layout="in_out", dtype="float32", name="gpt2-shape")


def numpy_forward(cfg, P, ids, last_only_from=None):
    """Plain numpy GPT forward -> logits [T, V], or of the last row only.

    With `last_only_from=L`, layers from L on compute only what the last row needs: keys and
    values of every row, everything else for the last row (the cone of logit[T-1]).
    """
    T, C, H = len(ids), cfg.n_embd, cfg.n_head
    hs = C // H

    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        d = x - mu
        return d / np.sqrt((d * d).mean(-1, keepdims=True) + cfg.ln_eps) * P[p + ".g"] + P[p + ".b"]

    def lin(x, p, sl=slice(None)):
        return x @ P[p + ".w"][:, sl] + P[p + ".b"][sl]  # in_out layout

    x = P["wte"][ids] + P["wpe"][:T]
    for layer in range(cfg.n_layer):
        p = f"h[{layer}]"
        h = ln(x, p + ".ln_1")
        if last_only_from is not None and layer >= last_only_from:
            kv = lin(h, p + ".attn.c_attn", slice(C, 3 * C))  # [T, 2C]
            q = lin(h[-1:], p + ".attn.c_attn", slice(0, C))  # [1, C]
            k, v = kv[:, :C], kv[:, C:]
            x = x[-1:]
            rows = slice(T - 1, T)
        else:
            qkv = lin(h, p + ".attn.c_attn")
            q, k, v = qkv[:, :C], qkv[:, C : 2 * C], qkv[:, 2 * C :]
            rows = slice(0, T)
        q = q.reshape(-1, H, hs).transpose(1, 0, 2)
        k = k.reshape(T, H, hs).transpose(1, 0, 2)
        v = v.reshape(T, H, hs).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / np.float32(np.sqrt(hs))
        mask = np.tril(np.ones((T, T), bool))[rows]
        s = np.where(mask, s, -np.inf)
        e = np.exp(s - s.max(-1, keepdims=True))
        y = (e / e.sum(-1, keepdims=True)) @ v
        x = x + lin(y.transpose(1, 0, 2).reshape(len(x), C), p + ".attn.c_proj")
        x = x + lin(gelu(lin(ln(x, p + ".ln_2"), p + ".mlp.c_fc"), cfg.gelu), p + ".mlp.c_proj")
    if last_only_from is not None:
        x = x[-1:]
    return ln(x, "ln_f") @ P["wte"].T


def best(f, n=3):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        out.append(time.perf_counter() - t)
    return min(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--T", type=int, default=64)
    ap.add_argument("--gen", type=int, default=32)
    args = ap.parse_args()
    cfg = GPT2.replace(n_layer=4) if args.small else GPT2
    t0 = time.perf_counter()
    P = random_params(cfg, seed=0)
    model = dfgpt.Model(cfg, P)
    print(f"{model!r}  (weights made in {time.perf_counter() - t0:.1f} s)")
    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg.vocab_size, args.T).tolist()
    T, L = args.T, cfg.n_layer

    # 1. full forward
    t_np = best(lambda: numpy_forward(cfg, P, ids))
    t_eng = best(lambda: model.sheet(ids).values("logit"))
    ref = numpy_forward(cfg, P, ids)
    sheet = model.sheet(ids)
    assert np.allclose(sheet.values("logit"), ref, atol=1e-3)
    print(f"full forward: engine {t_eng * 1e3:.0f} ms, numpy {t_np * 1e3:.0f} ms -> {t_eng / t_np:.2f}x (goal <= 1.2x)")

    # 2. one weight edit in the last block, then read logit[T-1]
    cell = f"h[{L - 1}].mlp.c_fc.w[5][7]"
    sheet.set(cell, 0.1)  # the first write copies this tensor once per sheet; not timed
    sheet.value(f"logit[{T - 1}]")
    vals = iter(np.linspace(-1, 1, 50))
    last = {}

    def edit_read():
        last["r"] = sheet.set(cell, float(next(vals)))
        sheet.value(f"logit[{T - 1}]")

    t_edit = best(edit_read, 5)
    r = last["r"]
    P2 = {k: sheet.engine.values[k] for k in P}
    t_cone = best(lambda: numpy_forward(cfg, P2, ids, last_only_from=L - 1))
    assert np.allclose(sheet.value(f"logit[{T - 1}]"), numpy_forward(cfg, P2, ids, L - 1)[0], atol=1e-3)
    print(f"edit {cell} + read logit[{T - 1}]: {t_edit * 1e3:.1f} ms (recomputed {r.recomputed:,} cells, "
          f"stale {r.stale:,}); numpy cone of logit[{T - 1}] {t_cone * 1e3:.0f} ms "
          f"-> {t_cone / t_edit:.1f}x faster (goal >= 10x)")

    # 3. generation by append vs recomputing every position each step
    def gen_engine():
        s = model.sheet(ids)
        s.value(f"logit[{T - 1}]")
        t = time.perf_counter()
        for _ in range(args.gen):
            s.append(int(np.argmax(s.value(f"logit[{s.T - 1}]"))))
        s.value(f"logit[{s.T - 1}]")
        return time.perf_counter() - t, s.tokens

    def gen_numpy():
        seq = list(ids)
        t = time.perf_counter()
        for _ in range(args.gen):
            seq.append(int(np.argmax(numpy_forward(cfg, P, seq, last_only_from=L)[0])))
        return time.perf_counter() - t, seq

    t_gen, toks = gen_engine()
    t_gen_np, toks_np = gen_numpy()
    same = sum(a == b for a, b in zip(toks[T:], toks_np[T:]))
    print(f"{args.gen} tokens by append: {t_gen * 1e3:.0f} ms; recomputing every position: {t_gen_np * 1e3:.0f} ms "
          f"-> {t_gen_np / t_gen:.1f}x faster (goal >= 20x); {same}/{args.gen} tokens agree")

    # 4. the sort model (float64, exact mode)
    sort = dfgpt.load("sort-random")
    Ps, text = sort.params, "CABACAB"
    sids = sort.encode(text)

    def sort_np():
        numpy_sort(sort.config, Ps, sids)

    t_s_np = best(sort_np, 20)
    t_s_eng = best(lambda: sort.sheet(text).values("logit"), 20)
    t_s_fast = best(lambda: sort.sheet(text, exact=False).values("logit"), 20)
    print(f"sort full forward: engine {t_s_eng * 1e3:.2f} ms exact mode, {t_s_fast * 1e3:.2f} ms fast mode; "
          f"numpy {t_s_np * 1e3:.2f} ms -> {t_s_eng / t_s_np:.1f}x / {t_s_fast / t_s_np:.1f}x (goal <= 3x)")


def numpy_sort(cfg, P, ids):
    """The sort model's forward (out_in layout, untied head) in plain numpy."""
    C, H = cfg.n_embd, cfg.n_head
    T = len(ids)

    def ln(x, p):
        mu = x.mean(-1, keepdims=True)
        d = x - mu
        return d / np.sqrt((d * d).mean(-1, keepdims=True) + cfg.ln_eps) * P[p + ".g"] + P[p + ".b"]

    def lin(x, p):
        return x @ P[p + ".w"].T + P[p + ".b"]

    x = P["wte"][ids] + P["wpe"][:T]
    mask = np.tril(np.ones((T, T), bool))
    for layer in range(cfg.n_layer):
        p = f"h[{layer}]"
        qkv = lin(ln(x, p + ".ln_1"), p + ".attn.c_attn").reshape(T, 3, H, -1).transpose(1, 2, 0, 3)
        q, k, v = qkv
        s = np.where(mask, q @ k.transpose(0, 2, 1) / np.sqrt(C // H), -np.inf)
        e = np.exp(s - s.max(-1, keepdims=True))
        y = (e / e.sum(-1, keepdims=True)) @ v
        x = x + lin(y.transpose(1, 0, 2).reshape(T, C), p + ".attn.c_proj")
        x = x + lin(gelu(lin(ln(x, p + ".ln_2"), p + ".mlp.c_fc"), cfg.gelu), p + ".mlp.c_proj")
    return ln(x, "ln_f") @ P["lm_head.w"].T


if __name__ == "__main__":
    main()
