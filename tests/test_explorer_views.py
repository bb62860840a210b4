"""The explorer's architecture picture, its trace arrows and the learner's path, in Chromium and at the API.

The picture is checked against the graph it is drawn from (every tensor of the drawn block a
box coloured by its kind, every input an arrow, the family's own block: NeoX's attention and
MLP side by side, SwiGLU's gate beside its up projection); the trace against the Python API's
precedents, dependents and provenance; the path step by step against the values of the same
sheet. The screenshots of docs/explorer.md for these are taken here (into docs/images/explorer/
with DFGPT_UPDATE_DOCS=1), at 1440 × 900 and 1024 × 768.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from serving import running
from test_explorer_browser import SHOTS, UPDATE, chromium, open_page, ready, renders, wait

import dfgpt
from dfgpt.models.catalog import random_params
from dfgpt.server.architecture import architecture_json, tensor_of
from dfgpt.views.colors import COLORS

LLAMA = dfgpt.Config(n_layer=2, n_head=4, n_embd=32, block_size=16, vocab=("A", "B", "C", "D"), family="llama",
                     norm="rms", positions="rotary", mlp_kind="swiglu", n_kv_head=2, bias=False, qkv_bias=False,
                     proj_bias=False, mlp_bias=False, n_inner=64, name="llama-toy")
NEOX = dfgpt.Config(n_layer=2, n_head=4, n_embd=32, block_size=16, vocab=("A", "B", "C", "D"), family="gpt_neox",
                    parallel=True, positions="rotary", rotary_dim=4, n_inner=64, name="neox-toy")
WIDE, NARROW = (1440, 900), (1024, 768)


@pytest.fixture(scope="module")
def model():
    return dfgpt.load("sort")


@pytest.fixture(scope="module")
def base(model):
    models = {"sort": model, "llama": dfgpt.Model(LLAMA, random_params(LLAMA, 0)),
              "neox": dfgpt.Model(NEOX, random_params(NEOX, 0))}
    with running(models) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium(*WIDE) as d:
        yield d


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return SHOTS if UPDATE else tmp_path_factory.mktemp("views")


def size(driver, wh: tuple[int, int]) -> None:
    driver.set_window_size(*wh)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": wh[0], "height": wh[1], "deviceScaleFactor": 1, "mobile": False})


def picture(driver, folder, name: str, css: str | None = None) -> None:
    """A screenshot of the page, scrolled so that `css` is at the top; a PNG of the window's size."""
    if css:
        driver.execute_script("document.querySelector(arguments[0]).scrollIntoView()", css)
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def rgb(hex_: str) -> str:
    return "rgb({}, {}, {})".format(*(int(hex_[i:i + 2], 16) for i in (1, 3, 5)))


def boxes(driver) -> dict[str, str]:
    """The picture's boxes: tensor (or block) -> the fill it is drawn in."""
    return driver.execute_script("""const out = {};
        for (const a of document.querySelectorAll('#arch a.box'))
          out[a.dataset.tensor] = getComputedStyle(a.querySelector('rect')).fill;
        return out;""")


