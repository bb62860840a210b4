"""Diagrams: golden DOT per level, rendering with Debian's dot, node budgets, bad input, docs current."""

import os
import re
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dfgpt
from dfgpt.cli import main as cli_main
from dfgpt.errors import DfgptError, IndexError_, QueryError, UnknownNameError
from dfgpt.models.catalog import random_params
from dfgpt.views.attention_map import attention_map
from dfgpt.views.cellgraph import draw_cells
from dfgpt.views.colors import COLORS, RenderError, fmt, summary, write
from dfgpt.views.render import DOCS, docs_model, draw, stages, text_view, write_docs

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from printed import first_difference
from reference import forward

GOLDEN = Path(__file__).parent / "golden"
DOCS_DIR = Path(__file__).parent.parent / "docs" / "images"
UPDATE = os.environ.get("DFGPT_UPDATE_GOLDEN") == "1"
TINY = dfgpt.Config(n_layer=2, n_head=2, n_embd=4, block_size=4, vocab=("a", "b"), name="tiny")


def tiny_model() -> dfgpt.Model:
    return dfgpt.Model(TINY, random_params(TINY, seed=1))


def tiny_sheet() -> dfgpt.Sheet:
    return tiny_model().sheet("abba")


@pytest.fixture(scope="module")
def sort_model():
    return docs_model()


def node_ids(source: str) -> list[str]:
    """Node statements of DOT source (not edges, not graph/node/edge defaults, not the legend)."""
    out = []
    for line in source.splitlines():
        m = re.match(r'^\s*("(?:[^"\\]|\\.)*"|[A-Za-z_][\w.]*) \[', line)
        if m and "->" not in line and m.group(1) not in ("graph", "node", "edge", "legend"):
            out.append(m.group(1).strip('"'))
    return out


def drawn_ids(source: str) -> list[str]:
    """Node ids and the ids of table rows (a block drawn as a table names each tensor's row)."""
    return node_ids(source) + [i for i in re.findall(r'<TD ID="([^"]+)"', source)]


def label_of(source: str, nid: str) -> str:
    for line in source.splitlines():
        if line.strip().startswith((f'"{nid}" [', f"{nid} [")):
            return re.search(r'label="((?:[^"\\]|\\.)*)"', line).group(1)
    raise KeyError(nid)


# -- golden DOT, one per level, for a tiny model -----------------------------------------------
def _golden_cases():
    return {
        "model": lambda: draw(tiny_model()),
        "model_expanded": lambda: draw(tiny_model(), expand=True),
        "block": lambda: draw(tiny_sheet(), "h[0]", level="block"),
        "head": lambda: draw(tiny_sheet(), "h[1].attn", level="head"),
        "cell": lambda: draw(tiny_sheet(), "logit[3][a]", level="cell", depth=2),
        "cell_budget": lambda: draw(tiny_sheet(), "logit[3][a]", level="cell", depth=6, max_nodes=12),
        "attention": lambda: attention_map(tiny_sheet()),
    }


@pytest.mark.parametrize("case", list(_golden_cases()))
def test_golden_dot(case):
    source = _golden_cases()[case]().source
    assert source == _golden_cases()[case]().source  # fresh model and sheet: byte-identical
    path = GOLDEN / f"{case}.dot"
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(source, encoding="utf-8")
    diff = first_difference(path.read_text(encoding="utf-8"), source)
    assert diff is None, f"regenerate with DFGPT_UPDATE_GOLDEN=1 ({case}): {diff}"


def test_golden_text_view():
    text = text_view(tiny_sheet(), "h[0].attn")
    path = GOLDEN / "text_h0_attn.txt"
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    assert first_difference(path.read_text(encoding="utf-8"), text) is None


# -- what the drawings say, checked against the reference forward -----------------------------
def _reference(sheet):
    model = sheet.model
    return forward(model.state_dict(), model.config.to_dict(), sheet.tokens)


