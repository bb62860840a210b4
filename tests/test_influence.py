"""Ranked influence against finite differences and from-scratch ablation; direct logit attribution."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

import dfgpt
from dfgpt import Config, Model
from dfgpt.analysis.attribution import direct_attribution
from dfgpt.analysis.influence import influence
from dfgpt.errors import QueryError, UnknownNameError
from dfgpt.models.catalog import random_params
from tests.reference import forward

TEXT = "CABACA"
TARGET = "logit[5][A]"
MODEL = dfgpt.load("sort-random")


def _target_with(tensor: str, idx: tuple[int, ...], value: float, model: Model = MODEL) -> float:
    """From scratch: a fresh sheet (fresh model for a parameter) with one cell set to a value."""
    if model.graph.specs[tensor].kind == "parameter":
        params = {k: v.copy() for k, v in model.params.items()}
        params[tensor][idx] = value
        return Model(model.config, params).sheet(TEXT).value(TARGET)
    s = model.sheet(TEXT)
    s.engine.pin(tensor, idx, value)
    return s.value(TARGET)


def test_ranking_is_best_first_and_scores_are_grad_times_value() -> None:
    s = MODEL.sheet(TEXT)
    res = s.influence(TARGET, top=25)
    assert len(res) == 25 and res.by == "grad*value"
    mags = [abs(it.score) for it in res]
    assert mags == sorted(mags, reverse=True)
    for it in res:
        assert it.cell != TARGET
        assert it.value == s.value(it.cell)
        assert it.score == pytest.approx(it.grad * it.value, rel=1e-15, abs=0)
    # nothing outside the top 25 scores more than the last item
    all_scores = np.concatenate([a.ravel() for a in res.scores.values()])
    assert np.sort(np.abs(all_scores))[-25] == pytest.approx(mags[-1])
    g = s.influence(TARGET, top=5, by="grad")
    assert all(it.score == it.grad for it in g)


def test_gradients_agree_with_finite_differences() -> None:
    s = MODEL.sheet(TEXT)
    items = list(s.influence(TARGET, top=8)) + list(s.influence(TARGET, top=4, by="grad"))
    eps = 1e-6
    for it in items:
        up = _target_with(it.tensor, it.index, it.value + eps)
        down = _target_with(it.tensor, it.index, it.value - eps)
        fd = (up - down) / (2 * eps)
        assert it.grad == pytest.approx(fd, rel=1e-5, abs=1e-7), it.cell


def test_ablation_agrees_with_recomputing_from_scratch() -> None:
    s = MODEL.sheet(TEXT)
    base = s.value(TARGET)
    res = s.influence(TARGET, top=6, by="ablation", candidates=10)
    assert len(res) == 6 and res.by == "ablation"
    kinds = set()
    for it in res:
        kinds.add(s.graph.specs[it.tensor].kind)
        assert it.score == pytest.approx(base - _target_with(it.tensor, it.index, 0.0), rel=1e-12, abs=1e-12)
    assert kinds == {"parameter", "computed"}
    mags = [abs(it.score) for it in res]
    assert mags == sorted(mags, reverse=True)


def _engine_state(s: dfgpt.Sheet) -> dict[str, object]:
    """Every attribute of the engine, arrays copied, parameter arrays also by identity."""
    e = s.engine
    out: dict[str, object] = {"param ids": {n: id(e.values[n]) for n in s.graph.parameters}}
    for k, v in vars(e).items():
        if k in ("graph", "specs"):
            continue
        if isinstance(v, dict):
            out[k] = {n: (np.array(x) if isinstance(x, np.ndarray) else
                          dict(x) if isinstance(x, dict) else x) for n, x in v.items()}
        elif isinstance(v, (set, Counter)):
            out[k] = type(v)(v)
        else:
            out[k] = v
    return out


def _same(a: dict[str, object], b: dict[str, object]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, dict):
            assert isinstance(y, dict) and x.keys() == y.keys(), key
            for n in x:
                if isinstance(x[n], np.ndarray):
                    np.testing.assert_array_equal(x[n], y[n], err_msg=f"{key} {n}")
                    assert np.array_equal(np.signbit(x[n]), np.signbit(y[n])) if x[n].dtype.kind == "f" else True
                else:
                    assert x[n] == y[n], (key, n)
        elif isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
        else:
            assert x == y, key


def test_ablation_leaves_the_sheet_exactly_as_it_was() -> None:
    s = MODEL.sheet(TEXT)
    s.engine.write("h[1].attn.c_attn.w", (2, 3), 0.25)  # an edited (owned) parameter
    s.engine.pin("h[0].mlp.gelu", (4, 7), 0.5)  # a user pin
    _ = s.value("logit[3][B]")
    _ = s.influence(TARGET)  # computing the target's cone is the only lasting effect
    before = _engine_state(s)
    states = {c: s.state(c) for c in ("h[0].mlp.gelu[4][7]", "h[1].attn.c_attn.w[2][3]", "wpe[0][0]")}
    res = s.influence(TARGET, top=10, by="ablation", candidates=30)
    assert any(s.graph.specs[it.tensor].kind == "parameter" for it in res)
    _same(before, _engine_state(s))
    assert states == {c: s.state(c) for c in states}
    assert MODEL.params["wpe"] is s.engine.values["wpe"]


def test_aggregates_partition_the_scores() -> None:
    s = MODEL.sheet(TEXT)
    res = s.influence(TARGET)
    g = s.grad(TARGET)
    prov = s.provenance(TARGET)
    total = 0.0
    for t, m in prov.masks.items():
        if s.graph.specs[t].kind == "input":
            continue
        keep = m.copy()
        if t == "logit":
            keep[5, 0] = False
        total += float((g.arrays[t][keep] * s.engine.view(t)[keep]).sum())
    for groups in (res.by_tensor(), res.by_block(), res.by_position()):
        assert sum(r.score for r in groups) == pytest.approx(total, rel=1e-9)
        assert sum(r.cells for r in groups) == len(prov) - 6 - 1  # no tokens, no target
    wpe = {r.key: r for r in res.by_tensor()}["wpe"]
    assert wpe.cells == 6 * 48
    assert wpe.score == pytest.approx(float((g.arrays["wpe"] * MODEL.params["wpe"]).sum()))
    heads = {r.key: r.score for r in res.by_head()}
    assert set(heads) == {f"h[{l}].head[{h}]" for l in range(3) for h in range(3)}
    hs = 16
    y = s.engine.view("h[2].attn.y")[:, hs : 2 * hs]
    want = float((g.arrays["h[2].attn.y"][:, hs : 2 * hs] * y).sum())
    for t in ("q", "k", "v", "score", "att", "score_max", "exp_sum"):
        a, v = g.arrays[f"h[2].attn.{t}"][1], s.engine.view(f"h[2].attn.{t}")[1]
        want += float(np.where(a != 0, a * np.where(np.isfinite(v), v, 0), 0).sum())
    assert heads["h[2].head[1]"] == pytest.approx(want, rel=1e-9)


def _reference_dla(model: Model, text: str, t: int, v: int) -> dict[str, float]:
    """Per-head direct contributions from the independent numpy forward."""
    cfg = model.config
    state = {k: np.asarray(a) for k, a in model.state_dict().items()}
    d = cfg.to_dict()
    out = forward(state, d, model.encode(text))
    x = out["hidden"][-1][t]
    scale = 1.0 / math.sqrt(float(((x - x.mean()) ** 2).mean()) + cfg.ln_eps)
    head = state["transformer.wte.weight"] if cfg.tied else state["lm_head.weight"]
    u = state["transformer.ln_f.weight"] * head[v] * scale
    hs = cfg.n_embd // cfg.n_head
    got = {}
    for layer in range(cfg.n_layer):
        W = state[f"transformer.h.{layer}.attn.c_proj.weight"]
        Wt = W.T if cfg.layout == "out_in" else W  # [in, out]
        for h in range(cfg.n_head):
            yh = out["att"][layer][h][t] @ out["v"][layer][h]  # [T] @ [T, hs] -> [hs]
            r = yh @ Wt[h * hs : (h + 1) * hs]
            got[f"h[{layer}].attn head {h}"] = float((r - r.mean()) @ u)
    return got


@pytest.mark.parametrize("tied", [False, True])
def test_direct_attribution_sums_to_the_logit_and_matches_the_reference(tied: bool) -> None:
    if tied:
        cfg = Config(n_layer=2, n_head=2, n_embd=8, block_size=8, vocab=("A", "B", "C"), tied=True,
                     layout="in_out")
        model = Model(cfg, random_params(cfg, seed=5))
    else:
        model = MODEL
    s = model.sheet(TEXT)
    parts = direct_attribution(s, "logit[5][B]")
    logit = s.value("logit[5][B]")
    assert parts.logit == logit
    assert abs(parts.total - logit) <= 1e-12 * max(1.0, abs(logit))
    ref = _reference_dla(model, TEXT, 5, 1)
    mine = {p.name: p.value for p in parts if p.kind == "head"}
    assert mine.keys() == ref.keys()
    for k in ref:
        assert mine[k] == pytest.approx(ref[k], rel=1e-9, abs=1e-12)
    assert parts.by_head()[(0, 1)] == mine["h[0].attn head 1"]
    names = [p.name for p in parts]
    assert names[:2] == ["wte[A]", "wpe[5]"] and "ln_f.b" in names
    assert "direct attribution" in parts.table()


def test_bad_input() -> None:
    s = MODEL.sheet(TEXT)
    for top in (0, -1, 1.5, True):
        with pytest.raises(QueryError, match="top"):
            influence(s, TARGET, top=top)  # type: ignore[arg-type]
    with pytest.raises(QueryError, match="grad\\*value"):
        influence(s, TARGET, by="gradient")
    with pytest.raises(QueryError, match="candidates"):
        influence(s, TARGET, by="ablation", candidates=0)
    with pytest.raises(UnknownNameError):
        influence(s, "logitt[5][A]")
    with pytest.raises(QueryError, match="logit"):
        direct_attribution(s, "prob[5][A]")
    assert s.engine.revision == 0


def test_ablation_of_a_softmax_denominator_is_reported_not_raised() -> None:
    s = MODEL.sheet(TEXT)
    target = "h[0].attn.att[1][3][0]"
    value = s.value(target)
    res = s.influence(target, top=2, by="ablation", candidates=8)
    assert res[0].cell == "h[0].attn.exp_sum[1][3]" and res[0].score == -math.inf  # e / 0
    assert s.value(target) == value and s.state("h[0].attn.exp_sum[1][3]") == "fresh"
