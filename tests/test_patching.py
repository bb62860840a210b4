"""Interventions across runs: patches, path patches, ablations, sweeps, attribution and the lens.

The oracle is `patched_forward`, the independent numpy forward of tests/reference.py with
hooks that replace activations; dfgpt's patched sheets must agree with it to float64
rounding, and equal a from-scratch dfgpt forward with the same cells pinned bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference
from conftest import TINY, random_model, ref_cfg
from hypothesis import given, settings
from hypothesis import strategies as st

import dfgpt
from dfgpt.cli import main
from dfgpt.interventions import replay
from dfgpt.interventions.metrics import parse_metric
from dfgpt.interventions.patching import scratch
from dfgpt.interventions.replay import GROUP
from dfgpt.interventions.sites import FAMILIES, sites
from dfgpt.interventions.sweep import SiteRunner, order
from dfgpt.views.sweep_map import lens_map, sweep_map

MODEL, STATE = random_model(TINY, seed=1)
CFG = ref_cfg(TINY)
CLEAN, CORRUPTED = "abcab", "abbac"


def ids(text):
    return MODEL.encode(text)


def patched_forward(tokens, hooks=None):
    """reference.forward with hooks: hooks[(family, layer)](value) -> value for
    resid_pre, attn_in (the attention branch's copy of resid_pre), skip (the residual's copy),
    q, k, v ([H, T, hs]), pattern ([H, T, T]), z ([T, C] before c_proj), attn_out, resid_mid,
    mlp_out, resid_post ([T, C])."""
    hooks = hooks or {}
    state, cfg = STATE, CFG
    C, H = cfg["n_embd"], cfg["n_head"]
    hs = C // H

    def hook(name, layer, x):
        f = hooks.get((name, layer))
        return x if f is None else f(x.copy())

    def linear(x, prefix):
        return x @ state[prefix + ".weight"].T + state[prefix + ".bias"]

    def ln(x, prefix):
        return reference.layer_norm(x, state[prefix + ".weight"], state[prefix + ".bias"], cfg["ln_eps"])

    tokens = np.asarray(tokens)
    T = len(tokens)
    x = state["transformer.wte.weight"][tokens] + state["transformer.wpe.weight"][:T]
    causal = np.tril(np.ones((T, T), bool))
    for l in range(cfg["n_layer"]):
        h = f"transformer.h.{l}"
        x = hook("resid_pre", l, x)
        qkv = linear(ln(hook("attn_in", l, x), h + ".ln_1"), h + ".attn.c_attn")
        q, k, v = (a.reshape(T, H, hs).transpose(1, 0, 2) for a in np.split(qkv, 3, axis=-1))
        q, k, v = hook("q", l, q), hook("k", l, k), hook("v", l, v)
        att = reference.softmax(np.where(causal, q @ k.transpose(0, 2, 1) / math.sqrt(hs), -np.inf))
        att = hook("pattern", l, att)
        z = hook("z", l, (att @ v).transpose(1, 0, 2).reshape(T, C))
        x = hook("resid_mid", l, hook("skip", l, x) + hook("attn_out", l, linear(z, h + ".attn.c_proj")))
        m = linear(reference.gelu(linear(ln(x, h + ".ln_2"), h + ".mlp.c_fc"), cfg["gelu"]), h + ".mlp.c_proj")
        x = hook("resid_post", l, x + hook("mlp_out", l, m))
    return ln(x, "transformer.ln_f") @ state["transformer.wte.weight"].T if cfg["tied"] else (
        ln(x, "transformer.ln_f") @ state["lm_head.weight"].T)


def record(tokens):
    """Every hooked activation of a run: {(family, layer): value}."""
    seen = {}

    def keep(key):
        def f(x):
            seen[key] = x.copy()
            return x
        return f

    fams = ["resid_pre", "q", "k", "v", "pattern", "z", "attn_out", "resid_mid", "mlp_out", "resid_post"]
    patched_forward(tokens, {(f, l): keep((f, l)) for f in fams for l in range(TINY.n_layer)})
    return seen


def logit_diff(logits, a=0, b=2, t=-1):
    return float(logits[t, a] - logits[t, b])


HEADS_AXIS = {"q": 0, "k": 0, "v": 0, "pattern": 0}


def reference_site(family, key, positions="each"):
    """The metric of the reference forward of CORRUPTED with one site taken from CLEAN."""
    src = record(ids(CLEAN))
    fam = "z" if family == "head_out" else family
    layer = key[0]
    hs = TINY.head_size

    def put(x):
        s = src[(fam, layer)]
        if family in ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"):
            sel = slice(None) if positions == "all" else key[1]
            x[sel] = s[sel]
        elif family in ("head_out", "z"):
            h = key[1]
            sel = slice(None) if positions == "all" else key[2]
            x[sel, h * hs:(h + 1) * hs] = s[sel, h * hs:(h + 1) * hs]
        else:
            h = key[1]
            sel = slice(None) if positions == "all" else key[2]
            x[h, sel] = s[h, sel]
        return x

    return logit_diff(patched_forward(ids(CORRUPTED), {(fam, layer): put}))


def test_patched_forward_without_hooks_is_the_reference():
    np.testing.assert_array_equal(patched_forward(ids(CLEAN)), reference.forward(STATE, CFG, ids(CLEAN))["logits"])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("positions", ["each", "all"])
def test_a_sweep_equals_one_reference_forward_per_site(family, positions):
    clean, bad = MODEL.sheet(CLEAN), MODEL.sheet(CORRUPTED)
    r = dfgpt.sweep(clean, bad, "logit_diff:a,c", over=family, positions=positions)
    assert r.values.shape == tuple(len(c) for c in r.coords) and np.isfinite(r.values).all()
    for key in r.cells:
        np.testing.assert_allclose(r.values[key], reference_site(family, key, positions), rtol=0, atol=1e-12)
    assert r.corrupted == pytest.approx(logit_diff(patched_forward(ids(CORRUPTED))), abs=1e-12)


def fresh_patched(cells_from_clean):
    """A from-scratch dfgpt sheet of CORRUPTED with cells pinned to CLEAN's values before any read."""
    clean = MODEL.sheet(CLEAN)
    s = MODEL.sheet(CORRUPTED)
    for tensor, mask in cells_from_clean.items():
        vals = clean.values(tensor)
        for idx in np.argwhere(mask):
            s.engine.pin(tensor, tuple(int(i) for i in idx), float(vals[tuple(idx)]))
    return s


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(FAMILIES), st.data())
def test_a_sweep_value_equals_a_from_scratch_patched_forward_bit_for_bit(family, data):
    clean, bad = MODEL.sheet(CLEAN), MODEL.sheet(CORRUPTED)
    r = dfgpt.sweep(clean, bad, "logit_diff:a,c", over=family)
    key = data.draw(st.sampled_from(sorted(r.cells)))
    site = sites(bad, family).sites[key]
    fresh = fresh_patched(site.masks)
    assert r.values[key] == fresh.value("logit[4][a]") - fresh.value("logit[4][c]")
    # and a patch of the same cells, read after everything was computed, too
    s = MODEL.sheet(CORRUPTED)
    s.values("logit")
    s.patch(clean, site.cells)
    np.testing.assert_array_equal(s.values("logit"), fresh.values("logit"))