def test_model_architecture_collapses_blocks_and_shows_shapes(sort_model):
    src = draw(sort_model).source
    ids = node_ids(src)
    assert "h[*].attn.att" in ids and not any(re.match(r"h\[\d\]", i) for i in ids)
    assert 'label="block h[0..2]  × 3"' in src
    assert "T×48 · embed" in label_of(src, "emb") and label_of(src, "wte") == "wte\\n3×48"
    assert 'label="next block"' in src  # block l reads block l-1: drawn as one loop edge
    expanded = drawn_ids(draw(sort_model, expand=True).source)
    blocks = ["h[0]", "h[1]", "h[2]"]  # one table node per block, a row per tensor
    assert len(expanded) == len(sort_model.graph.specs) + 3  # every tensor once: a node or a row
    assert set(expanded) == set(sort_model.graph.specs) | set(blocks)


def test_block_values_are_summaries_of_the_reference_forward():
    sheet = tiny_sheet()
    ref = _reference(sheet)
    src = draw(sheet, "output", level="block").source
    assert summary(ref["logits"]) in label_of(src, "logit")
    src = draw(sheet, "h[1]", level="block").source
    assert summary(ref["hidden"][2]) in label_of(src, "h[1].out")
    assert label_of(src, "h[0].out").startswith("h[0].out")  # the block input, drawn dashed
    assert f'"h[0].out" [label="{label_of(src, "h[0].out")}" fillcolor="{COLORS["external"]}" style=dashed]' in src


def test_head_level_has_one_cluster_per_head_with_reference_values():
    sheet = tiny_sheet()
    ref = _reference(sheet)
    src = draw(sheet, "h[0].attn", level="head").source
    for h in range(TINY.n_head):
        assert f'subgraph "cluster_h[0].attn.head[{h}]"' in src
        for t in ("q", "k", "v", "score", "score_max", "exp_sum", "att"):
            assert f"h[0].attn.{t}[{h}]" in node_ids(src)
        assert summary(ref["q"][0][h]).replace(" mean", "\\nmean") in label_of(src, f"h[0].attn.q[{h}]")
        # each row of att sums to 1, so the mean over the T×T map is 1/T
        assert f"mean {fmt(1 / sheet.T)}" in label_of(src, f"h[0].attn.att[{h}]")
        assert f'"h[0].attn.att[{h}]" -> "h[0].attn.y"' in src
        assert f'"h[0].attn.mask" -> "h[0].attn.score[{h}]"' in src
    assert draw(sheet, "h[0]", level="head").source == src  # a block means its attention


def _brute_cone(sheet, cell, depth):
    """Cells within `depth` precedent steps, by name, through the public sheet API."""
    seen, frontier = {cell}, [cell]
    for _ in range(depth):
        nxt = []
        for c in frontier:
            if sheet.kind(c) == "computed":
                for p in sheet.precedents(c):
                    if p not in seen:
                        seen.add(p)
                        nxt.append(p)
        frontier = nxt
    return seen


@settings(max_examples=25, deadline=None)
@given(
    cell=st.sampled_from(["logit[3][a]", "h[1].attn.att[1][2][0]", "h[0].ln_1.out[2][3]", "prob[1][b]",
                          "h[1].mlp.gelu[3][7]", "emb[0][1]"]),
    depth=st.integers(0, 5),
    max_nodes=st.integers(2, 40),
)
def test_cell_drawing_never_exceeds_its_budget(cell, depth, max_nodes):
    sheet = tiny_sheet()
    dot = draw(sheet, cell, level="cell", depth=depth, max_nodes=max_nodes)
    ids = node_ids(dot.source)
    assert len(ids) <= max_nodes
    assert dot.truncated == ("summarised" in ids) == ("summarised:" in dot.source)
    covered = set()
    for nid in ids:
        if nid == "summarised":
            continue
        cells = sheet.cells(nid)
        covered |= set(cells)
        lab = label_of(dot.source, nid)
        if len(cells) == 1:
            assert f"\\n= {fmt(sheet.value(nid))}\\n" in lab
    brute = _brute_cone(sheet, cell, depth)
    if not dot.truncated:
        assert brute <= covered  # every cell within depth is drawn, in a cell or a range node


def test_wide_fan_in_is_one_range_node(sort_model):
    sheet = sort_model.sheet("CABACA")
    ids = node_ids(draw(sheet, "logit[5][A]", depth=2).source)
    assert "ln_f.out[5][0:48]" in ids and "h[2].out[5][0:48]" in ids
    assert not any(re.fullmatch(r"ln_f\.out\[5\]\[\d+\]", i) for i in ids)
    big = draw(sheet, "logit[5][A]", depth=12, max_nodes=25)
    assert len(node_ids(big.source)) == 25 and big.truncated
    assert "max_nodes=25" in label_of(big.source, "summarised")


