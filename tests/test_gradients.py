"""Gradients against finite differences (every switch), torch.autograd, and the reference forward."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import reference
from conftest import random_model, ref_cfg
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import dfgpt
from dfgpt import Config
from dfgpt.core.autodiff import backward, forward

SWITCHES = list(itertools.product(
    ("out_in", "in_out"), ("tanh", "erf"), (True, False), (True, False), (True, False), (True, False)
))


def tiny_config(layout: str, gelu: str, bias: bool, layer_norm: bool, mlp: bool, tied: bool) -> Config:
    return Config(n_layer=2, n_head=2, n_embd=4, block_size=5, vocab=("a", "b", "c"), n_inner=6,
                  layout=layout, gelu=gelu, bias=bias, layer_norm=layer_norm, mlp=mlp, tied=tied)  # type: ignore[arg-type]


def _cells(eng, masks: dict) -> list[tuple[str, tuple[int, ...]]]:
    out = []
    for name, m in sorted(masks.items()):
        if name in ("tokens", "temperature"):
            continue
        out += [(name, tuple(int(i) for i in ix)) for ix in np.argwhere(m)]
    return out


def _finite(v: float) -> bool:
    return bool(np.isfinite(v))


def _target_cells(sheet) -> list[tuple[str, tuple[int, ...]]]:
    """Every computed cell with a finite value (masked scores are -inf)."""
    eng = sheet.engine
    sheet.compute({n: np.ones(eng.shape(n), bool) for n in sheet.graph.computed})
    out = []
    for name in sheet.graph.computed:
        vals = eng.view(name)
        out += [(name, tuple(int(i) for i in ix)) for ix in np.argwhere(np.isfinite(vals))]
    return out


def finite_difference(model, text, temperature, target, cell, h=1e-4) -> float:
    """Five-point central difference of the target's value, perturbing one cell (a pin for
    activations). Its error is O(h⁴): a plain central difference's O(h²) truncation alone can
    exceed the 1e-6 relative bar where the target curves sharply."""
    name, idx = cell
    vals = {}
    for k in (2, 1, -1, -2):
        s = model.sheet(text, temperature=temperature)
        if s.graph.specs[name].kind == "parameter":
            s.engine.write(name, idx, s.engine.values[name][idx] + k * h)
        else:
            s.compute(s.masks(s.name(name, idx)))
            s.engine.pin(name, idx, float(s.engine.view(name)[idx]) + k * h)
        vals[k] = s.value(target)
    return (-vals[2] + 8 * vals[1] - 8 * vals[-1] + vals[-2]) / (12 * h)


def check_fd(model, text, temperature, pick_target, pick_cell) -> None:
    sheet = model.sheet(text, temperature=temperature)
    targets = _target_cells(sheet)
    tname, tidx = targets[pick_target % len(targets)]
    target = sheet.name(tname, tidx)
    g = sheet.grad(target)
    m = np.zeros(sheet.engine.shape(tname), bool)
    m[tidx] = True
    cone = _cells(sheet.engine, sheet.engine.ancestors({tname: m}))
    name, idx = cone[pick_cell % len(cone)]
    fd = finite_difference(model, text, temperature, target, (name, idx))
    got = g[sheet.name(name, idx)]
    assert abs(got - fd) <= 1e-6 * max(abs(got), abs(fd)) + 1e-9, (target, name, idx, got, fd)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    switches=st.sampled_from(SWITCHES),
    seed=st.integers(0, 1000),
    text=st.text("abc", min_size=1, max_size=5),
    temperature=st.sampled_from([1.0, 0.7, 2.5]),
    pick_target=st.integers(0, 10**6),
    pick_cell=st.integers(0, 10**6),
)
# A sharply curving target where a plain central difference missed the bar by 2x.
@example(("out_in", "tanh", False, True, True, True), 0, "caaba", 1.0, 29933, 107)
def test_finite_differences_tiny_every_switch(switches, seed, text, temperature, pick_target, pick_cell):
    model, _ = random_model(tiny_config(*switches), seed=seed)
    check_fd(model, text, temperature, pick_target, pick_cell)


@pytest.mark.parametrize("switches", SWITCHES)
def test_finite_differences_every_switch_combination(switches):
    """Each of the 64 combinations at least once, on a logit (the whole cone)."""
    model, _ = random_model(tiny_config(*switches), seed=3)
    sheet = model.sheet("abca")
    g = sheet.grad("logit[3][b]")
    rng = np.random.default_rng(sum(hash(s) % 97 for s in map(str, switches)))
    cone = _cells(sheet.engine, sheet.engine.ancestors(sheet.masks("logit[3][b]")))
    for k in rng.choice(len(cone), size=4, replace=False):
        name, idx = cone[k]
        fd = finite_difference(model, "abca", 1.0, "logit[3][b]", (name, idx))
        got = g[sheet.name(name, idx)]
        assert abs(got - fd) <= 1e-6 * max(abs(got), abs(fd)) + 1e-9, (name, idx, got, fd)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pick_target=st.integers(0, 10**6), pick_cell=st.integers(0, 10**6),
       text=st.text("ABC", min_size=1, max_size=8))
def test_finite_differences_sort_random(sort_random, pick_target, pick_cell, text):
    check_fd(sort_random, text, 1.0, pick_target, pick_cell)


def test_selection_is_the_sum_of_its_cells(sort_random):
    s = sort_random.sheet("CABACA")
    total = s.grad("logit[5]")
    parts = [s.grad(f"logit[5][{v}]") for v in "ABC"]
    for name, a in total.arrays.items():
        np.testing.assert_allclose(a, sum(p.arrays.get(name, 0) for p in parts), rtol=1e-12, atol=1e-15)
    assert total.value == pytest.approx(float(s.value("logit[5]").sum()))


def test_outside_the_cone_is_zero_and_names_work(sort_random):
    s = sort_random.sheet("CABACA")
    g = s.grad("logit[2][B]")
    assert g["logit[2][B]"] == 1.0
    assert not g.arrays["wpe"][3:].any()  # later positions are outside the cone
    assert not g.arrays["emb"][3:].any()
    assert g["wte[C][17]"] == g.arrays["wte"][2, 17] != 0.0
    assert g.arrays["h[0].attn.att"].shape == s.engine.view("h[0].attn.att").shape
    assert s.engine.rows_computed("logit") == 3  # only rows up to the target were computed


def test_pins_block_the_gradient(sort_random):
    s = sort_random.sheet("CABACA")
    s.compute(s.masks("ln_f.out[5]"))
    s.engine.pin("ln_f.var", (5,), float(s.engine.view("ln_f.var")[5]))
    g = s.grad("logit[5][A]")
    assert g["ln_f.var[5]"] != 0.0  # its own gradient is kept
    fd = finite_difference(sort_random, "CABACA", 1.0, "logit[5][A]", ("ln_f.var", (5,)))
    assert g["ln_f.var[5]"] == pytest.approx(fd, rel=1e-6)
    # nothing flows through a pinned cell: the variance's inputs get only the direct paths
    free = sort_random.sheet("CABACA").grad("logit[5][A]")
    assert g["h[2].out[5][0]"] != pytest.approx(free["h[2].out[5][0]"], rel=1e-9)


def test_batched_forward_matches_reference():
    cfg = tiny_config("in_out", "erf", True, True, True, False)
    model, state = random_model(cfg, seed=5)
    toks = np.array([[0, 2, 1, 1, 0], [2, 2, 0, 1, 2]])
    V = forward(model.graph, model.params, toks, until="logit")
    for b in range(2):
        ref = reference.forward(state, ref_cfg(cfg), toks[b])["logits"]
        np.testing.assert_allclose(V["logit"][b], ref, rtol=1e-12, atol=1e-12)


def test_batched_backward_is_the_sum_of_sheet_gradients(sort_random):
    toks = np.array([sort_random.encode("CABACA"), sort_random.encode("BBACAA")])
    V = forward(sort_random.graph, sort_random.params, toks, until="logit")
    seed = np.zeros_like(V["logit"])
    seed[:, 5, 0] = 1.0
    G = backward(sort_random.graph, V, {"logit": seed})
    want = sum(sort_random.sheet(t).grad("logit[5][A]").arrays["h[0].attn.c_attn.w"] for t in ("CABACA", "BBACAA"))
    np.testing.assert_allclose(G["h[0].attn.c_attn.w"], want, rtol=1e-10, atol=1e-14)


def _torch_logits(torch, state: dict, cfg: Config, tokens: list[int]):
    """A hand-written torch nanoGPT forward over a nanoGPT state dict of leaf tensors."""
    T, C, H = len(tokens), cfg.n_embd, cfg.n_head
    F = torch.nn.functional

    def lin(x, p):
        W = state[p + ".weight"]
        y = x @ (W.T if cfg.layout == "out_in" else W)
        return y + state[p + ".bias"] if cfg.bias else y

    def ln(x, p):
        if not cfg.layer_norm:
            return x
        return F.layer_norm(x, (C,), state[p + ".weight"], state.get(p + ".bias"), cfg.ln_eps)

    x = state["transformer.wte.weight"][torch.tensor(tokens)] + state["transformer.wpe.weight"][:T]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for layer in range(cfg.n_layer):
        h = f"transformer.h.{layer}"
        q, k, v = lin(ln(x, h + ".ln_1"), h + ".attn.c_attn").split(C, dim=-1)
        q, k, v = (a.view(T, H, -1).transpose(0, 1) for a in (q, k, v))
        att = (q @ k.transpose(-1, -2) / (C // H) ** 0.5).masked_fill(~mask, float("-inf")).softmax(-1)
        x = x + lin((att @ v).transpose(0, 1).reshape(T, C), h + ".attn.c_proj")
        if cfg.mlp:
            approx = "tanh" if cfg.gelu == "tanh" else "none"
            x = x + lin(F.gelu(lin(ln(x, h + ".ln_2"), h + ".mlp.c_fc"), approximate=approx), h + ".mlp.c_proj")
    head = state["transformer.wte.weight"] if cfg.tied else state["lm_head.weight"]
    return ln(x, "transformer.ln_f") @ head.T


@pytest.mark.parametrize("switches", [SWITCHES[0], SWITCHES[21], SWITCHES[42], SWITCHES[63]])
def test_matches_torch_autograd(switches):
    torch = pytest.importorskip("torch")
    cfg = tiny_config(*switches)
    model, state = random_model(cfg, seed=7)
    ts = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in state.items()}
    logits = _torch_logits(torch, ts, cfg, [2, 0, 1, 1])
    (logits[3, 1] + 0.5 * logits[2, 0]).backward()
    s = model.sheet("cabb")
    g1, g2 = s.grad("logit[3][b]"), s.grad("logit[2][a]")
    from dfgpt.models.checkpoints import to_dfgpt_key

    for key, t in ts.items():
        mine = g1.arrays.get(to_dfgpt_key(key), 0) + 0.5 * g2.arrays.get(to_dfgpt_key(key), 0)
        np.testing.assert_allclose(mine, t.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=key)


def test_torch_autograd_sort_model():
    torch = pytest.importorskip("torch")
    model = dfgpt.load("sort-random")
    ts = {k: torch.tensor(v, requires_grad=True) for k, v in model.state_dict().items()}
    _torch_logits(torch, ts, model.config, model.encode("CABACA"))[5, 0].backward()
    g = model.sheet("CABACA").grad("logit[5][A]")
    from dfgpt.models.checkpoints import to_dfgpt_key

    for key, t in ts.items():
        np.testing.assert_allclose(g.arrays[to_dfgpt_key(key)], t.grad.numpy(), rtol=1e-9, atol=1e-13, err_msg=key)


@pytest.mark.parametrize("target", ["prob[5][A]", "prob[2][C]", "exp_sum[3]", "logit_max[4]"])
def test_temperature_gradient_matches_finite_differences(target):
    model = dfgpt.load("sort")

    def at(t: float) -> float:
        return model.sheet("CABACA", temperature=t).value(target)

    h, tau = 1e-4, 0.7
    fd = (-at(tau + 2 * h) + 8 * at(tau + h) - 8 * at(tau - h) + at(tau - 2 * h)) / (12 * h)
    got = model.sheet("CABACA", temperature=tau).grad(target)["temperature"]
    assert got == pytest.approx(fd, rel=1e-6, abs=1e-10)  # logit_max does not read it: 0


# -- the arena: reused memory must never change a result somebody still holds ----------------------
def test_a_gradient_kept_is_not_overwritten_by_the_next_one():
    s = dfgpt.load("sort").sheet("CABACA")
    g1 = s.grad("logit[5][A]")
    kept = {n: a.copy() for n, a in g1.arrays.items()}
    g2 = s.grad("logit[4][C]")  # g1 still holds its block: g2 must get other memory
    assert all(np.array_equal(g1.arrays[n], kept[n]) for n in kept)
    assert not np.array_equal(g1.arrays["lm_head.w"], g2.arrays["lm_head.w"])


def test_a_dropped_gradient_block_is_reused_with_the_same_answer():
    from dfgpt.core import arena

    s = dfgpt.load("sort").sheet("CABACA")
    first = {n: a.copy() for n, a in s.grad("logit[5][A]").arrays.items()}  # the result is dropped at once
    used, free = arena.held()
    again = s.grad("logit[5][A]").arrays
    assert arena.held()[1] < free + 1  # no new free memory: the freed block was taken again
    assert used == 0 and all(np.array_equal(again[n], first[n]) for n in first)


def test_influences_kept_side_by_side_keep_their_own_scores():
    s = dfgpt.load("sort").sheet("CABACA")
    r1 = s.influence("logit[5][A]", top=5)
    scores = {t: a.copy() for t, a in r1.scores.items()}
    rows = r1.by_block()
    r2 = s.influence("logit[3][B]", top=5)
    assert [g.score for g in r1.by_block()] == [g.score for g in rows]
    assert all(np.array_equal(Influence_scores, scores[t]) for t, Influence_scores in r1.scores.items())
    assert [it.cell for it in r2] != [it.cell for it in r1]
