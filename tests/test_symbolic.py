"""dfgpt.analysis.symbolic: expressions evaluate to the engine's values, derivatives to its gradients;
bad input is refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy
from conftest import random_model
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import dfgpt
from dfgpt import Config
from dfgpt.analysis.compiled import lambdify
from dfgpt.analysis.symbolic import ExpansionError, expr, latex

TINY = Config(n_layer=2, n_head=2, n_embd=4, block_size=5, vocab=("x", "y", "z"), n_inner=6, name="tiny")
TINY_ERF = TINY.replace(n_layer=1, gelu="erf", layout="in_out", bias=False, tied=True, name="tiny-erf")


@pytest.fixture(scope="module")
def sheets() -> dict[str, dfgpt.Sheet]:
    out = {}
    for cfg, text, temp in ((TINY, "xzyzx", 1.0), (TINY_ERF, "zyxy", 0.7)):
        model, _ = random_model(cfg, seed=3)
        out[cfg.name] = model.sheet(text, temperature=temp)
    out["sort"] = dfgpt.load("sort-random").sheet("CABACA")
    return out


def _close(got: float, want: float, rel: float = 1e-9) -> bool:
    if math.isinf(want):
        return got == want
    return abs(got - want) <= rel * max(1.0, abs(want))


def _substitute(sheet: dfgpt.Sheet, e: sympy.Expr) -> float:
    """An evaluation independent of `lambdify`: sympy's own arithmetic at the sheet's values."""
    return float(e.xreplace({s: sympy.Float(sheet.value(s.name), 30) for s in e.free_symbols}).evalf(30))


def _random_cell(sheet: dfgpt.Sheet, data: st.DataObject) -> str:
    tensors = [t for t in sheet.graph.computed if t != "tokens"]
    tensor = data.draw(st.sampled_from(tensors), label="tensor")
    shape = sheet.engine.shape(tensor)
    idx = tuple(data.draw(st.integers(0, n - 1)) for n in shape)
    return sheet.name(tensor, idx)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_depth_expressions_evaluate_to_the_sheet(sheets, data) -> None:
    name = data.draw(st.sampled_from(["tiny", "tiny-erf", "sort"]))
    sheet = sheets[name]
    cell = _random_cell(sheet, data)
    depth = data.draw(st.integers(0, 3 if name != "sort" else 2), label="depth")
    try:
        e = expr(sheet, cell, depth=depth)
    except ExpansionError as err:  # the budget is a refusal, never a wrong answer
        assert "budget" in str(err) and depth >= 2
        return
    want = sheet.value(cell)
    assert _close(float(lambdify(e).at(sheet)), want), (cell, depth)
    if e.free_symbols and len(e.free_symbols) < 400:
        assert _close(_substitute(sheet, e), want), (cell, depth)
    if depth == 0:
        assert e == sympy.Symbol(cell)


def test_depth_one_is_the_formula_over_direct_precedents(sheets) -> None:
    s = sheets["sort"]
    e = expr(s, "h[0].ln_1.out[2][3]", depth=1)
    assert {x.name for x in e.free_symbols} == set(s.precedents("h[0].ln_1.out[2][3]"))
    assert str(e) == "h[0].ln_1.b[3] + h[0].ln_1.g[3]*(emb[2][3] - h[0].ln_1.mean[2])/sqrt(h[0].ln_1.var[2] + 1.0e-5)"
    att = expr(s, "h[0].attn.att[1][4][2]", depth=1)
    assert str(att) == "exp(h[0].attn.score[1][4][2] - h[0].attn.score_max[1][4])/h[0].attn.exp_sum[1][4]"
    # Depth 2 reaches every cell exactly two steps up: the max becomes Max over the row.
    att2 = expr(s, "h[0].attn.att[1][4][2]", depth=2)
    assert any(isinstance(a, sympy.Max) for a in sympy.preorder_traversal(att2))
    assert "h[0].attn.q[1][4][0]" in {x.name for x in att2.free_symbols}


def test_readable_forms(sheets) -> None:
    s = sheets["sort"]
    g = expr(s, "h[0].mlp.gelu[2][7]")
    assert g.has(sympy.tanh) and g.free_symbols == {sympy.Symbol("h[0].mlp.fc[2][7]")}
    erf = expr(sheets["tiny-erf"], "h[0].mlp.gelu[1][2]")
    assert erf.has(sympy.erf)
    assert expr(s, "h[0].attn.score[0][2][4]") == -sympy.oo
    assert s.value("h[0].attn.score[0][2][4]") == -math.inf
    assert expr(s, "h[0].attn.att[0][2][4]") == 0
    p = expr(sheets["tiny-erf"], "prob[1][y]")
    assert sympy.Symbol("temperature") in p.free_symbols
    assert _close(float(lambdify(p).at(sheets["tiny-erf"])), sheets["tiny-erf"].value("prob[1][y]"))


@pytest.mark.parametrize("name", ["sort", "sort-random"])
def test_free_sort_logit_has_exactly_one_symbol(name: str) -> None:
    s = dfgpt.load(name).sheet("CABACA")
    e = expr(s, "logit[5][A]", free=["h[2].mlp.c_proj.b[0]"])
    assert [x.name for x in e.free_symbols] == ["h[2].mlp.c_proj.b[0]"]
    assert _close(float(lambdify(e)(s.value("h[2].mlp.c_proj.b[0]"))), s.value("logit[5][A]"))
    # The derivative agrees with the engine's gradient and with its central finite difference.
    b = next(iter(e.free_symbols))
    d = float(lambdify(sympy.diff(e, b)).at(s))
    assert _close(d, s.grad("logit[5][A]")["h[2].mlp.c_proj.b[0]"], 1e-7)
    assert _close(d, _fd(s, "logit[5][A]", "h[2].mlp.c_proj.b[0]"), 1e-6)


def _fd(sheet: dfgpt.Sheet, target: str, cell: str) -> float:
    """Central finite difference of the engine, the cell restored afterwards."""
    tensor, idx = sheet.cell(cell)
    eng = sheet.engine
    v0 = float(eng.values[tensor][idx])
    h = 1e-5 * max(1.0, abs(v0))
    out = []
    for v in (v0 + h, v0 - h):
        eng.write(tensor, idx, v)
        out.append(sheet.value(target))
    eng.write(tensor, idx, v0)
    return (out[0] - out[1]) / (2 * h)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_free_expressions_and_their_derivatives(sheets, data) -> None:
    sheet = sheets[data.draw(st.sampled_from(["tiny", "tiny-erf"]))]
    cell = _random_cell(sheet, data)
    cone = sheet.engine.ancestors(sheet.masks(cell))
    params = [(t, m) for t, m in cone.items() if sheet.graph.specs[t].kind == "parameter"]
    assume(params)  # a causally masked cell (score[h][t][s > t]) is a constant: no parameter to free
    t, m = data.draw(st.sampled_from(params), label="param")
    cells = np.argwhere(m)
    pick = tuple(int(i) for i in cells[data.draw(st.integers(0, len(cells) - 1))])
    free = sheet.name(t, pick)
    try:
        e = expr(sheet, cell, free=[free])
    except ExpansionError as err:
        assert "budget" in str(err)
        return
    assert {x.name for x in e.free_symbols} <= {free}
    want = sheet.value(cell)
    f = lambdify(e)
    got = float(f(sheet.value(free))) if f.names else float(e)
    assert _close(got, want), (cell, free)
    if math.isinf(want):
        return
    d = float(lambdify(sympy.diff(e, sympy.Symbol(free))).at(sheet)) if f.names else 0.0
    g = sheet.grad(cell)[free]
    assert abs(d - g) <= 1e-7 * max(1.0, abs(g)), (cell, free, d, g)
    fd = _fd(sheet, cell, free)
    assert abs(d - fd) <= 1e-6 * max(1.0, abs(fd)), (cell, free, d, fd)
    assert sheet.value(cell) == want  # the sheet is as it was


def test_free_intermediate_cells(sheets) -> None:
    s = sheets["sort"]
    for free, target in (
        ("h[0].attn.exp_sum[0][2]", "h[0].attn.att[0][2][1]"),
        ("h[0].attn.score_max[1][3]", "h[0].attn.exp_sum[1][3]"),
        ("ln_f.var[4]", "logit[4][B]"),
        ("logit[3][C]", "prob[3][A]"),
    ):
        e = expr(s, target, free=[free])
        assert {x.name for x in e.free_symbols} == {free}
        assert _close(float(lambdify(e).at(s)), s.value(target)), (free, target)
    assert expr(s, "logit[3][C]", free=["logit[3][C]"]) == sympy.Symbol("logit[3][C]")


def test_free_cell_outside_the_cone_is_refused(sheets) -> None:
    s = sheets["sort"]
    # wpe row 3 is outside the cone of position 0 (the causal mask); the parameter itself is fine
    with pytest.raises(ExpansionError, match=r"wpe\[3\]\[0\] does not affect logit\[0\]\[A\]"):
        expr(s, "logit[0][A]", free=["wpe[3][0]"])
    with pytest.raises(ExpansionError, match="discrete input"):
        expr(s, "logit[2][A]", free=["tokens[1]"])


def test_bad_input(sheets) -> None:
    s = sheets["sort"]
    with pytest.raises(dfgpt.DfgptError, match="no tensor"):
        expr(s, "logits_x[5][A]")
    with pytest.raises(dfgpt.DfgptError, match="out of range"):
        expr(s, "logit[9][A]")
    with pytest.raises(dfgpt.DfgptError, match="not in the vocabulary"):
        expr(s, "logit[5][Q]")
    with pytest.raises(dfgpt.DfgptError, match="depth must be an integer ≥ 0"):
        expr(s, "logit[5][A]", depth=-1)
    with pytest.raises(dfgpt.DfgptError, match="more than one cell"):
        expr(s, "logit[5]")
    # One attention score written out in full is far over the default budget: refused early.
    with pytest.raises(ExpansionError, match="over the budget of 20,000"):
        expr(s, "h[0].attn.score[0][5][2]", depth=3)
    with pytest.raises(ExpansionError, match="budget"):
        expr(s, "logit[2][A]", free=["wte[A][0]"])
    with pytest.raises(dfgpt.DfgptError, match="expected 1 values"):
        lambdify(sympy.Symbol("a") + 1)(1.0, 2.0)


def test_latex_and_sheet_methods(sheets) -> None:
    s = sheets["sort"]
    text = latex(s, "h[0].ln_1.out[2][3]")
    assert text.startswith(r"\mathtt{h[0].ln\_1.out[2][3]} = ")
    assert r"\mathtt{h[0].ln\_1.var[2]}" in text
    assert s.latex("h[0].ln_1.out[2][3]") == text
    assert s.expr("h[0].ln_1.mean[1]", depth=1) == expr(s, "h[0].ln_1.mean[1]")


def test_lambdify_broadcasts_and_matches_sympy_lambdify() -> None:
    a, b = sympy.symbols("a b")
    e = sympy.exp(a - sympy.Max(a, b)) / (sympy.exp(a - sympy.Max(a, b)) + sympy.exp(b - sympy.Max(a, b)))
    e = e + sympy.tanh(a) * sympy.erf(b) + sympy.sqrt(2) * a**3
    xs, ys = np.linspace(-2, 2, 7), np.linspace(-1, 3, 7)
    ref = sympy.lambdify((a, b), e, "scipy")(xs, ys)
    assert np.allclose(lambdify(e)(xs, ys), ref, rtol=1e-12)


def test_cli(capsys) -> None:
    from dfgpt.cli import main

    assert main(["expr", "logit[4][b]", "--model", "aab", "--text", "aabaa", "--free", "h[0].attn.c_proj.w[6][6]"]) == 0
    out = capsys.readouterr().out
    assert "logit[4][b] = h[0].attn.c_proj.w[6][6]" in out and "value: 1024" in out
    assert main(["expr", "h[0].ln_1.mean[1]", "--model", "sort-random", "--latex"]) == 0
    assert r"\mathtt{h[0].ln\_1.mean[1]} =" in capsys.readouterr().out
    assert main(["expr", "logit[0][A]", "--model", "sort-random", "--free", "wpe[3][0]"]) == 2
    assert "does not affect" in capsys.readouterr().err
    assert main(["expr", "logit[0][A]", "--model", "sort-random", "--depth", "-1"]) == 2
    assert main(["expr", "logit[0][A]", "--model", "sort-random", "--depth", "1", "--free", "wte[A][0]"]) == 2