def _cone_object(sheet, cell):
    return SimpleNamespace(sheet=sheet, masks=sheet.engine.ancestors(sheet.masks(cell)))


def test_provenance_cone_counts(sort_model):
    sheet = sort_model.sheet("CABACA")
    for prov in (_cone_object(sheet, "logit[5][A]"), sheet.provenance("logit[5][A]")):
        src = draw(prov).source
        assert "288/528 cells in the cone" in label_of(src, "wpe")  # wpe rows 0..5 of 11, all 48 dims
        assert "1/18 cells in the cone" in label_of(src, "logit")
        assert "0/18 cells in the cone" in label_of(src, "prob")
        assert f'prob [label="{label_of(src, "prob")}" color="#bbbbbb" fillcolor="{COLORS["outside"]}"' in src
    infl = {"wte": 1.0, "emb": 4.0}
    src = draw(_cone_object(sheet, "logit[5][A]"), influence=infl).source
    assert re.search(r'emb \[[^\n]*penwidth=6\b', src) and re.search(r'wte \[[^\n]*penwidth=2.25\b', src)
    real = draw(sheet.provenance("logit[5][A]"), influence=sheet.influence("logit[5][A]")).source
    assert "penwidth=6" in real


def test_receipt_states():
    sheet = tiny_sheet()
    stale = sheet.engine.descendants(sheet.masks("wpe[2][1]"))
    receipt = SimpleNamespace(sheet=sheet, stale={k: v for k, v in stale.items() if k != "wpe"},
                              reused={"emb": 2}, unchanged={}, recomputed={"logit": 4}, pinned={})
    src = draw(receipt).source
    assert "stale 1" in label_of(src, "emb") and "reused 2" in label_of(src, "emb")
    assert f'logit [label="{label_of(src, "logit")}" fillcolor="{COLORS["recomputed"]}"]' in src
    assert f'emb [label="{label_of(src, "emb")}" fillcolor="{COLORS["stale"]}"]' in src
    assert "untouched" in label_of(src, "wte")


def test_pinned_cell_is_a_constant_in_the_cell_view():
    sheet = tiny_sheet()
    tensor, idx = sheet.cell("h[1].attn.att[0][2][1]")
    sheet.engine.pin(tensor, idx, 0.25)
    src = draw(sheet, "h[1].attn.att[0][2][1]", depth=3).source
    assert node_ids(src) == ["h[1].attn.att[0][2][1]"]  # reads nothing
    assert f'fillcolor="{COLORS["pinned"]}"' in src and "\\n= 0.25\\n" in src


def test_real_receipt():
    sheet = tiny_sheet()
    sheet.values("prob")
    receipt = sheet.set("wpe[2][1]", 0.5)
    receipt.settle()
    src = draw(receipt).source
    lab = label_of(src, "emb")
    assert "stale 1" in lab and "recomputed 1" in lab  # emb[2][1] = wte[b][1] + wpe[2][1]: one cell
    assert re.search(r'wpe \[[^\n]*color="#e0301e"[^\n]*penwidth=3', src)  # the edited tensor
    assert f"stale {receipt.stale_by_tensor['logit']}" in label_of(src, "logit")


def test_attention_map_values_and_png(tmp_path):
    sheet = tiny_sheet()
    ref = _reference(sheet)
    dot = attention_map(sheet, layer=1, path=tmp_path / "att.png")
    assert (tmp_path / "att.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cells = re.findall(r"<FONT COLOR=\"#[0-9a-f]+\">([0-9.]+)</FONT>", dot.source)
    want = [f"{ref['att'][1][h][t, s]:.2f}" for h in range(2) for t in range(4) for s in range(t + 1)]
    assert cells == want
    maps = dot.source.split('legend [')[0]
    assert maps.count(f'BGCOLOR="{COLORS["outside"]}"') == 2 * 6  # masked future keys


