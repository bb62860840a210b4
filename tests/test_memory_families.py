"""Memory of the family models: a bfloat16 checkpoint widens to exactly one float32 array per tensor, and
influence writes its scores over the gradients it ranks yet answers exactly as a full ranking does."""

from __future__ import annotations

import tracemalloc

import families
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dfgpt
from dfgpt import Config
from dfgpt.core import arena
from dfgpt.models.catalog import random_params
from dfgpt.models.checkpoints import map_safetensors

IDS = [3, 17, 5, 40, 22, 9, 31, 0, 12]


def _root(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def test_a_bfloat16_llama_widens_bit_exactly_and_computes_as_transformers(tmp_path):
    hf = families.make("llama", tmp_path, dtype="bfloat16")  # hf: the bf16 file read in float32 by transformers
    model = dfgpt.load(str(tmp_path))
    assert "computes in float32 from bfloat16" in repr(model)
    state = {k: v.numpy() for k, v in hf.state_dict().items()}
    got = model.state_dict()
    assert sorted(got) == sorted(k for k in state if "rotary" not in k)
    for key, a in got.items():
        assert a.dtype == np.float32 and a.flags.c_contiguous, key
        assert np.array_equal(a, state[key]), key  # bf16 -> f32 is exact: the same numbers, bit for bit
        assert _root(a).nbytes == a.nbytes, key  # one float32 array of its own: no wider or longer backing
    want = families.logits(hf, IDS).logits[0].numpy()
    np.testing.assert_allclose(model.sheet(IDS).values("logit"), want, rtol=0, atol=2e-5 * np.abs(want).max())


def test_widening_bfloat16_allocates_only_the_float32_arrays(tmp_path):
    families.make("llama", tmp_path, dtype="bfloat16", vocab_size=4000)  # the embedding and head dominate
    file = tmp_path / "model.safetensors"
    tracemalloc.start()
    try:
        state = map_safetensors(file)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    f32 = sum(a.nbytes for a in state.values())
    largest = max(a.nbytes for a in state.values())
    assert all(a.dtype == np.float32 for a in state.values())
    assert current >= f32  # every float32 array is numpy's own, traced
    # No second float32-sized temporary per tensor (a shift into a new array would add the largest tensor).
    assert peak - f32 < largest // 4, (peak, f32, largest)


def _reference(sheet: dfgpt.Sheet, target: str, top: int, by: str) -> tuple[list[tuple], dict[str, np.ndarray]]:
    """The old ranking: every cone cell's gradient (× value) in one list, fully sorted (|score| descending,
    nan first, then the cone's tensor order, then the cell's row-major index among the cone cells)."""
    prov = sheet.provenance(target)
    g = sheet.grad(target)
    rows, scores = [], {}
    for r, (t, m) in enumerate(prov.masks.items()):
        if sheet.graph.specs[t].kind == "input":
            continue
        m = m & ~prov.seeds[t] if t in prov.seeds else m
        if not m.any():
            continue
        ga = g.arrays.get(t)
        grads = np.zeros(int(m.sum()), sheet.engine.dtype) if ga is None else ga[m]
        s = grads if by == "grad" else grads * np.asarray(sheet.engine.view(t))[m]
        full = np.zeros(m.shape)
        full[m] = s
        scores[t] = full
        idx = np.argwhere(m)
        for i in range(s.size):
            a = abs(float(s[i]))
            rows.append((-np.inf if np.isnan(a) else -a, r, i, t, tuple(int(j) for j in idx[i]), float(grads[i]),
                         float(s[i])))
    rows.sort(key=lambda x: x[:3])
    return [(t, idx, grad, score) for *_, t, idx, grad, score in rows[:top]], scores


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), family=st.sampled_from(["gpt2", "llama"]), top=st.integers(1, 400),
       by=st.sampled_from(["grad*value", "grad"]), t=st.integers(0, 5), v=st.integers(0, 6))
def test_influence_ranks_exactly_as_a_full_sort_of_every_cone_cell(seed, family, top, by, t, v):
    kw = dict(n_kv_head=1, positions="rotary", norm="rms", mlp_kind="swiglu", layout="out_in",
              bias=False) if family == "llama" else {}
    cfg = Config(n_layer=2, n_head=2, n_embd=8, block_size=8, vocab_size=7, family=family, **kw)
    sheet = dfgpt.Model(cfg, random_params(cfg, seed)).sheet(list(np.random.default_rng(seed).integers(0, 7, 6)))
    target = f"logit[{t}][{v}]"
    res = sheet.influence(target, top=top, by=by)
    want, scores = _reference(sheet, target, top, by)
    got = [(it.tensor, it.index, it.grad, it.score) for it in res]
    assert got == want  # the same cells, in the same order, with the same gradients and scores (exact floats)
    assert sorted(res.scores) == sorted(scores)
    for name, s in scores.items():
        assert np.array_equal(res.scores[name], s), name
    assert [it.value for it in res] == [float(sheet.engine.view(it.tensor)[it.index]) for it in res]


def test_a_second_influence_on_the_same_sheet_is_unchanged_by_the_first():
    """The scores are written over this call's own gradients: never over the sheet's values or a cached array."""
    cfg = Config(n_layer=2, n_head=2, n_embd=8, block_size=8, vocab_size=7, family="llama", n_kv_head=1,
                 positions="rotary", norm="rms", mlp_kind="swiglu", layout="out_in", bias=False)
    sheet = dfgpt.Model(cfg, random_params(cfg, 3)).sheet([1, 4, 2, 6, 0])
    sheet.values("prob")  # every cell computed
    before = {n: np.array(sheet.engine.view(n)) for n in sheet.graph.order if n in sheet.engine.values}
    first = sheet.influence("logit[4][2]", top=30)
    grad_after = sheet.grad("logit[4][2]")
    second = sheet.influence("logit[4][2]", top=30)
    assert [(i.cell, i.grad, i.score) for i in first] == [(i.cell, i.grad, i.score) for i in second]
    for n, a in before.items():
        assert np.array_equal(np.asarray(sheet.engine.view(n)), a, equal_nan=True), n
    assert all(i.grad == grad_after[i.cell] for i in first)


@pytest.mark.parametrize("by", ["ablation", "ablation-fixed-norms"])
def test_ablation_rankings_still_read_the_gradients(by):
    cfg = Config(n_layer=1, n_head=2, n_embd=8, block_size=8, vocab_size=7, family="llama", n_kv_head=1,
                 positions="rotary", norm="rms", mlp_kind="swiglu", layout="out_in", bias=False)
    sheet = dfgpt.Model(cfg, random_params(cfg, 5)).sheet([1, 4, 2, 6])
    g = sheet.grad("logit[3][1]")
    res = sheet.influence("logit[3][1]", top=5, by=by)
    assert len(res) == 5 and all(it.grad == g[it.cell] for it in res)



def test_an_arena_request_larger_than_it_keeps_is_freed_with_its_last_user(monkeypatch):
    monkeypatch.setattr(arena, "KEEP_BYTES", 1 << 20)
    before = arena.held()
    big = arena.block(1 << 19, np.float32)  # 2 MiB > the 1 MiB kept
    assert big.size == 1 << 19 and arena.held() == before  # not pooled
    small = arena.block(1000, np.float32)
    assert arena.held()[0] >= small.nbytes  # a small one still is
