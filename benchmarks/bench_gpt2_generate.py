"""Greedy generation at GPT-2-small shape: dfgpt (appending as an edit) vs transformers' KV cache.

    python benchmarks/bench_gpt2_generate.py

A seeded random GPT2LMHeadModel (124M parameters, made on the fly, no download) is saved as a
Hugging Face folder and loaded with `dfgpt.load`; both then generate 32 tokens greedily from
the same 64-token prompt. Prints times, the ratio, and how many generated tokens agree.
Both use the same number of BLAS/torch threads (1: the machine has 2 cores, shared).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import tempfile
import time

import numpy as np

import dfgpt

NEW, T = 32, 64


def main() -> None:
    import torch
    import transformers

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    prompt = np.random.default_rng(0).integers(0, cfg.vocab_size, T).tolist()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp, safe_serialization=True)
        t = time.perf_counter()
        model = dfgpt.load(tmp)
        load_s = time.perf_counter() - t

    def ours() -> list[int]:
        return model.generate(prompt, max_new_tokens=NEW)

    def theirs() -> list[int]:
        with torch.no_grad():
            out = hf.generate(torch.tensor([prompt]), max_new_tokens=NEW, do_sample=False, use_cache=True,
                              pad_token_id=0, attention_mask=torch.ones(1, T, dtype=torch.long))
        return out[0, T:].tolist()

    ours(), theirs()  # warm up
    a = time.perf_counter()
    got = ours()
    a = time.perf_counter() - a
    b = time.perf_counter()
    ref = theirs()
    b = time.perf_counter() - b
    agree = sum(x == y for x, y in zip(got, ref))
    print(f"GPT-2 small shape, prompt {T}, {NEW} greedy tokens, 1 thread each: load {load_s:.1f} s")
    print(f"  dfgpt (append as an edit): {a:.2f} s ({a / NEW * 1e3:.0f} ms/token)")
    print(f"  transformers (KV cache):   {b:.2f} s ({b / NEW * 1e3:.0f} ms/token)")
    print(f"  dfgpt / transformers time: {a / b:.2f}x; tokens that agree: {agree}/{NEW}")


if __name__ == "__main__":
    main()