def test_text_view_one_line_per_tensor(sort_model):
    sheet = sort_model.sheet("CABACA")
    lines = text_view(sheet, "h[1].attn").splitlines()
    assert len(lines) == len(stages(sheet.graph)["h[1].attn"])
    assert lines[[ln.split()[0] for ln in lines].index("h[1].attn.score")].split() == [
        "h[1].attn.score", "3×6×6", "score", "h[1].attn.q,", "h[1].attn.k"]
    assert len(text_view(sort_model).splitlines()) == len(sort_model.graph.specs)


def test_every_sort_diagram_renders_to_svg_and_png(sort_model):
    if shutil.which("dot") is None:
        pytest.fail("Graphviz's dot is required for this test (apt-get install graphviz)")
    sheet = sort_model.sheet("CABACA")
    drawings = [draw(sort_model), draw(sort_model, expand=True), draw(sheet, "logit[5][A]", depth=3),
                draw(sheet.provenance("logit[5][A]")), attention_map(sheet)]
    drawings += [draw(sheet, "h[1]"), draw(sheet, "h[2].attn"), draw(sheet, "embedding"), draw(sheet, "ln_f")]
    drawings += [draw(sheet, f"h[{i}].attn", level="head") for i in (0, 1)]
    for dot in drawings:
        svg = dot.pipe(format="svg")
        titles = {t.text for t in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}title")}
        assert set(node_ids(dot.source)) <= titles
        assert dot.pipe(format="png")[:4] == b"\x89PNG"


# -- every level fits a 16:9 screen or slide at its default settings -----------------------------
GPT12 = dfgpt.Config(n_layer=12, n_head=12, n_embd=48, block_size=8, vocab=tuple("abcdefgh"), name="gpt12")


def png_size(dot) -> tuple[int, int]:
    """Width and height of the PNG Graphviz draws at its default 96 dpi (read from the IHDR chunk)."""
    data = dot.pipe(format="png")
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def every_level(model, text, cell):
    sheet, edited = model.sheet(text), model.sheet(text)
    edited.values("prob")
    receipt = edited.set("wpe[1][0]", 0.5).settle()
    return {
        "model": draw(model),
        "model expanded": draw(model, expand=True),
        "block": draw(sheet, "h[0]", level="block"),
        "head": draw(sheet, "h[0].attn", level="head"),
        "cell": draw(sheet, cell, level="cell", depth=2),
        "cone": draw(sheet.provenance(cell)),
        "receipt": draw(receipt, sheet=edited),
        "attention maps": attention_map(sheet),
    }


@pytest.mark.parametrize("which", ["sort", "gpt12"])
def test_every_level_fits_a_screen(which, sort_model):
    if which == "sort":
        model, text, cell = sort_model, "CABACA", "logit[5][A]"
    else:  # 12 layers and 12 heads like GPT-2 small, tiny widths: a few MB
        model, text, cell = dfgpt.Model(GPT12, random_params(GPT12, seed=0)), "abcdefgh", "logit[7][a]"
    for level, dot in every_level(model, text, cell).items():
        w, h = png_size(dot)
        assert max(w, h) <= 2500, f"{which} {level}: {w}×{h} px"
        assert 1 / 3 <= w / h <= 3, f"{which} {level}: {w}×{h} px"
        assert min(w, h) >= 400, f"{which} {level}: {w}×{h} px"  # drawn at full size, not shrunk
        assert not re.search(r"[\s\[](size|ratio)=", dot.source)  # laid out to fit, not scaled down


def test_model_flows_top_to_bottom_and_a_cell_cone_turns_to_fit(sort_model):
    sheet = sort_model.sheet("CABACA")
    assert "rankdir=TB" in draw(sort_model).source and "rankdir=TB" in draw(sheet, "h[0]").source
    assert "rankdir=LR" in draw(sheet, "logit[5][A]", depth=2).source  # many nodes on a level: a column each
    assert "rankdir=TB" in draw(sheet, "h[0].attn.y[5][16]", depth=1).source  # two long labels: a row
    label = label_of(draw(sheet, "h[0].mlp.gelu[5][0]", depth=1).source, "h[0].mlp.gelu[5][0]")
    assert max(len(line) for line in label.split("\\n")) <= 48  # a long formula wraps