def snapshot(s):
    log = s.__dict__.get("_edit_log")
    vals = {n: np.array(s.engine.view(n)) for n in s.graph.computed if s.engine.rows_computed(n) == s.T}
    return vals, {k: dict(v) for k, v in s.engine.pins.items()}, (len(log.undo), len(log.redo)) if log else None


def test_after_a_sweep_the_sheets_are_exactly_as_before():
    clean, bad = MODEL.sheet(CLEAN), MODEL.sheet(CORRUPTED)
    bad.set("h[0].mlp.out[1][3]", 0.5)
    bad.set("h[1].attn.att[0][3][1]", 0.25)
    bad.undo()
    for sheet in (clean, bad):
        for tensor in sheet.graph.computed:
            sheet.values(tensor)
    before = snapshot(clean), snapshot(bad)
    for family in ("resid_pre", "pattern", "head_out"):
        dfgpt.sweep(clean, bad, "kl", over=family)
        dfgpt.attribution_patch(clean, bad, "kl", over=family)
    after = snapshot(clean), snapshot(bad)
    for (v0, p0, l0), (v1, p1, l1) in zip(before, after):
        assert v0.keys() == v1.keys() and p0 == p1 and l0 == l1
        for n in v0:
            np.testing.assert_array_equal(v0[n], v1[n])
    assert bad.redo().action == "redo set"  # the redo history survived the sweep


def test_spec_and_callable_metrics_agree_on_a_pinned_sheet():
    """A spec metric replays each site's cone; a callable reads a pinned private sheet: the same numbers."""
    clean, bad = MODEL.sheet(CLEAN), MODEL.sheet(CORRUPTED)
    bad.set("h[0].attn.att[1][3][0]", 0.75)
    bad.set("h[1].mlp.gelu[4][2]", -0.5)
    for family in ("resid_pre", "k", "pattern", "mlp_out"):
        spec = dfgpt.sweep(clean, bad, "logit_diff:a,c", over=family)
        call = dfgpt.sweep(clean, bad, lambda s: s.value("logit[4][a]") - s.value("logit[4][c]"), over=family)
        np.testing.assert_array_equal(spec.values, call.values)