# -- the picture, at the API: the graph's own block ------------------------------------------------------------
def test_the_picture_draws_every_tensor_of_one_block_and_every_input_as_an_arrow(model):
    sheet = model.sheet("CABACA")
    a = architecture_json(sheet, 1)
    ids = {n["id"] for n in a["nodes"]}
    g = sheet.graph
    block = {n for n in g.order if n.startswith("h[1].")}
    assert block <= ids and {"h[0]", "h[2]", "emb", "ln_f.out", "logit", "prob", "lm_head.w"} <= ids
    assert not any(n.startswith(("h[0].", "h[2].")) for n in ids)  # the other blocks are one box each
    for n in block:
        for i in g.ops[n].ins if n in g.ops else ():
            src = i if i in ids else re.match(r"^h\[\d+\]", i).group(0)  # type: ignore[union-attr]
            assert [src, n] in a["edges"]
    rows = {n["id"]: n["row"] for n in a["nodes"]}
    order = ["emb", "h[0]", "h[1].ln_1.out", "h[1].attn.q", "h[1].attn.score", "h[1].attn.att", "h[1].attn.y",
             "h[1].attn.out", "h[1].mid", "h[1].ln_2.out", "h[1].mlp.fc", "h[1].mlp.gelu", "h[1].mlp.out", "h[1].out",
             "h[2]", "ln_f.out", "logit", "prob"]
    assert [rows[n] for n in order] == sorted(rows[n] for n in order) and len({rows[n] for n in order}) == len(order)
    assert rows["h[1].attn.q"] == rows["h[1].attn.k"] == rows["h[1].attn.v"] == rows["h[1].attn.c_attn.w"]
    kinds = {n["id"]: n["kind"] for n in a["nodes"]}
    assert kinds["h[1].attn.c_attn.w"] == "parameter" and kinds["tokens"] == "input" and kinds["h[0]"] == "block"
    width = {n["id"]: n["width"] for n in a["nodes"]}
    assert width["h[1].mlp.fc"] > width["h[1].attn.out"] > width["h[1].ln_1.mean"]  # sized by shape: 6x192 > 6x48 > 6


@pytest.mark.parametrize("cfg, side_by_side", [
    (NEOX, [("layers[0].attention.q", "layers[0].mlp.fc")]),  # the parallel residual: both read the block's input
    (LLAMA, [("layers[0].mlp.gate", "layers[0].mlp.up")]),  # SwiGLU: the gate beside the up projection
])
def test_the_picture_is_the_family_s_own_block(cfg, side_by_side):
    sheet = dfgpt.Model(cfg, random_params(cfg, 0)).sheet("ABCD")
    a = architecture_json(sheet, 0)
    rows = {n["id"]: n["row"] for n in a["nodes"]}
    for x, y in side_by_side:
        assert rows[x] == rows[y]
    assert a["prefix"] == "layers" and "layers[1]" in rows
    if cfg.parallel:  # NeoX: the MLP reads the block's input, not the stream after attention
        assert rows["layers[0].mlp.out"] < rows["layers[0].mid"]
    else:
        assert rows["layers[0].mlp.gated"] > rows["layers[0].mid"]


def test_a_cell_name_belongs_to_the_tensor_of_its_longest_prefix(model):
    sheet = model.sheet("CABACA")
    assert [tensor_of(sheet, c) for c in ("h[1].attn.q[0][2][3]", "logit[5][A]", "wte[C][0]", "tokens[2]")] == [
        "h[1].attn.q", "logit", "wte", "tokens"]


# -- in Chromium -----------------------------------------------------------------------------------------------------
def test_the_overview_shows_the_architecture_in_the_page_s_colours_and_every_box_opens_its_level(
        browser, base, model, shots):
    d = browser
    size(d, WIDE)
    open_page(d, f"{base}/?model=sort&text=CABACA")
    got = boxes(d)
    graph = model.graph
    for name, fill in got.items():
        kind = "cluster" if re.fullmatch(r"h\[\d\]", name) else graph.specs[name].kind
        assert fill == rgb(COLORS[kind]), name  # one colour map: dfgpt.views.colors.COLORS
    assert {n for n in graph.order if n.startswith("h[0].")} <= set(got) and {"h[1]", "h[2]"} <= set(got)
    hrefs = {a.get_attribute("data-tensor"): a.get_dom_attribute("href")
             for a in d.find_elements(By.CSS_SELECTOR, "#arch a.box")}
    assert "view=tensor" in hrefs["h[0].attn.q"] and "tensor=h[0].attn.q" in hrefs["h[0].attn.q"]
    assert "view=block" in hrefs["h[2]"] and "block=2" in hrefs["h[2]"]
    picture(d, shots, "architecture", "#arch-card")
    n = renders(d)
    d.find_element(By.CSS_SELECTOR, '#arch a.box[data-tensor="h[0].attn.q"]').click()
    ready(d, n)
    assert d.find_element(By.ID, "tensor-title").text.startswith("h[0].attn.q")
    n = renders(d)
    d.back()
    ready(d, n)
    n = renders(d)
    d.find_element(By.CSS_SELECTOR, '#arch a.box[data-tensor="h[2]"]').click()
    ready(d, n)
    assert d.find_element(By.CSS_SELECTOR, "#view h1").text.startswith("block h[2]")
    open_page(d, f"{base}/?model=sort&text=CABACA")
    n = renders(d)
    d.find_element(By.XPATH, "//*[name()='a' and @class='partlink'][.//*[name()='text' and text()='attn']]").click()
    ready(d, n)
    assert d.find_element(By.CSS_SELECTOR, "#view h1").text.startswith("block h[0]")  # a sub-layer: its heads