def test_heads_are_drawn_in_order_left_to_right(sort_model):
    sheet = sort_model.sheet("CABACA")
    src = draw(sheet, "h[0].attn", level="head").source
    assert '{rank=same; "h[0].attn.q[0]" "h[0].attn.q[1]" "h[0].attn.q[2]"}' in src
    assert '"h[0].attn.q[0]" -> "h[0].attn.q[1]" [style=invis]' in src
    svg = ET.fromstring(draw(sheet, "h[0].attn", level="head").pipe(format="svg"))
    ns = "{http://www.w3.org/2000/svg}"
    x = {}
    for g in svg.iter(f"{ns}g"):
        title = g.find(f"{ns}title")
        if title is not None and re.fullmatch(r"h\[0\]\.attn\.q\[\d\]", title.text or ""):
            x[title.text] = float(g.find(f"{ns}text").get("x"))
    assert x["h[0].attn.q[0]"] < x["h[0].attn.q[1]"] < x["h[0].attn.q[2]"]


def test_many_heads_are_tables_in_rows_of_three():
    sheet = dfgpt.Model(GPT12, random_params(GPT12, seed=0)).sheet("abcdefgh")
    src = draw(sheet, "h[3].attn", level="head").source
    assert '{rank=same; "h[3].attn.head[0]" "h[3].attn.head[1]" "h[3].attn.head[2]"}' in src
    assert '"h[3].attn.head[2]" -> "h[3].attn.head[5]" [style=invis]' in src
    assert src.count('<TD ID="h[3].attn.att[') == 12  # every head's att names its row
    assert f"mean {fmt(1 / 8)}" in src  # each row of att sums to 1


def test_cone_summarises_per_block_and_collapses_alike_blocks(sort_model):
    sheet = sort_model.sheet("CABACA")
    src = draw(sheet.provenance("logit[5][A]")).source
    assert "h[0..1]" in node_ids(src) and "h[2]" in node_ids(src)  # blocks 0 and 1 read alike
    assert "h[0..1]  × 2, alike" in src
    assert "48/288 cells in the cone · positions 5 of 6" in src  # h[2].out: only the last position
    gpt = dfgpt.Model(GPT12, random_params(GPT12, seed=0)).sheet("abcdefgh")
    ids = node_ids(draw(gpt.provenance("logit[7][a]")).source)
    assert [i for i in ids if i.startswith("h[")] == ["h[0..10]", "h[11]"]


def test_blocks_are_in_order_in_rows_of_six():
    src = draw(dfgpt.Model(GPT12, random_params(GPT12, seed=0)), expand=True).source
    assert '{rank=same; "h[0]" "h[1]" "h[2]" "h[3]" "h[4]" "h[5]"}' in src
    assert '{rank=same; "h[6]" "h[7]" "h[8]" "h[9]" "h[10]" "h[11]"}' in src
    assert '"h[5]" -> "h[6]" [constraint=false]' in src  # the data flows on; the row wraps


def test_pictures_carry_a_legend_of_the_shared_colours(sort_model):
    sheet = sort_model.sheet("CABACA")
    for dot, keys in [(draw(sort_model), ("parameter", "input", "computed")),
                      (draw(sheet.provenance("logit[5][A]")), ("outside", "cone")),
                      (draw(sheet, "logit[5][A]", depth=1), ("parameter", "computed")),
                      (attention_map(sheet), ())]:
        legend = dot.source.split("\tlegend [", 1)[1]
        for k in keys:
            assert f'"{COLORS[k]}"' in legend
    assert "attention weight 0 → 1" in attention_map(sheet).source


