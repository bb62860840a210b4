"""Transient tensors (dfgpt.core.transient): a large sheet drops its intermediates once read and
recomputes them on demand, bit for bit; nothing a user can ask tells it from a resident sheet."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_engine_incremental import MODELS, SOME, START, edit_and_redo

import dfgpt
from dfgpt import Config
from dfgpt.core import transient
from dfgpt.core.evaluate import Engine
from dfgpt.models.catalog import random_params

SORT = dfgpt.load("sort-random")
TINY = MODELS["tiny"]
# Large enough per head and position for [heads, T, T] to dominate, small enough to run in a test.
WIDE = Config(n_layer=2, n_head=4, n_embd=32, block_size=128, vocab=tuple("abcdefgh"), n_inner=128,
              dtype="float32", name="wide")
WIDE_MODEL = dfgpt.Model(WIDE, random_params(WIDE, seed=5))
GPT2_LIKE = Config(n_layer=2, n_head=4, n_embd=32, block_size=128, vocab=tuple("abcdefgh"), n_inner=128,
                   dtype="float32", layout="in_out", tied=True, gelu="tanh", name="gpt2-like")
GPT2_MODEL = dfgpt.Model(GPT2_LIKE, random_params(GPT2_LIKE, seed=6))


@contextlib.contextmanager
def large():
    """Sheets made inside count as large: they drop every transient tensor."""
    old = transient.TRANSIENT_BYTES
    transient.TRANSIENT_BYTES = -1
    try:
        yield
    finally:
        transient.TRANSIENT_BYTES = old


def sheets(model, text, exact=None):
    """(a transient sheet, a resident sheet) of the same input."""
    kw = {} if exact is None else {"exact": exact}
    with large():
        a = model.sheet(text, **kw)
    b = model.sheet(text, **kw)
    assert a.engine.transient and not b.engine.transient
    return a, b


def held(eng):
    return {n for n in eng.graph.computed if dict.__contains__(eng.values, n)}


def test_small_sheets_keep_every_tensor_resident():
    assert not SORT.sheet("CABACA").engine.transient
    assert not WIDE_MODEL.sheet("ab" * 32).engine.transient  # 0.6 MiB of activations


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("which", ["sort", "tiny", "wide", "gpt2"])
def test_a_forced_transient_sheet_reads_every_cell_bit_for_bit_equal_to_a_resident_one(which, exact):
    model, text = {"sort": (SORT, "CABACABBCA"), "tiny": (TINY, "abcab"), "wide": (WIDE_MODEL, "abcdefgh" * 12),
                   "gpt2": (GPT2_MODEL, "hgfedcba" * 15)}[which]
    a, b = sheets(model, text, exact)
    assert a.values("logit").tobytes() == b.values("logit").tobytes()
    dropped = set(a.engine.dropped)
    assert "h[0].attn.att" in dropped and "h[0].attn.k" not in dropped
    for name in reversed(a.graph.computed):  # the last first: each restore walks back through dropped inputs
        got = a.engine.values[name] if name in dropped else a.values(name)  # a dropped tensor looked up directly
        want = b.engine.values[name] if name in dropped else b.values(name)
        assert got.tobytes() == want.tobytes(), name


def test_rows_read_in_pieces_on_a_transient_sheet_equal_a_resident_sheets():
    """Partial reads drop tensors that later reads write more rows of: the old rows come back first."""
    for exact in (True, False):
        a, b = sheets(WIDE_MODEL, "hgfedcba" * 12, exact)
        for t in (3, 40, 41, 95):
            assert a.values(f"logit[{t}]").tobytes() == b.values(f"logit[{t}]").tobytes()
        assert "h[1].attn.score" in a.engine.dropped
        for name in ("h[1].attn.score", "h[1].attn.att", "h[0].mlp.gelu", "h[1].attn.q"):
            assert a.values(name).tobytes() == b.values(name).tobytes(), name


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), which=st.sampled_from(sorted(MODELS)), n=st.integers(1, 12))
def test_any_edit_sequence_on_a_transient_sheet_equals_from_scratch(data, which, n):
    model = MODELS[which]
    with large():
        sheet = model.sheet(START[which])
    sheet.values("logit")  # drops every intermediate: the edits below must bring them back as they were
    _, fresh = edit_and_redo(data, model, sheet, n)
    names = sheet.tensors("*") if which == "tiny" else ["logit", "prob", *SOME]
    for tensor in names:
        if sheet.graph.specs[tensor].kind == "computed":
            a, b = sheet.values(tensor), fresh.values(tensor)
            assert a.tobytes() == b.tobytes(), tensor


EDITS = ["h[1].attn.c_attn.w[3][40]", "tokens[2]", "h[0].attn.q[1][3][2]", "h[2].mlp.gelu[4][7]",
         "temperature", "h[0].ln_1.out[1][0]"]


@pytest.mark.parametrize("cell", EDITS)
def test_an_edit_on_a_sheet_with_dropped_tensors_gives_the_same_receipt_as_on_a_resident_sheet(cell):
    a, b = sheets(SORT, "CABACABB")
    a.values("logit"), b.values("logit")
    assert "h[2].mlp.gelu" in a.engine.dropped
    value = 2 if cell.startswith("tokens") else 0.5
    ra, rb = a.set(cell, value), b.set(cell, value)
    for r in (ra, rb):
        r.settle()
    assert str(ra) == str(rb)
    assert ra.recomputed_by_tensor == rb.recomputed_by_tensor and ra.cutoff_by_tensor == rb.cutoff_by_tensor
    assert ra.stale_by_tensor == rb.stale_by_tensor and ra.max_change == rb.max_change
    for name in ("logit", "prob", "h[2].attn.att", "h[1].mlp.fc"):
        assert a.values(name).tobytes() == b.values(name).tobytes(), name
    ua, ub = a.undo(), b.undo()
    ua.settle(), ub.settle()
    assert str(ua) == str(ub)
    assert a.values("logit").tobytes() == b.values("logit").tobytes()


@pytest.mark.parametrize("by", ["grad*value", "grad", "ablation"])
def test_grad_and_influence_on_a_transient_sheet_equal_a_resident_sheets(by):
    a, b = sheets(SORT, "CABACA")
    a.values("logit"), b.values("logit")
    ga, gb = a.grad("logit[5][A]"), b.grad("logit[5][A]")
    assert ga.value == gb.value
    assert ga.arrays.keys() == gb.arrays.keys()
    for name in ga.arrays:
        assert ga.arrays[name].tobytes() == gb.arrays[name].tobytes(), name
    ia, ib = a.influence("logit[5][A]", top=10, by=by), b.influence("logit[5][A]", top=10, by=by)
    assert ia.table() == ib.table()


def test_patching_a_transient_sheet_equals_patching_a_resident_one():
    a, b = sheets(SORT, "CABACA")
    src = SORT.sheet("CBBACA")
    ra, rb = a.patch(src, "h[1].out[5]"), b.patch(src, "h[1].out[5]")
    assert a.values("logit").tobytes() == b.values("logit").tobytes()
    assert str(ra.settle()) == str(rb.settle())


@pytest.mark.parametrize("exact", [True, False])
def test_appending_to_a_transient_sheet_equals_a_resident_one(exact):
    """Generation's road; a capacity change brings every dropped tensor back first."""
    a, b = sheets(WIDE_MODEL, "abcdefgh" * 2, exact)
    for _ in range(20):
        assert a.values(f"logit[{a.T - 1}]").tobytes() == b.values(f"logit[{b.T - 1}]").tobytes()
        tok = int(a.values(f"logit[{a.T - 1}]").argmax())
        a.engine.append(tok)
        b.engine.append(tok)
    for name in a.graph.computed:
        assert a.values(name).tobytes() == b.values(name).tobytes(), name


