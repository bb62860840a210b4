"""The engine agrees with an independent numpy forward and with Hugging Face, computes only
the cone it needs, and its cell-level index maps agree with brute force."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest
import reference
from conftest import TINY, random_gpt2, random_model, ref_cfg
from hypothesis import given, settings
from hypothesis import strategies as st

import dfgpt
from dfgpt import Config

BOOL = [True, False]
SWITCHES = list(itertools.product(BOOL, BOOL, BOOL, BOOL, ["tanh", "erf"], ["out_in", "in_out"]))


@pytest.mark.parametrize("layer_norm, mlp, bias, tied, gelu, layout", SWITCHES)
def test_forward_matches_independent_numpy_forward(layer_norm, mlp, bias, tied, gelu, layout):
    cfg = Config(
        n_layer=2, n_head=2, n_embd=8, block_size=7, vocab=("a", "b", "c", "d"), n_inner=12,
        layer_norm=layer_norm, mlp=mlp, bias=bias, tied=tied, gelu=gelu, layout=layout,
    )
    model, state = random_model(cfg, seed=hash((layer_norm, mlp, bias, tied, gelu, layout)) % 1000)
    tokens = [3, 0, 2, 2, 1, 0, 3]
    ref = reference.forward(state, ref_cfg(cfg), tokens)
    s = model.sheet(tokens)
    np.testing.assert_allclose(s.values("logit"), ref["logits"], rtol=0, atol=1e-10)
    for layer in range(cfg.n_layer):
        np.testing.assert_allclose(s.values(f"h[{layer}].attn.att"), ref["att"][layer], atol=1e-10)
        np.testing.assert_allclose(s.values(f"h[{layer}].attn.q"), ref["q"][layer], atol=1e-10)
        np.testing.assert_allclose(s.values(f"h[{layer}].out"), ref["hidden"][layer + 1], atol=1e-10)
    np.testing.assert_allclose(s.values("emb"), ref["hidden"][0], atol=1e-12)


def test_probabilities_are_softmax_of_logits_at_temperature(sort_random):
    s = sort_random.sheet("CABACA", temperature=0.7)
    z = s.values("logit") / 0.7
    p = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(s.values("prob"), p / p.sum(1, keepdims=True), atol=1e-14)
    # the spreadsheet's intermediate cells exist and mean what they say
    x = s.values("h[1].mid")
    np.testing.assert_allclose(s.values("h[1].ln_2.mean"), x.mean(1), atol=1e-14)
    np.testing.assert_allclose(s.values("h[1].ln_2.var"), x.var(1), atol=1e-14)
    score = s.values("h[0].attn.score")
    np.testing.assert_array_equal(s.values("h[0].attn.score_max"), score.max(2))


def test_hugging_face_gpt2_agrees():
    torch = pytest.importorskip("torch")
    hf = random_gpt2(n_layer=2, n_head=2, n_embd=8, n_positions=16, vocab_size=11, noise=0.3)
    state = reference.hf_to_nanogpt({k: v.detach().numpy() for k, v in hf.state_dict().items()})
    cfg = Config(n_layer=2, n_head=2, n_embd=8, block_size=16, vocab_size=11, tied=True, dtype="float32")
    model = dfgpt.Model.from_state_dict(state, cfg)
    ids = [1, 7, 3, 3, 10, 0, 5, 2]
    with torch.no_grad():
        out = hf(torch.tensor([ids]), output_attentions=True, output_hidden_states=True)
    s = model.sheet(ids)
    np.testing.assert_allclose(s.values("logit"), out.logits[0].numpy(), atol=1e-5)
    for layer in range(2):
        np.testing.assert_allclose(s.values(f"h[{layer}].attn.att"), out.attentions[layer][0].numpy(), atol=1e-5)


def test_reading_one_logit_computes_no_row_past_its_position(sort_random):
    s = sort_random.sheet("CABACAABBCC")  # 11 tokens: the whole context
    s.value("logit[5][A]")
    e = s.engine
    for tensor in e.graph.computed:
        computed = np.flatnonzero(e.verified[tensor][: e.T] >= 0)
        assert computed.size == 0 or computed.max() <= 5, tensor
    assert e.rows_computed("logit") == 1  # only row 5 of the last tensors
    assert e.rows_computed("h[2].attn.k") == 6  # keys 0..5 are read by query 5
    assert e.rows_computed("h[2].mlp.fc") == 1


def test_second_read_recomputes_nothing(sort_random):
    s = sort_random.sheet("CABACA")
    s.value("logit")
    s.engine.reset_counts()
    s.value("logit")
    assert sum(s.engine.counts.values()) == 0


def test_exact_mode_is_row_canonical(sort_random):
    # rows computed lazily, one at a time, equal rows computed all at once: bit for bit
    lazy = sort_random.sheet("CABACABBC")
    for t in range(9):
        lazy.value(f"logit[{t}]")
    full = sort_random.sheet("CABACABBC")
    for tensor in full.graph.computed:
        np.testing.assert_array_equal(lazy.values(tensor), full.values(tensor))


def _perturb_and_diff(model, tokens, param, idx, delta=1e-3):
    base = model.sheet(tokens)
    moved = model.sheet(tokens)
    moved.engine.write(param, idx, moved.engine.values[param][idx] + delta)
    return {t: base.values(t) != moved.values(t) for t in base.graph.computed}


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_dependents_cone_is_sound_by_perturbation(data):
    model = random_model(TINY, seed=2)[0]
    tokens = data.draw(st.lists(st.integers(0, 2), min_size=2, max_size=6))
    sheet = model.sheet(tokens)
    param = data.draw(st.sampled_from(sheet.graph.parameters))
    shape = sheet.engine.shape(param)
    idx = tuple(data.draw(st.integers(0, n - 1)) for n in shape)
    seed = np.zeros(shape, bool)
    seed[idx] = True
    cone = sheet.engine.descendants({param: seed})
    for tensor, changed in _perturb_and_diff(model, tokens, param, idx).items():
        allowed = cone.get(tensor, np.zeros_like(changed))
        assert not (changed & ~allowed).any(), f"{tensor} changed outside the cone of {param}{list(idx)}"


def _cell_graph(sheet) -> nx.DiGraph:
    """The fully built cell-level graph of a tiny model: an edge from every precedent to its cell."""
    g = nx.DiGraph()
    for tensor in sheet.graph.order:
        for name in sheet.cells(tensor):
            g.add_node(name)
            if sheet.graph.specs[tensor].kind == "computed":
                for p in sheet.precedents(name):
                    g.add_edge(p, name)
    return g


def test_vectorised_cones_equal_networkx_on_the_cell_graph(tiny):
    s = tiny.sheet("abca")
    g = _cell_graph(s)
    rng = np.random.default_rng(0)
    nodes = sorted(g.nodes)
    for name in ["logit[3][b]", "h[1].attn.att[1][2][0]", "h[0].mlp.gelu[1][5]", *rng.choice(nodes, 25)]:
        anc = s.names(s.engine.ancestors(s.masks(name)))
        assert set(anc) - {name} == nx.ancestors(g, name), name
        desc = s.names(s.engine.descendants(s.masks(name)))
        assert set(desc) - {name} == nx.descendants(g, name), name


def test_precedents_are_what_perturbation_moves(tiny):
    s = tiny.sheet("abcab")
    rng = np.random.default_rng(3)
    computed = [n for t in s.graph.computed for n in s.cells(t)]
    for name in rng.choice(computed, 40):
        base = s.value(name)
        for p in s.precedents(name):
            tensor, idx = s.cell(p)
            probe = tiny.sheet("abcab")
            if s.graph.specs[tensor].kind == "parameter":
                probe.engine.write(tensor, idx, probe.engine.values[tensor][idx] + 0.5)
            elif s.graph.specs[tensor].kind == "computed":
                probe.value(p)
                probe.engine.pin(tensor, idx, probe.value(p) + 0.5)
            else:
                continue
            moved = probe.value(name) != base
            masked_softmax = s.graph.ops[s.cell(name)[0]].kind in ("softmax", "softmax_max", "softmax_sum")
            assert moved or masked_softmax, f"{name} does not move when its precedent {p} does"


def test_position_zero_attends_to_itself_only(sort_random):
    s = sort_random.sheet("CABACA")
    assert s.precedents("h[0].attn.att[0][0][0]") == [
        "h[0].attn.score[0][0][0]", "h[0].attn.score_max[0][0]", "h[0].attn.exp_sum[0][0]"
    ]
    assert s.value("h[0].attn.att[0][0][0]") == 1.0
    assert s.value("h[0].attn.att[0][2][4]") == 0.0 and s.precedents("h[0].attn.att[0][2][4]") == []
    assert "never" not in s.formula("h[0].attn.score[0][2][4]")
    assert "causal mask" in s.formula("h[0].attn.score[0][2][4]")


def test_masked_scores_are_read_by_nothing_even_when_pinned(sort_random):
    s = sort_random.sheet("CABACA")
    before = s.values("logit").copy()
    s.value("h[0].attn.score")
    s.engine.pin("h[0].attn.score", (0, 2, 4), 3.0)  # s > t: outside every cone
    s.engine.pin("h[1].attn.score", (1, 1, 3), -2.0)
    np.testing.assert_array_equal(s.values("logit"), before)
    assert s.value("h[0].attn.att[0][2][4]") == 0.0


def test_a_nonfinite_later_value_does_not_leak_into_earlier_rows(sort_random):
    inc = sort_random.sheet("CABACA")
    inc.value("logit")
    inc.engine.pin("h[0].attn.v", (1, 4, 3), np.inf)
    fresh = sort_random.sheet("CABACA")
    fresh.engine.pin("h[0].attn.v", (1, 4, 3), np.inf)
    a, b = inc.values("h[0].attn.y"), fresh.values("h[0].attn.y")
    np.testing.assert_array_equal(a, b)
    assert np.isfinite(b[:4]).all() and not np.isfinite(b[4:]).all()


def test_a_partial_read_after_an_edit_does_not_vouch_for_other_rows(sort_random):
    # Reading row 1 after a token edit at row 0 must not mark row 0 of anything current.
    s = sort_random.sheet("CABAC")
    s.values("logit")
    s.set("tokens[0]", "A")
    s.set("temperature", 0.5)
    s.value("h[0].attn.q[:][1][:]")
    fresh = sort_random.sheet("AABAC", temperature=0.5)
    for tensor in ("h[0].ln_1.mean", "h[0].attn.q", "logit", "prob"):
        np.testing.assert_array_equal(s.values(tensor), fresh.values(tensor))


def test_a_new_sheet_reuses_a_dead_sheets_block_zeroed_and_never_a_held_one(sort_random):
    """Small sheets' values are views of one block, reused once nothing holds it: a kept slice of an
    old sheet keeps its numbers, and a sheet on a reused block computes what a fresh one does."""
    first = sort_random.sheet("CABACAB")
    want = first.values("logit").copy()
    kept = first.engine.view("logit")  # a slice of the block: the old sheet is gone, its numbers stay
    del first
    blocks = set()
    for text in ("ABCABCA", "CCCCCCC", "CABACAB"):
        s = sort_random.sheet(text)
        blocks.add(id(s.engine.values["logit"].base))
        got = s.values("logit")
        del s
        assert np.array_equal(kept, want)
    assert np.array_equal(got, want)
    assert len(blocks) == 1 and id(kept.base) not in blocks  # one block reused three times; the kept one never
    reused = [sort_random.sheet("BBB") for _ in range(3)]
    held = {id(s.engine.values[n].base) for s in reused for n in s.graph.computed}
    assert len(held) == len(reused)  # live sheets never share a block
    ref = reference.forward(sort_random.state_dict(), ref_cfg(sort_random.config), [1, 1, 1])["logits"]
    for s in reused:
        np.testing.assert_allclose(s.values("logit"), ref, rtol=0, atol=1e-10)