@pytest.mark.parametrize("name", ["neox", "llama"])
def test_the_overview_of_another_family_draws_its_block(browser, base, name):
    d = browser
    size(d, WIDE)
    open_page(d, f"{base}/?model={name}&text=ABCD")
    got = boxes(d)
    assert "layers[0].out" in got and "layers[1]" in got
    assert [e.text for e in d.find_elements(By.CSS_SELECTOR, "table.flow th a.tensor-link")][:3] == [
        "emb", "layers[0].out", "layers[1].out"]
    n = renders(d)
    d.find_element(By.CSS_SELECTOR, '#arch a.box[data-tensor="layers[1]"]').click()  # the block, with its heads
    ready(d, n)
    assert d.find_element(By.CSS_SELECTOR, "#view h1").text.startswith("block layers[1]")
    assert len(d.find_elements(By.CSS_SELECTOR, "a.head-card")) == 4
    n = renders(d)
    d.find_element(By.CSS_SELECTOR, 'a.head-card[data-head="3"]').click()
    ready(d, n)
    attn = "layers[1].self_attn" if name == "llama" else "layers[1].attention"
    assert [t.get_attribute("data-tensor") for t in d.find_elements(By.CSS_SELECTOR, "table.grid")] == [
        f"{attn}.{p}" for p in ("att", "score", "q", "k", "v")]
    open_page(d, f"{base}/?model={name}&text=ABCD&path=0")  # the path, by this family's names
    assert len(d.find_elements(By.CSS_SELECTOR, "#path a.dot")) == 3 + 4 * 2 + 3


def test_trace_arrows_are_the_cell_s_precedents_and_dependents_and_its_cone_is_outlined(browser, base, model, shots):
    d = browser
    size(d, WIDE)
    sheet = model.sheet("CABACA")
    cell = "h[1].attn.att[2][5][3]"
    open_page(d, f"{base}/?model=sort&text=CABACA&cell={cell}")  # the head's grid; the cell panel has the trace
    precedents = list(dict.fromkeys(tensor_of(sheet, c) for c in sheet.precedents(cell)))
    dependents = list(dict.fromkeys(tensor_of(sheet, c) for c in sheet.dependents(cell)))
    assert [a.text for a in d.find_elements(By.CSS_SELECTOR, "#trace-precedents a")] == precedents
    assert [a.text for a in d.find_elements(By.CSS_SELECTOR, "#trace-dependents a")] == dependents
    n = renders(d)
    d.find_element(By.ID, "trace-arch").click()
    ready(d, n)
    assert "view=overview" in d.current_url and "cell=h[1].attn.att[2][5][3]" in d.current_url
    assert len(d.find_elements(By.CSS_SELECTOR, "#arch > path.trace-in")) == len(precedents) == 3
    assert len(d.find_elements(By.CSS_SELECTOR, "#arch > path.trace-out")) == len(dependents) == 1
    assert d.find_element(By.CSS_SELECTOR, "#arch rect.traced").find_element(By.XPATH, "..").get_attribute(
        "data-tensor") == "h[1].attn.att"
    cone = {t for t, m in sheet.provenance(cell).masks.items() if np.any(m)}
    outlined = {r.find_element(By.XPATH, "..").get_attribute("data-tensor")
                for r in d.find_elements(By.CSS_SELECTOR, "#arch rect.in-cone")}
    drawn = set(boxes(d))
    assert outlined == {t for t in cone if t in drawn} | {"h[0]"}  # h[0]'s box holds the cone's cells of that block
    assert "h[1].attn.v" not in outlined and "h[2]" not in outlined  # the weights do not read v; h[2] comes after
    picture(d, shots, "trace", "#arch-card")