def test_no_head_by_key_tensor_stays_resident_after_a_large_forward():
    """What stays held: the residual stream, the keys and values, the per-row statistics and
    what was read; every [heads, T, T] score and softmax is gone."""
    old = transient.TRANSIENT_BYTES
    transient.TRANSIENT_BYTES = 2**20  # the wide model at T = 128 holds 1.6 MiB of activations
    try:
        sheet = WIDE_MODEL.sheet("abcdefgh" * 16, exact=False)
    finally:
        transient.TRANSIENT_BYTES = old
    eng = sheet.engine
    assert eng.transient  # chosen by size, not forced
    logits = sheet.values("logit")
    keep = held(eng)
    specs = sheet.graph.specs
    assert not [n for n in keep if "key" in specs[n].axes]
    kinds = {sheet.graph.ops[n].kind for n in keep}
    assert kinds <= {"add", "embed", "ln_mean", "ln_var", "softmax_max", "softmax_sum", "linear"}
    assert {n for n in keep if sheet.graph.ops[n].kind == "linear"} == {
        "logit", *(f"h[{i}].attn.{p}" for i in range(2) for p in "kv")}
    nbytes = sum(eng.values[n].nbytes for n in keep)
    everything = transient.activation_bytes(sheet.graph, eng.cap, eng.dtype)
    assert nbytes < everything / 4, (nbytes, everything)
    resident = WIDE_MODEL.sheet("abcdefgh" * 16, exact=False)
    assert logits.tobytes() == resident.values("logit").tobytes()


def test_a_dropped_tensor_restored_through_a_copy_of_the_values_dict():
    """Code that copies an engine's values into a plain dict (influence's scratch engines) still
    gets dropped tensors back through the engine: view and the reads restore them explicitly."""
    with large():
        e = Engine(SORT.graph, SORT.params, np.array(SORT.encode("CABACA")))
    e.ensure({"logit": np.ones(6, bool)})
    e.values = dict(e.values)  # a plain dict, as analysis.influence's _scratch makes
    r = Engine(SORT.graph, SORT.params, np.array(SORT.encode("CABACA")))
    r.ensure({"logit": np.ones(6, bool)})
    assert e.view("h[1].attn.att").tobytes() == r.view("h[1].attn.att").tobytes()
    e.pin("h[0].attn.y", (2, 3), 1.0)
    r.pin("h[0].attn.y", (2, 3), 1.0)
    e.ensure({"logit": np.ones(6, bool)})
    r.ensure({"logit": np.ones(6, bool)})
    assert e.view("logit").tobytes() == r.view("logit").tobytes()