# -- bad input ---------------------------------------------------------------------------------
def test_bad_input_lists_the_choices(tmp_path):
    sheet = tiny_sheet()
    with pytest.raises(UnknownNameError, match=r"Stages are embedding, h\[0\], .*Did you mean"):
        draw(sheet, "h[7]")
    with pytest.raises(QueryError, match="levels are model, block, head, cell"):
        draw(sheet, "h[0]", level="blok")
    with pytest.raises(UnknownNameError, match=r"Choose one of h\[0\].attn, h\[1\].attn"):
        draw(sheet, "h[0].mlp", level="head")
    with pytest.raises(UnknownNameError, match="stages are embedding"):
        draw(sheet, "logit[3][a]", level="block")
    with pytest.raises(IndexError_, match="selects more than one cell"):
        draw(sheet, "logit[3]", level="cell")
    with pytest.raises(IndexError_, match="out of range"):
        draw(sheet, "logit[9][a]")
    with pytest.raises(QueryError, match="max_nodes must be"):
        draw(sheet, "logit[3][a]", max_nodes=1)
    with pytest.raises(QueryError, match="depth must be"):
        draw(sheet, "logit[3][a]", depth=-1)
    with pytest.raises(QueryError, match="cannot draw a int"):
        draw(3)
    with pytest.raises(IndexError_, match="0..1"):
        attention_map(sheet, layer=2)
    with pytest.raises(RenderError, match=r"unknown picture format 'bmpx'; use one of .dot, .gv, .svg, .png"):
        write(draw(sheet.model), tmp_path / "x.bmpx")
    assert not (tmp_path / "x.bmpx").exists()


def test_missing_dot_still_gives_source(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    dot = draw(tiny_model())
    assert write(dot, tmp_path / "m.dot").read_text() == dot.source
    with pytest.raises(RenderError, match="apt-get install graphviz"):
        write(dot, tmp_path / "m.svg")
    assert issubclass(RenderError, DfgptError) and not (tmp_path / "m.svg").exists()


def test_cli(tmp_path, capsys):
    assert cli_main(["draw", "model", "--model", "sort-random", "-o", str(tmp_path / "m.dot")]) == 0
    assert (tmp_path / "m.dot").read_text() == draw(dfgpt.load("sort-random")).source
    capsys.readouterr()
    assert cli_main(["draw", "h[0].attn", "--model", "sort-random", "--level", "text"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[:3] for ln in lines if ln.startswith("h[0].attn.q ")] == [["h[0].attn.q", "3×6×16", "linear"]]
    assert cli_main(["draw", "logit[5][A]", "--model", "sort-random", "--depth", "1", "--max-nodes", "3"]) == 0
    assert len(node_ids(capsys.readouterr().out)) == 3
    assert cli_main(["draw", "h[0]", "--level", "attention", "--model", "sort-random",
                     "-o", str(tmp_path / "a.svg")]) == 0
    assert (tmp_path / "a.svg").read_bytes().startswith(b"<?xml")
    assert cli_main(["draw", "h[0].atn", "--model", "sort-random"]) == 2
    assert "Did you mean 'h[0].attn'" in capsys.readouterr().err


def test_cell_drawing_is_iterative_and_fast(sort_model):
    sheet = sort_model.sheet("CABACA")
    dot = draw_cells(sheet, "prob[5][C]", depth=40, max_nodes=400)  # deeper than the graph
    assert not dot.truncated and len(node_ids(dot.source)) <= 400
    assert "emb[5][0:48]" in node_ids(dot.source)


# -- docs/images are made by this code, and current ------------------------------------------
def test_docs_pictures_are_current(tmp_path):
    write_docs(tmp_path)
    for name in [*DOCS, "attention"]:
        fresh, shipped = tmp_path / f"{name}.dot", DOCS_DIR / f"{name}.dot"
        assert shipped.exists(), "run: python -m dfgpt.views.render --docs docs/images"
        diff = first_difference(shipped.read_text(), fresh.read_text())
        assert diff is None, f"docs/images/{name} is stale: python -m dfgpt.views.render ({diff})"
    version = re.search(rb"Generated by graphviz version ([^\n]*)-->", (tmp_path / "block.svg").read_bytes())
    for name in DOCS:
        shipped = (DOCS_DIR / f"{name}.svg").read_bytes()
        same_dot = (DOCS_DIR / f"{name}.dot").read_text() == (tmp_path / f"{name}.dot").read_text()
        if same_dot and version and version.group(0) in shipped:  # same DOT, same Graphviz: same SVG bytes
            assert shipped == (tmp_path / f"{name}.svg").read_bytes()
    assert (DOCS_DIR / "attention.png").read_bytes()[:4] == b"\x89PNG"
    assert np.array_equal(sorted(p.name for p in DOCS_DIR.iterdir() if p.suffix in (".svg", ".png")),
                          ["architecture.svg", "attention.png", "block.svg", "cell.svg", "head.svg"])
