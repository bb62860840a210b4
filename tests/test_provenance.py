"""The exact cone: soundness by perturbation, completeness, and a brute-force cell-graph oracle."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dfgpt
from dfgpt import Config, Model
from dfgpt.analysis.provenance import impact, provenance
from dfgpt.cli import main
from dfgpt.errors import DfgptError, IndexError_, QueryError, UnknownNameError
from dfgpt.models.catalog import random_params

TEXT = "CABACABCABC"  # 11 tokens: the whole context
TARGET = "logit[5][A]"
MODEL = dfgpt.load("sort-random")
SHEET = MODEL.sheet(TEXT)
BASE = SHEET.value(TARGET)
PROV = provenance(SHEET, TARGET)


def _masked_attention(tensor: str, idx: tuple[int, ...]) -> bool:
    """score/att cells above the diagonal are constants of the causal mask: sheet.set refuses to
    pin them (EditError), so they are no cells a user can perturb."""
    return tensor.endswith((".score", ".att")) and idx[2] > idx[1]


def _outside_cells() -> list[tuple[str, tuple[int, ...]]]:
    specs, out = SHEET.graph.specs, []
    for tensor in SHEET.graph.order:
        if tensor == "temperature":
            continue
        shape = SHEET.engine.shape(tensor)
        inside = PROV.masks.get(tensor, np.zeros(shape, bool))
        for idx in np.argwhere(~inside):
            ix = tuple(int(i) for i in idx)
            if specs[tensor].kind == "computed" and _masked_attention(tensor, ix):
                continue
            out.append((tensor, ix))
    return out


OUTSIDE = _outside_cells()


def _perturbed_target(tensor: str, idx: tuple[int, ...], value: float) -> float:
    """The target on a fresh sheet with one cell changed (written, or pinned if computed)."""
    s = MODEL.sheet(TEXT)
    kind = s.graph.specs[tensor].kind
    if kind == "computed":
        s.engine.pin(tensor, idx, value)
    elif tensor == "tokens":
        s.engine.write(tensor, idx, (int(s.engine.tokens[idx[0]]) + 1) % 3)
    else:
        s.engine.write(tensor, idx, value)
    return s.value(TARGET)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, len(OUTSIDE) - 1), st.floats(-50, 50, allow_nan=False))
def test_soundness_cells_outside_the_cone_never_change_the_target(i: int, value: float) -> None:
    tensor, idx = OUTSIDE[i]
    assert _perturbed_target(tensor, idx, value) == BASE


def test_outside_cells_cover_every_kind() -> None:
    kinds = {SHEET.graph.specs[t].kind for t, _ in OUTSIDE}
    assert kinds == {"parameter", "input", "computed"}


@settings(max_examples=25, deadline=None)
@given(st.data(), st.floats(-50, 50, allow_nan=False))
def test_inert_cells_in_the_cone_have_exactly_no_effect(data: st.DataObject, value: float) -> None:
    inert = list(PROV.inert)
    assert inert, "position 0's attention makes q[h][0] inert"
    name = data.draw(st.sampled_from(inert))
    assert name in PROV
    tensor, idx = SHEET.cell(name)
    assert _perturbed_target(tensor, idx, value) == BASE


def test_cells_inside_the_cone_do_change_the_target() -> None:
    # wpe row 5 and a weight of the first layer: perturbing them moves the logit.
    assert _perturbed_target("wpe", (5, 0), 3.0) != BASE
    assert _perturbed_target("h[0].attn.c_attn.w", (0, 0), 3.0) != BASE


def test_no_later_positions_and_the_wpe_rows() -> None:
    specs = SHEET.graph.specs
    for tensor, m in PROV.masks.items():
        for a, axis in enumerate(specs[tensor].axes):
            if axis in ("pos", "key"):
                assert not np.take(m, range(6, 11), axis=a).any(), tensor
    for t in range(11):
        assert (f"wpe[{t}][7]" in PROV) == (t <= 5)
        assert (f"tokens[{t}]" in PROV) == (t <= 5)
    assert PROV.masks["wpe"][:6].all() and not PROV.masks["wpe"][6:].any()
    assert tuple(PROV.by_tensor()["wpe"]) == (6 * 48, 11 * 48, "rows 0–5 of 11")
    assert PROV.by_tensor()["lm_head.w"].ranges == "rows A of 3"
    assert "h[1].ln_2.out[10][0]" not in PROV and "h[1].ln_2.out[4][0]" in PROV


def test_len_iteration_and_masks_agree() -> None:
    names = list(PROV)
    assert len(names) == len(PROV) == len(set(names))
    assert names[0] == "tokens[0]" and TARGET in names
    assert sum(c.cells for c in PROV.by_tensor().values()) == len(PROV)
    sample = names[:: max(1, len(names) // 300)]
    assert all(n in PROV for n in sample)


def test_summary_explains_the_cone() -> None:
    text = PROV.summary()
    assert "Positions 0–5 of 11 are involved" in text
    assert "Positions 6–10 are not" in text and "causal mask" in text
    assert "h[0]: all 28,272 parameters" in text
    assert "lm_head.w 48/144" in text
    assert "h[0].attn.att[0][0][0]" in text and "cannot matter" in text
    assert "structural cone" in text and "value question" in text


def _tiny() -> Model:
    cfg = Config(n_layer=1, n_head=2, n_embd=4, block_size=4, vocab=("a", "b"), n_inner=8)
    return Model(cfg, random_params(cfg, seed=3))


def _oracle(sheet: dfgpt.Sheet) -> nx.DiGraph:
    """Every cell of every tensor, with an edge from each precedent, by brute force."""
    g = nx.DiGraph()
    for tensor in sheet.graph.order:
        for idx in np.ndindex(*sheet.engine.shape(tensor)):
            name = sheet.name(tensor, idx)
            g.add_node(name)
            if sheet.graph.specs[tensor].kind == "computed":
                for p in sheet.precedents(name):
                    g.add_edge(p, name)
    return g


TINY = _tiny().sheet("abb")
ORACLE = _oracle(TINY)


@pytest.mark.parametrize(
    "target", ["logit[2][a]", "prob[1][b]", "h[0].attn.att[1][2][1]", "h[0].ln_2.var[1]", "h[0].attn.y[0][3]"]
)
def test_cone_equals_networkx_ancestors_on_the_full_cell_graph(target: str) -> None:
    want = nx.ancestors(ORACLE, target) | {target}
    prov = provenance(TINY, target)
    assert set(prov) == want
    assert len(prov) == len(want)
    g = prov.to_networkx(max_cells=len(want))
    assert set(g.nodes) == want
    assert set(g.edges) == set(ORACLE.subgraph(want).edges)
    # completeness: every cell of the cone has a path of direct precedents to the target
    assert all(nx.has_path(g, n, target) for n in g.nodes)


@pytest.mark.parametrize("cell", ["wpe[1][2]", "tokens[1]", "h[0].attn.c_attn.w[5][1]", "h[0].attn.k[1][0][0]"])
def test_impact_equals_networkx_descendants(cell: str) -> None:
    want = nx.descendants(ORACLE, cell) | {cell}
    assert set(impact(TINY, cell)) == want


def test_completeness_on_the_sort_model() -> None:
    prov = provenance(SHEET, "h[0].attn.att[1][2][1]")
    g = prov.to_networkx(max_cells=3000)
    assert set(g.nodes) == set(prov)
    assert all(nx.has_path(g, n, "h[0].attn.att[1][2][1]") for n in g.nodes)


def test_a_list_selection_is_the_union() -> None:
    both = provenance(SHEET, ["logit[5][A]", "h[2].mlp.out[7][3]"])
    one, two = set(PROV), set(provenance(SHEET, "h[2].mlp.out[7][3]"))
    assert set(both) == one | two
    assert "wpe[7][0]" in both


def test_impact_of_a_position_embedding_row() -> None:
    imp = SHEET.impact("wpe[3][0]")
    assert "logit[3][B]" in imp and "logit[10][A]" in imp
    assert "logit[2][A]" not in imp and "h[0].attn.att[0][2][1]" not in imp
    assert "Positions 0–2 are not" in imp.summary()


def test_sheet_delegates_and_pins_stop_the_cone() -> None:
    s = MODEL.sheet("CABA")
    assert set(s.provenance("logit[3][A]")) == set(provenance(s, "logit[3][A]"))
    s.engine.pin("ln_f.out", (3, 0), 0.5)  # a pinned cell reads nothing
    prov = s.provenance("ln_f.out[3][0]")
    assert set(prov) == {"ln_f.out[3][0]"}
    assert "No position is involved" in s.provenance("temperature").summary()


def test_bad_input() -> None:
    with pytest.raises(UnknownNameError):
        provenance(SHEET, "logitz[5][A]")
    with pytest.raises(QueryError, match="empty"):
        provenance(SHEET, [])
    with pytest.raises(IndexError_, match="selects no cell"):
        provenance(SHEET, "logit[5][1:1]")
    with pytest.raises(IndexError_):
        provenance(SHEET, "logit[11][A]")
    with pytest.raises(UnknownNameError):
        _ = "wpx[0][0]" in PROV
    with pytest.raises(QueryError, match="max_cells"):
        PROV.to_networkx(max_cells=100)
    assert issubclass(QueryError, DfgptError)


def test_cli_why(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["why", "logit[5][A]", "--model", "sort-random", "--top", "5"]) == 0
    out = capsys.readouterr().out
    assert "Positions 0–5 of 6 are involved" in out and "top 5 cells" in out
    assert main(["why", "logit[5][A]", "--model", "sort-random", "--by", "head"]) == 0
    out = capsys.readouterr().out
    assert "h[0].head[0]" in out and "direct attribution" in out and "h[2].attn head 1" in out
    assert main(["why", "logit[5][Q]", "--model", "sort-random"]) == 2
    assert main(["why", "logit[5][A]", "--model", "sort-random", "--top", "0"]) == 2