def test_the_learner_s_path_steps_through_one_token_on_the_real_cells(browser, base, model, shots):
    d = browser
    size(d, NARROW)
    text = "CABACAAA"  # six letters to sort, two of them already written
    sheet = model.sheet(text)
    open_page(d, f"{base}/?model=sort&text={text}")
    assert [e.get_attribute("class") for e in d.find_elements(By.CSS_SELECTOR, "table.flow tr:nth-child(2) td.tok")] \
        == ["tok prompt"] * 6 + ["tok generated"] * 2
    n = renders(d)
    d.find_element(By.ID, "path-start").click()
    ready(d, n)
    assert "sort reads 6 letters" in d.find_element(By.ID, "path-text").text
    steps, seen = 1, []
    while d.find_elements(By.ID, "path-next"):
        n = renders(d)
        d.find_element(By.ID, "path-next").click()
        ready(d, n)
        steps += 1
        name = re.search(r"[?&]cell=([^&]+)", d.current_url)
        assert name, d.current_url
        cell = name.group(1)
        seen.append(cell)
        value = float(wait(d, lambda d: d.find_element(By.ID, "cell-value").get_attribute("data-value")))
        assert value == sheet.value(cell), cell  # the number shown is the sheet's
        assert f"{cell} = " in d.find_element(By.ID, "path-value").text
        if cell == "h[1].attn.out[7][0]":
            picture(d, shots, "path")
    t = len(text) - 1
    pred = model.vocab[int(np.argmax(sheet.values("logit")[t]))]
    assert steps == 2 + 1 + 4 * model.config.n_layer + 3
    assert seen[:2] == [f"tokens[{t}]", f"emb[{t}][0]"] and seen[-1] == f"prob[{t}][{pred}]"
    assert f"h[2].attn.att[0][{t}][{t}]" in seen and f"h[2].out[{t}][0]" in seen
    # a number on the way can be edited, and the path stays where it was
    n = renders(d)
    d.find_element(By.CSS_SELECTOR, "#path a.dot:nth-of-type(3)").click()
    ready(d, n)
    field = d.find_element(By.ID, "edit-value")
    field.clear()
    n = renders(d)
    field.send_keys("2.5", Keys.ENTER)
    ready(d, n)
    assert float(d.find_element(By.ID, "cell-value").get_attribute("data-value")) == 2.5
    assert "step 3 of" in d.find_element(By.CSS_SELECTOR, "#path h2").text.lower() and "path=2" in d.current_url
    logs = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
    assert not logs, logs
    size(d, WIDE)


# -- speed: a receipt's numbers, worked out once per read state, are the numbers ------------------------------------
def test_a_receipt_s_numbers_follow_the_reads_after_it(model):
    sheet = model.sheet("CABACA")
    sheet.values("prob")
    r = sheet.set("lm_head.w[A][26]", -5.0)
    assert r.recomputed == 0  # nothing read yet (asking `flipped` would read the outputs: item 16 of #28)
    sheet.value("logit[5][A]")
    one = r.recomputed
    assert one > 0  # a read since: the numbers move with it, not a memo of the earlier state
    r.settle()
    assert r.recomputed >= one and r.max_change["prob"] is not None and r.flipped is not None
    fresh = model.sheet("CABACA")
    fresh.values("prob")
    again = fresh.set("lm_head.w[A][26]", -5.0).settle()
    assert (r.recomputed, r.reused, r.cutoff, r.max_change, r.flipped) == (
        again.recomputed, again.reused, again.cutoff, again.max_change, again.flipped)
