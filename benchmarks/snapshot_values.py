"""Every value dfgpt computes for a fixed set of models and queries, saved to compare a refactor bit for bit.

    python benchmarks/snapshot_values.py save before.npz      # in the old checkout (PYTHONPATH=it)
    python benchmarks/snapshot_values.py save after.npz       # in the new one
    python benchmarks/snapshot_values.py compare before.npz after.npz

Every computed tensor of `sort` (three inputs), `sort-random` (two), `sort-neat`, `aab` (two) and a
4-layer GPT-2 shape (float32, T = 16), before and after an edit and its undo, after a patch;
gradients, formula texts, SymPy, provenance, influence tables, receipts, sweeps and their tables,
the task score, generation (greedy and sampled), the logit lens and the workbook's sheet XML (hashed).
Only the public API, so an old checkout runs it too. `compare` prints every array or text that
differs in any bit, and the count ("0 differences": the refactor changed no value).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np

import dfgpt
from dfgpt import Config
from dfgpt.interventions.lens import logit_lens
from dfgpt.models.catalog import random_params
from dfgpt.models.checkpoints import to_nanogpt_key


def models() -> Iterator[tuple[str, dfgpt.Model, list[Any]]]:
    yield "sort", dfgpt.load("sort"), ["CABACA", "CBABBC", "AAAAAA"]
    yield "sort-random", dfgpt.load("sort-random"), ["CAB", "CABACACBA"]
    yield "sort-neat", dfgpt.load("sort-neat"), ["CABACA"]
    yield "aab", dfgpt.load("aab"), ["aab", "aabaa"]
    cfg = Config(n_layer=4, n_head=12, n_embd=768, block_size=1024, vocab_size=50257, dtype="float32", name="g4")
    m = dfgpt.Model.from_state_dict({to_nanogpt_key(k): v for k, v in random_params(cfg, seed=3).items()}, cfg)
    yield "g4", m, [[int(x) for x in np.random.default_rng(1).integers(0, 50257, 16)]]


def save(path: str) -> None:
    out: dict[str, np.ndarray] = {}
    texts: dict[str, str] = {}

    def tensors(prefix: str, sheet: Any) -> None:
        for n in sheet.graph.computed:
            v = sheet.values(n)
            if isinstance(v, np.ndarray) and v.dtype != object:
                out[f"{prefix}/{n}"] = np.asarray(v)

    for name, model, inputs in models():
        for i, text in enumerate(inputs):
            p = f"{name}/{i}"
            s = model.sheet(text)
            tensors(p + "/fwd", s)
            last = s.T - 1
            tgt = f"logit[{last}][{model.vocab[0] if model.config.vocab else 0}]"
            texts[p + "/formula"] = "\n".join(
                s.formula(n + "".join("[0]" for _ in s.graph.specs[n].axes)) for n in s.graph.computed)
            texts[p + "/influence"] = s.influence(tgt, top=15).table()
            gr = s.grad(tgt)
            for k in [*list(s.graph.parameters)[:6], "emb"]:
                try:
                    out[f"{p}/grad/{k}"] = np.asarray(gr[k])
                except Exception as e:  # a tensor outside the gradient's cone: its error, compared as text
                    texts[f"{p}/grad/{k}"] = repr(e)
            if name != "g4":
                try:
                    texts[p + "/expr"] = str(s.expr(f"h[0].attn.att[0][{last}][0]", depth=2))
                except Exception as e:
                    texts[p + "/expr"] = repr(e)
                texts[p + "/prov"] = str(s.provenance(tgt))
            texts[p + "/receipt"] = str(s.set("h[0].attn.c_attn.w[1][2]", 0.25))
            tensors(p + "/edited", s)
            s.undo()
            tensors(p + "/undone", s)
            if name in ("sort", "sort-random") and i == 0:
                other = model.sheet("CBABBC"[: s.T])
                s.patch(other, "h[1].out[2]")
                tensors(p + "/patched", s)
                s.undo()
                sw = dfgpt.sweep(s, other, "logit_diff:A,C", over="resid_pre")
                out[p + "/sweep"] = np.asarray(sw.values)
                texts[p + "/sweeptable"] = sw.table()
                texts[p + "/task"] = str(s.task_score())
                texts[p + "/generate"] = model.generate("CBABBC", max_new_tokens=5)
                texts[p + "/gen_t"] = model.generate("CBABBC", max_new_tokens=5, temperature=1.3, seed=4)
                d = tempfile.mkdtemp()
                res = s.to_xlsx(d + "/x.xlsx", progress=False)
                texts[p + "/xlsx"] = f"{res.formulas} {len(res.sheets)}"
                with zipfile.ZipFile(d + "/x.xlsx") as z:
                    for nm in sorted(z.namelist()):
                        if nm.startswith("xl/worksheets"):
                            texts[p + "/xlsx/" + nm] = hashlib.sha256(z.read(nm)).hexdigest()
                texts[p + "/draw"] = dfgpt.draw(s, "h[0].attn").source
                out[p + "/lens"] = np.asarray(logit_lens(s).logits)
    np.savez(path, **out)
    with open(path + ".json", "w", encoding="utf-8") as f:
        json.dump(texts, f, indent=0, sort_keys=True)
    print(len(out), "arrays", len(texts), "texts")


def compare(before: str, after: str) -> int:
    a, b = np.load(before, allow_pickle=False), np.load(after, allow_pickle=False)
    bad = 0
    for k in sorted(set(a.files) | set(b.files)):
        if k not in a.files or k not in b.files:
            print("missing", k)
            bad += 1
            continue
        x, y = a[k], b[k]
        if x.shape != y.shape or x.dtype != y.dtype or x.tobytes() != y.tobytes():
            print("DIFF", k, x.shape, y.shape, x.dtype, y.dtype)
            bad += 1
    with open(before + ".json", encoding="utf-8") as f:
        ta = json.load(f)
    with open(after + ".json", encoding="utf-8") as f:
        tb = json.load(f)
    for k in sorted(set(ta) | set(tb)):
        if ta.get(k) != tb.get(k):
            print("TEXT DIFF", k, repr(ta.get(k))[:200], "|", repr(tb.get(k))[:200])
            bad += 1
    print(len(a.files), "arrays,", len(ta), "texts,", bad, "differences")
    return bad


if __name__ == "__main__":
    if sys.argv[1:2] == ["save"] and len(sys.argv) == 3:
        save(sys.argv[2])
    elif sys.argv[1:2] == ["compare"] and len(sys.argv) == 4:
        sys.exit(1 if compare(sys.argv[2], sys.argv[3]) else 0)
    else:
        sys.exit(__doc__)