def test_fast_mode_sweeps_agree_with_pinned_sheets_to_rounding():
    """float32 (fast mode): a logit difference replays only its two logit columns; same numbers to rounding."""
    cfg = dfgpt.Config(n_layer=2, n_head=2, n_embd=8, block_size=6, vocab_size=40, n_inner=12, dtype="float32")
    model, _ = random_model(cfg, seed=2)
    clean, bad = model.sheet([1, 2, 3, 4, 5]), model.sheet([1, 7, 3, 9, 5])
    assert not bad.engine.exact
    for family in ("resid_pre", "pattern", "head_out", "v"):
        spec = dfgpt.sweep(clean, bad, "logit_diff:#3,#4", over=family)
        call = dfgpt.sweep(clean, bad, lambda s: s.value("logit[4][3]") - s.value("logit[4][4]"), over=family)
        assert np.ptp(spec.values) > 0.05
        np.testing.assert_allclose(spec.values, call.values, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float64", "float32"])  # exact mode, fast mode
@pytest.mark.parametrize("family", ["head_out", "resid_pre"])
def test_sites_replayed_in_lockstep_equal_sites_replayed_one_by_one(dtype, family, monkeypatch):
    """`run_together` interleaves many sites' cones to read each weight once per group: in exact mode the
    same bits; in fast mode (one product per linear layer for the group) the same numbers to float32
    rounding, and the same bits for the same blocks however a sweep is cut between them."""
    cfg = dfgpt.Config(n_layer=3, n_head=2, n_embd=8, block_size=6, vocab_size=40, n_inner=12, dtype=dtype)
    model, _ = random_model(cfg, seed=3)
    clean, bad = model.sheet([1, 2, 3, 4, 5, 6]), model.sheet([1, 7, 3, 9, 5, 6])
    m = parse_metric("logit_diff:#3,#4", clean)
    g = sites(bad, family)
    keys = order(list(g.sites))
    runner = SiteRunner(clean, bad, m, g, m(bad))
    assert runner.lockstep is not None and runner.lockstep.group == GROUP
    one = [runner(k) for k in keys]
    products: list[int] = []  # rows of each product one linear layer ran for a whole group
    together_ = replay._linear_together
    monkeypatch.setattr(replay, "_linear_together", lambda op, due: (products.append(len(due)), together_(op, due)))
    together = runner.many(keys)
    assert len(keys) > GROUP and np.ptp(one) > 0.05
    by_block = [v for b in range(0, len(keys), GROUP) for v in runner.many(keys[b:b + GROUP])]
    assert by_block == together
    if dtype == "float64":
        assert np.array_equal(one, together) and runner.many(keys[::-1]) == together[::-1]
    else:
        np.testing.assert_allclose(together, one, rtol=0, atol=1e-5)
    assert (max(products, default=0) > 1) == (dtype == "float32")  # fast mode: one product for a group


def test_patch_is_one_edit_with_undo_and_redo():
    clean, bad = MODEL.sheet(CLEAN), MODEL.sheet(CORRUPTED)
    before = bad.values("logit").copy()
    r = bad.patch(clean, ["h[0].out[2]", "h[1].attn.q[1][3]"])
    assert r.action == "patch" and len(r.cells) == TINY.n_embd + TINY.head_size
    np.testing.assert_array_equal(bad.values("h[0].out")[2], clean.values("h[0].out")[2])
    patched = bad.values("logit").copy()
    assert not np.array_equal(patched, before)
    bad.undo()
    np.testing.assert_array_equal(bad.values("logit"), before)
    bad.redo()
    np.testing.assert_array_equal(bad.values("logit"), patched)


def test_path_patching_equals_a_forward_where_only_the_receivers_read_the_patch():
    src = record(ids(CLEAN))
    p = 3

    def from_clean(x):
        x[p] = src[("resid_pre", 1)][p]
        return x

    clean = MODEL.sheet(CLEAN)
    # 1. only layer 1's attention branch (its LayerNorm at row p) reads the patched resid_pre
    s = MODEL.sheet(CORRUPTED)
    s.patch(clean, "h[0].out[3]", receivers=["h[1].ln_1.mean[3]", "h[1].ln_1.var[3]", "h[1].ln_1.out[3]"])
    want = patched_forward(ids(CORRUPTED), {("attn_in", 1): from_clean})
    np.testing.assert_allclose(s.values("logit"), want, rtol=0, atol=1e-12)
    assert s.state("h[0].out[3][0]") == "fresh"
    # 2. only the skip connection reads it
    s = MODEL.sheet(CORRUPTED)
    s.patch(clean, "h[0].out[3]", receivers="h[1].mid[3]")
    want = patched_forward(ids(CORRUPTED), {("skip", 1): from_clean})
    np.testing.assert_allclose(s.values("logit"), want, rtol=0, atol=1e-12)
    # 3. both paths: the full patch
    s = MODEL.sheet(CORRUPTED)
    s.patch(clean, "h[0].out[3]", receivers=["h[1].ln_1.mean[3]", "h[1].ln_1.var[3]", "h[1].ln_1.out[3]",
                                              "h[1].mid[3]"])
    full = MODEL.sheet(CORRUPTED)
    full.patch(clean, "h[0].out[3]")
    np.testing.assert_array_equal(s.values("logit"), full.values("logit"))
    s.undo()
    np.testing.assert_array_equal(s.values("logit"), MODEL.sheet(CORRUPTED).values("logit"))


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_path_patching_into_every_direct_reader_is_the_full_patch(data):
    """Whatever cells are patched: when every cell that reads them directly is a receiver, path
    patching is the plain patch, bit for bit."""
    clean = MODEL.sheet(CLEAN)
    s = MODEL.sheet(CORRUPTED)
    tensor = data.draw(st.sampled_from([n for n in s.graph.computed if n not in ("logit", "prob", "exp_sum",
                                                                                 "logit_max")]))
    spec = s.graph.specs[tensor]
    pos = data.draw(st.integers(0, s.T - 1))
    cells = tensor + "".join(f"[{pos}]" if a == "pos" else "[:]" for a in spec.axes)
    readers = s.dependents(cells)
    if not readers:
        return
    s.patch(clean, cells, receivers=readers)
    full = MODEL.sheet(CORRUPTED)
    full.patch(clean, cells)
    np.testing.assert_array_equal(s.values("logit"), full.values("logit"))


def test_ablations():
    s = MODEL.sheet(CORRUPTED)
    s.ablate("h[1].attn.out[4]")
    assert (s.values("h[1].attn.out")[4] == 0).all()
    refs = [MODEL.sheet("aaaaa"), MODEL.sheet("ccccc"), MODEL.sheet("abcab")]
    s.ablate("h[0].mlp.out[2]", how="mean", reference=refs)
    want = np.mean([r.values("h[0].mlp.out")[2] for r in refs], axis=0)
    np.testing.assert_allclose(s.values("h[0].mlp.out")[2], want, rtol=0, atol=1e-15)
    s.ablate("h[0].mlp.out[3]", how="resample", reference=refs, seed=7)
    row = s.values("h[0].mlp.out")[3]
    assert sum(np.array_equal(row, r.values("h[0].mlp.out")[3]) for r in refs) >= 1
    s2 = MODEL.sheet(CORRUPTED)
    s2.ablate("h[0].mlp.out[3]", how="resample", reference=refs, seed=7)
    np.testing.assert_array_equal(s2.values("h[0].mlp.out")[3], row)  # seeded


def test_attribution_equals_the_first_order_term_by_finite_differences():
    clean, bad = MODEL.sheet(CLEAN), MODEL.sheet(CORRUPTED)
    for metric in ("logit_diff:a,c", "prob:b", "logprob:a", "kl"):
        approx = dfgpt.attribution_patch(clean, bad, metric, over="resid_pre")
        m = parse_metric(metric, clean)
        for key in [(0, 2), (1, 3), (1, 4)]:
            site = sites(bad, "resid_pre").sites[key]
            (tensor, mask), = site.masks.items()
            c, k = clean.values(tensor)[mask], bad.values(tensor)[mask]
            eps = 1e-6

            def at(e, tensor=tensor, mask=mask, c=c, k=k, m=m):
                w = scratch(bad)
                for idx, a, b in zip(np.argwhere(mask), c, k):
                    w.engine.pin(tensor, tuple(int(i) for i in idx), float(b + e * (a - b)))
                return m(w)

            fd = (at(eps) - at(-eps)) / (2 * eps)
            assert approx.values[key] - approx.corrupted == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_attribution_compares_with_the_exact_sweep():
    clean, bad = MODEL.sheet(CLEAN), MODEL.sheet(CORRUPTED)
    exact = dfgpt.sweep(clean, bad, "logit_diff:a,c", over="head_out")
    approx = dfgpt.attribution_patch(clean, bad, "logit_diff:a,c", over="head_out")
    cmp = exact.compare(approx)
    assert -1 <= cmp.correlation <= 1 and len(cmp.worst) == 5 and "correlation" in str(cmp)
    assert repr(approx) == "Sweep(head_out, logit_diff:a,c@4, layer 2 × head 2 × position 5, attribution)"


def test_result_type_prints_and_draws(tmp_path):
    m = dfgpt.load("sort")
    r = dfgpt.sweep(m.sheet("CABACAAAA"), m.sheet("CACACAAAA"), "logit_diff:B,C", over="head_out")
    assert repr(r) == "Sweep(head_out, logit_diff:B,C@8, layer 3 × head 3 × position 9, exact)"
    assert r.top(1)[0][0] == "h[0].attn.y[8][16:32]"
    table = r.table(width=None)  # one panel (the default wraps at 80 columns)
    assert "L0 H1" in table and "2:B/C" in table and len(table.splitlines()) == 2 + 9
    assert "<table" in r._repr_html_()
    assert sweep_map(r, tmp_path / "s.svg").source.count("<TR>") == 11
    lens = dfgpt.logit_lens(m.sheet("CABACAAAA"))
    np.testing.assert_allclose(lens.logits[-1], m.sheet("CABACAAAA").values("logit"), rtol=0, atol=1e-12)
    assert (lens.rank[-1] == 0).all() and "h[2]" in lens.table()
    lens_map(lens, tmp_path / "l.dot")
    assert (tmp_path / "l.dot").read_text().startswith("digraph")
    custom = dfgpt.sweep(m.sheet("CABACAAAA"), m.sheet("CACACAAAA"), "kl", over="h[*].attn.att[*][8]")
    assert custom.axes == ("tensor", "head") and custom.values.shape == (3, 3)


def untouched(*sheets):
    return [(s.__dict__.get("_edit_log") is None or not s.__dict__["_edit_log"].undo) and not s.engine.pins
            for s in sheets]


@pytest.mark.parametrize("call, message", [
    (lambda c, b: b.patch(dfgpt.load("sort-random").sheet("CABAC"), "emb[0]"), "another model"),
    (lambda c, b: b.patch(MODEL.sheet("abca"), "emb[0]"), "positions"),
    (lambda c, b: b.patch(c, "wte[a]"), "parameter"),
    (lambda c, b: b.patch(c, "h[0].out[3]", receivers="h[1].mid[2]"), "does not read"),
    (lambda c, b: b.patch(c, "h[0].out[3]", receivers="h[1].attn.out[3]"), "does not read"),
    (lambda c, b: dfgpt.sweep(c, b, "kl", over="resid_pr"), "resid_pre"),
    (lambda c, b: dfgpt.sweep(c, b, "logit_dif:a,c"), "unknown metric"),
    (lambda c, b: dfgpt.sweep(c, b, "logit_diff:a,z"), "not a token"),
    (lambda c, b: dfgpt.sweep(c, b, "prob:a@9"), "out of range"),
    (lambda c, b: dfgpt.sweep(c, b, lambda s: 0.0, over="q").compare(
        dfgpt.attribution_patch(c, b, lambda s: 0.0)), "callable"),
    (lambda c, b: b.ablate("emb[0]", how="mean"), "reference"),
    (lambda c, b: b.ablate("emb[0]", how="noise"), "zero"),
])
def test_bad_input_is_a_clear_error_and_changes_nothing(call, message):
    clean, bad = MODEL.sheet(CLEAN), MODEL.sheet(CORRUPTED)
    before = bad.values("logit").copy()
    with pytest.raises(dfgpt.DfgptError, match=message):
        call(clean, bad)
    assert untouched(clean, bad) == [True, True]
    np.testing.assert_array_equal(bad.values("logit"), before)


def test_cli_patch_and_lens(capsys, tmp_path):
    out = tmp_path / "map.svg"
    assert main(["patch", "--clean", "CABACAAAA", "--corrupted", "CACACAAAA", "--metric", "logit_diff:B,C",
                 "--over", "resid_pre", "--compare", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "exact sweep of logit_diff:B,C@8 over resid_pre" in text and "correlation" in text and out.exists()
    assert main(["lens", "CABACAAAA", "--target", "B"]) == 0
    assert "logit lens of 'CABACAAAA'" in capsys.readouterr().out
    assert main(["patch", "--clean", "CABACA", "--corrupted", "CABAC", "--over", "resid_pre"]) == 2
    assert "positions" in capsys.readouterr().err
