"""The explorer's circuit view (issue 30) and a console-clean tour of every view (issue 31).

Server tests ask the JSON API (Starlette's test client) and compare with the Python API
(`dfgpt.acdc`, `Circuit.picture`, `CircuitSheet.keep_only`); browser tests drive Chromium
against a real server: the circuit ACDC finds for sort, its nodes as links, a bad metric said
at its field, the keyboard path, the address opened in a second browser, and a tour of every
view on sort and on a small GPT-2 shape with no console error. The screenshots of the view
(1440 × 900 and 1024 × 768) go to docs/images/explorer/ with DFGPT_UPDATE_DOCS=1.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from serving import running
from starlette.testclient import TestClient
from test_explorer_browser import SHOTS, UPDATE, chromium, ready, renders, wait

import dfgpt
from dfgpt.circuits.circuit_sheet import CircuitSheet
from dfgpt.cli.main import main as cli_main
from dfgpt.interventions.metrics import parse_metric
from dfgpt.models.catalog import random_params
from dfgpt.server.app import create_app
from dfgpt.server.circuit import ACDC_LIMIT, SORT_PAIRS, load_circuits
from dfgpt.views.colors import COLORS

DOCS_EDGES = ["emb -> h[0].head[1].v", "h[0].head[1] -> h[0].mlp", "h[1].mlp -> logits", "h[0].mlp -> h[1].mlp",
              "h[0].mlp -> logits"]  # docs/circuits.md: ACDC's circuit of sort, by score
SMALL_GPT2 = dfgpt.Config(n_layer=4, n_head=4, n_embd=64, block_size=64, vocab_size=512, name="small-gpt2")
IDS = "464 206 75 218 180 62 262 169 329 13 198 464 206 75 218 180"  # 16 tokens of a 512-token vocabulary


@pytest.fixture(scope="module")
def model():
    return dfgpt.load("sort")


@pytest.fixture(scope="module")
def found(model):
    return dfgpt.acdc(model, list(SORT_PAIRS), "kl", threshold=0.1)


@pytest.fixture(scope="module")
def client(model):
    return TestClient(create_app({"sort": model}))


@pytest.fixture(scope="module")
def small():
    return dfgpt.Model(SMALL_GPT2, random_params(SMALL_GPT2, seed=0))


@pytest.fixture(scope="module")
def base(model, small):
    with running({"sort": model, "small-gpt2": small}) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium() as d:
        yield d


def console_errors(d: WebDriver) -> list[str]:
    return [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE"]


def shown_errors(d: WebDriver) -> dict[str, str]:
    return d.execute_script("return Object.fromEntries([...document.querySelectorAll('.field-error')]"
                            ".filter((e) => !e.hidden).map((e) => [e.id, e.textContent]))")


def open_page(d: WebDriver, url: str) -> None:
    d.get(url)
    ready(d, 0)


def act(d: WebDriver, do) -> None:
    n = renders(d)
    do()
    ready(d, n)


def api_calls(d: WebDriver) -> list[str]:
    """The /api/ requests the page made since the last call (the browser's resource timing)."""
    got = d.execute_script("const e = performance.getEntriesByType('resource').map((r) => r.name);"
                           "performance.clearResourceTimings(); return e;")
    return [u.split("/api/", 1)[1].split("?")[0] for u in got if "/api/" in u]


def kept_rows(d: WebDriver) -> list[str]:
    return [e.get_attribute("data-edge") for e in d.find_elements(By.CSS_SELECTOR, "#circuit-edges tr[data-edge]")]


# -- server ------------------------------------------------------------------------------------------
def test_the_circuit_view_of_sort_is_the_circuit_acdc_finds(client, found):
    r = client.post("/api/circuit", json={"model": "sort", "text": "CABACA"})  # sort's task pairs, kl, acdc at 0.1
    assert r.status_code == 200
    got = r.json()
    assert [e["edge"] for e in got["circuit"]["kept"]] == DOCS_EDGES
    assert sorted(DOCS_EDGES) == sorted(found.kept)
    assert [e["score"] for e in got["circuit"]["kept"]] == [found.score(e) for e in DOCS_EDGES]
    assert (got["circuit"]["n_edges"], got["circuit"]["value"], got["circuit"]["pairs"]) == (172, found.value, 4)
    assert got["circuit"]["curve"] == [list(p) for p in found.curve]
    svg = found.picture().pipe(format="svg").decode()
    assert got["picture"] == svg[svg.index("<svg"):]  # the same picture as `dfgpt circuit -o circuit.svg`
    assert got["curve"] == found.curve_svg()
    assert got["fields"] == {"pairs": [list(p) for p in SORT_PAIRS], "metric": "kl", "method": "acdc",
                             "threshold": 0.1, "top": None, "steps": None}
    assert got["keep"] is None and "page" not in got


def test_keep_only_runs_each_pair_with_only_the_circuit_s_edges(client, model, found):
    got = client.post("/api/circuit", json={"model": "sort", "text": "CABACA", "keep": True, "show": True}).json()
    assert got["page"]["text"] == "CABACA" and got["page"]["grids"] == []
    rows = got["keep"]["rows"]
    assert [(r["clean"], r["corrupted"]) for r in rows] == list(SORT_PAIRS)
    for row, (clean, bad) in zip(rows, SORT_PAIRS):
        sheet = CircuitSheet(model, clean)
        metric = parse_metric("kl", sheet)
        assert row["clean_metric"] == metric(sheet) == 0.0
        assert row["corrupted_metric"] == metric(model.sheet(bad))
        sheet.keep_only(found.kept, source=bad)
        assert row["circuit_metric"] == metric(sheet)
        assert row["circuit_prediction"] == row["clean_prediction"] == "B"  # docs/circuits.md: each pair still writes B
    assert got["keep"]["mean"] == pytest.approx(found.value, rel=1e-6)


@pytest.mark.parametrize(("fields", "field", "words"), [
    ({"metric": "kll"}, "metric", "unknown metric 'kll': expected one of"),
    ({"metric": "logit_diff:B,D"}, "metric", "'D' is not a token"),
    ({"pairs": [["CABACAAAA", "CACACAAA"]]}, "pairs", "one length"),
    ({"pairs": [["CABACAXAA", "CACACAAAA"]]}, "pairs", "pair 1's clean input"),
    ({"pairs": "CABACAAAA"}, "pairs", "expected a list of [clean, corrupted] pairs"),
    ({"method": "acdcc"}, "method", "expected one of acdc, eap, eap-ig"),
    ({"method": "acdc", "top": 5}, "top", "clear top, or choose eap or eap-ig"),
    ({"method": "eap", "threshold": "x"}, "threshold", "expected a finite number"),
    ({"method": "eap-ig", "steps": 0}, "steps", "expected 1..50"),
    ({"method": "eap", "threshold": 0.5, "top": 3}, "threshold", "give one of them"),
    ({"circuit": "nope"}, "circuit", "dfgpt serve --circuit"),
])
def test_a_bad_field_is_a_4xx_json_answer_naming_its_field(client, fields, field, words):
    r = client.post("/api/circuit", json={"model": "sort", "text": "CABACA", **fields})
    assert r.status_code == 400
    body = r.json()
    assert body["field"] == field and words in body["message"], body
    assert "Traceback" not in body["message"]


def test_acdc_over_more_edges_than_a_page_waits_for_is_refused_with_the_way_round():
    big = dfgpt.Config(n_layer=12, n_head=12, n_embd=24, block_size=16, vocab_size=64, name="wide")
    client = TestClient(create_app({"wide": dfgpt.Model(big, random_params(big, seed=0))}))
    r = client.post("/api/circuit", json={"model": "wide", "text": "1 2 3 4", "pairs": [["1 2 3 4", "1 2 3 5"]],
                                          "metric": "logit_diff:3,4"})
    assert r.status_code == 400 and r.json()["field"] == "method"
    assert "32,491 edges" in r.json()["message"] and f"{ACDC_LIMIT:,}" in r.json()["message"]
    assert "dfgpt serve --circuit" in r.json()["message"]


def test_a_saved_circuit_opens_by_its_file_name(model, found, tmp_path):
    path = found.save(tmp_path / "sort-b.json")
    circuits = load_circuits([path], {"sort": model})
    client = TestClient(create_app({"sort": model}, circuits=circuits))
    got = client.post("/api/circuit", json={"model": "sort", "text": "CABACA", "circuit": "sort-b"}).json()
    assert [e["edge"] for e in got["circuit"]["kept"]] == DOCS_EDGES
    assert got["fields"]["circuit"] == "sort-b" and got["fields"]["pairs"] == []
    got = client.post("/api/circuit", json={"model": "sort", "text": "CABACA", "circuit": "sort-b", "keep": True,
                                            "pairs": [list(p) for p in SORT_PAIRS[:2]]}).json()
    assert [r["clean"] for r in got["keep"]["rows"]] == [SORT_PAIRS[0][0], SORT_PAIRS[1][0]]  # the pairs it is given
    got = client.post("/api/circuit", json={"model": "sort", "text": "CABACA", "circuit": "sort-b",
                                            "keep": True}).json()
    assert got["fields"]["pairs"] == [list(p) for p in SORT_PAIRS]  # a saved circuit holds no pairs: sort's by default
    assert got["keep"]["mean"] == pytest.approx(found.value, rel=1e-6)
    with pytest.raises(dfgpt.DfgptError, match="not those of any served model"):
        load_circuits([path], {"aab": dfgpt.load("aab")})


def test_serve_opens_a_saved_circuit_and_prints_its_address(monkeypatch, capsys, found, tmp_path):
    apps = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: apps.append(app))
    path = found.save(tmp_path / "sort-b.json")
    assert cli_main(["serve", "--circuit", str(path), "--port", "8123"]) == 0
    assert "circuit sort-b: http://127.0.0.1:8123/?model=sort&view=circuit&circuit=sort-b" in capsys.readouterr().out
    got = TestClient(apps[0], base_url="http://127.0.0.1").post(
        "/api/circuit", json={"model": "sort", "text": "CABACA", "circuit": "sort-b"}).json()
    assert [e["edge"] for e in got["circuit"]["kept"]] == DOCS_EDGES
    assert cli_main(["serve", "--model", "aab", "--circuit", str(path)]) == 2 and len(apps) == 1
    assert "its 172 edges are not those of any served model (aab)" in capsys.readouterr().err


def test_the_picture_is_drawn_in_the_one_colour_map(found):
    dot = found.dot()
    used = set(re.findall(r'(?:fillcolor|color)="(#[0-9a-f]{6})"', dot))
    assert used <= {COLORS[k] for k in ("circuit_head", "circuit_mlp", "circuit_node", "edge_positive",
                                        "edge_negative")}
    assert {COLORS["circuit_head"], COLORS["circuit_mlp"], COLORS["edge_positive"]} <= used
    assert COLORS["edge_positive"] in found.curve_svg() and COLORS["edge_negative"] in found.curve_svg()


# -- browser ------------------------------------------------------------------------------------------
def test_the_circuit_view_in_chromium_shows_acdc_s_edges_and_its_nodes_open_their_views(browser, base, found):
    d = browser
    open_page(d, f"{base}/?model=sort&text=CABACA")
    api_calls(d)
    d.execute_script("window.BUSY = 0; new MutationObserver(() => { if (!document.getElementById('busy').hidden) "
                     "window.BUSY++; }).observe(document.getElementById('busy'), {attributes: true});")
    act(d, lambda: d.find_element(By.ID, "circuit-start").click())
    assert kept_rows(d) == DOCS_EDGES
    assert api_calls(d) == ["circuit"]  # one request per interaction, with the busy indicator while it runs
    assert d.execute_script("return window.BUSY") >= 1
    act(d, lambda: d.find_element(By.ID, "circuit-keep").click())
    assert api_calls(d) == ["circuit"] and len(d.find_elements(By.CSS_SELECTOR, "#circuit-keep-table tr")) == 6
    scores = [float(e.get_attribute("data-score"))
              for e in d.find_elements(By.CSS_SELECTOR, "#circuit-edges td[data-score]")]
    assert scores == [found.score(e) for e in DOCS_EDGES]
    assert d.find_element(By.ID, "circuit-kept").text == "5"
    assert d.find_element(By.ID, "circuit-faith").text == "100%"
    nodes = {a.get_attribute("data-node") for a in d.find_elements(By.CSS_SELECTOR, "#circuit-picture a.circuit-node")}
    assert nodes == {"emb", "h[0].head[1]", "h[0].mlp", "h[1].mlp", "logits"}
    assert "view=circuit" in d.current_url and "method=acdc" in d.current_url
    act(d, lambda: d.find_element(By.CSS_SELECTOR, '#circuit-picture a[data-node="h[0].head[1]"]').click())
    assert re.search(r"view=head&block=0&head=1", d.current_url) and "method=" not in d.current_url
    assert d.find_element(By.CSS_SELECTOR, 'td[data-cell="h[0].attn.att[1][5][0]"]')
    act(d, d.back)  # Back: the circuit again, as its address says
    assert kept_rows(d) == DOCS_EDGES
    act(d, lambda: d.find_element(By.CSS_SELECTOR, '#circuit-edges a[data-node="h[1].mlp"]').click())
    assert "view=block&block=1" in d.current_url


def test_a_new_input_or_an_undo_on_the_circuit_view_keeps_the_circuit(browser, base):
    d = browser
    open_page(d, f"{base}/?model=sort&text=CABACA&view=circuit")
    box = d.find_element(By.ID, "text")
    box.clear()
    act(d, lambda: box.send_keys("CBACBA", Keys.ENTER))  # a token edit of the sheet: its receipt, the circuit stays
    assert shown_errors(d) == {} and kept_rows(d) == DOCS_EDGES and "text=CBACBA" in d.current_url
    act(d, lambda: d.find_element(By.TAG_NAME, "body").send_keys(Keys.CONTROL, "z"))
    assert shown_errors(d) == {} and kept_rows(d) == DOCS_EDGES and "text=CABACA" in d.current_url
    assert "view=circuit" in d.current_url


def test_a_bad_metric_is_said_at_its_field_and_fixed_there(browser, base):
    d = browser
    open_page(d, f"{base}/?model=sort&text=CABACA&view=circuit")
    box = d.find_element(By.ID, "circuit-metric")
    box.clear()
    box.send_keys("kll")
    n = renders(d)
    d.find_element(By.ID, "circuit-run").click()
    wait(d, lambda d: renders(d) > n)
    errors = shown_errors(d)
    assert list(errors) == ["metric-error"] and "unknown metric 'kll'" in errors["metric-error"]
    assert d.find_element(By.ID, "circuit-metric").get_attribute("aria-invalid") == "true"
    assert d.find_element(By.ID, "circuit-metric").get_attribute("value") == "kll"  # kept, to be fixed
    box = d.find_element(By.ID, "circuit-metric")
    box.clear()
    box.send_keys("kl")
    act(d, lambda: d.find_element(By.ID, "circuit-run").click())
    assert shown_errors(d) == {} and kept_rows(d) == DOCS_EDGES
    open_page_errors = f"{base}/?model=sort&text=CABACA&view=circuit&metric=kll"  # a bad address: the form, the error
    d.get(open_page_errors)
    wait(d, lambda d: renders(d) > 0)
    assert "unknown metric" in wait(d, lambda d: d.find_element(By.ID, "metric-error").text or None)


def test_the_circuit_view_by_keyboard_alone(browser, base):
    d = browser
    open_page(d, f"{base}/?model=sort&text=CABACA")
    body = d.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)

    def tab_to(css: str, limit: int = 300) -> None:
        for _ in range(limit):
            if d.execute_script("return document.activeElement.matches(arguments[0])", css):
                return
            d.switch_to.active_element.send_keys(Keys.TAB)
        raise AssertionError(f"Tab never reached {css}")

    tab_to("#circuit-start")
    act(d, lambda: d.switch_to.active_element.send_keys(Keys.ENTER))
    assert kept_rows(d) == DOCS_EDGES
    tab_to("#circuit-keep")
    act(d, lambda: d.switch_to.active_element.send_keys(Keys.SPACE))  # the toggle: keep only these edges
    assert "keep=1" in d.current_url and len(d.find_elements(By.CSS_SELECTOR, "#circuit-keep-table tr")) == 6
    tab_to('#circuit-picture a.circuit-node[data-node="h[0].head[1]"]')
    act(d, lambda: d.switch_to.active_element.send_keys(Keys.ENTER))
    assert "view=head&block=0&head=1" in d.current_url


def test_a_saved_circuit_in_chromium_and_keeping_only_its_edges_on_sort_s_pairs(browser, model, found, tmp_path):
    d = browser
    circuits = load_circuits([found.save(tmp_path / "sort-b.json")], {"sort": model})
    with running({"sort": model}, circuits=circuits) as url:
        open_page(d, f"{url}/?model=sort&text=CABACA&view=circuit&circuit=sort-b")
        assert kept_rows(d) == DOCS_EDGES and "sort-b" in d.find_element(By.CSS_SELECTOR, "#circuit-form h2").text
        assert d.find_element(By.ID, "circuit-method").get_attribute("disabled")  # found already: nothing to choose
        act(d, lambda: d.find_element(By.ID, "circuit-sort-pairs").click())
        rows = d.find_elements(By.CSS_SELECTOR, "#circuit-keep-table td[data-value]")
        assert len(rows) == 4 and "circuit=sort-b" in d.current_url and "keep=1" in d.current_url
        assert float(d.find_element(By.ID, "circuit-keep-mean").text) == pytest.approx(found.value, rel=1e-3)


def test_the_address_of_a_circuit_shows_the_same_circuit_in_another_browser(browser, base, model):
    d = browser
    open_page(d, f"{base}/?model=sort&text=CABACA&view=circuit")
    d.find_element(By.CSS_SELECTOR, '#circuit-method option[value="eap-ig"]').click()
    top = d.find_element(By.ID, "circuit-top")
    top.clear()
    top.send_keys("5")
    metric = d.find_element(By.ID, "circuit-metric")
    metric.clear()
    metric.send_keys("logit_diff:B,C")
    act(d, lambda: d.find_element(By.ID, "circuit-run").click())
    act(d, lambda: d.find_element(By.ID, "circuit-keep").click())
    url = d.current_url
    assert "method=eap-ig" in url and "top=5" in url and "keep=1" in url and "metric=logit_diff:B,C" in url
    python = dfgpt.eap_ig(model, list(SORT_PAIRS), "logit_diff:B,C", top=5)
    want = sorted(python.kept, key=lambda e: -abs(python.score(e)))
    assert kept_rows(d) == want and "emb -> h[0].head[1].v" in want  # docs/circuits.md: EAP-IG finds head 1's edge
    mine = d.find_element(By.ID, "circuit-keep-mean").text
    with chromium(1024, 768) as other:  # a fresh browser: no cookie, no history
        open_page(other, url)
        assert kept_rows(other) == want
        assert other.find_element(By.ID, "circuit-keep-mean").text == mine
        assert other.find_element(By.ID, "circuit-method").get_attribute("value") == "eap-ig"
        assert other.find_element(By.ID, "circuit-top").get_attribute("value") == "5"
        assert other.current_url == url


# -- a tour of every view, and the screenshots ----------------------------------------------------------
def _tour(d: WebDriver, base: str, q: str, cell: str, weight: str, circuit: str) -> list[str]:
    """Every view of one model, as a user reaches them: each step's address, checked for shown errors."""
    seen = []
    steps = ["", "&view=block&block=1", "&view=head&block=1&head=2", "&view=tensor&tensor=logit",
             f"&cell={cell}", "&path=0", "&path=4", f"&view=circuit{circuit}"]
    for s in steps:
        open_page(d, f"{base}/?{q}{s}")
        assert shown_errors(d) == {}, s
        seen.append(d.current_url)
    open_page(d, f"{base}/?{q}&view=circuit{circuit}&keep=1")  # keep only the circuit's edges
    assert d.find_elements(By.CSS_SELECTOR, "#circuit-keep-table tr.mean")
    act(d, lambda: d.find_element(By.CSS_SELECTOR, "#circuit-picture a.circuit-node").click())  # a node opens its view
    open_page(d, f"{base}/?{q}&cell={cell}")
    act(d, lambda: (d.find_element(By.ID, "whatif-cell").send_keys(weight),  # edit, undo, redo
                    d.find_element(By.ID, "whatif-value").send_keys("-5", Keys.ENTER)))
    assert d.find_element(By.ID, "receipt-stale")
    act(d, lambda: d.find_element(By.ID, "undo").click())
    act(d, lambda: d.find_element(By.ID, "redo").click())
    act(d, lambda: d.find_element(By.ID, "step").click())  # generate one token
    act(d, lambda: d.find_element(By.CSS_SELECTOR, "a.go[data-home]").click())
    seen.append(d.current_url)
    return seen


def test_a_tour_of_every_view_on_sort_and_a_small_gpt2_shape_has_no_console_errors(browser, base):
    d = browser
    d.get_log("browser")
    _tour(d, base, "model=sort&text=CABACA", "logit[5][A]", "lm_head.w[A][26]", "")
    assert console_errors(d) == []
    seen = _tour(d, base, f"model=small-gpt2&text={IDS}", "logit[15][7]", "lm_head.w[7][3]",
                 "&method=eap&top=8&metric=logit_diff:7,8")
    assert console_errors(d) == []
    assert "text=" + IDS.replace(" ", "+") in seen[0]


@pytest.mark.parametrize("size", [(1440, 900), (1024, 768)])
def test_the_circuit_view_fits_both_window_sizes_and_its_screenshots(base, size, tmp_path):
    name = "circuit" if size == (1440, 900) else "circuit-narrow"
    with chromium(*size) as d:
        open_page(d, f"{base}/?model=sort&text=CABACA&view=circuit&keep=1")
        width = d.execute_script("return document.documentElement.clientWidth")
        over = d.execute_script("return [...document.querySelectorAll('#view .card')].filter((e) => "
                                "e.getBoundingClientRect().right > arguments[0] + 1).map((e) => e.id)", width)
        assert over == []  # every card within the window: the picture shrinks, wide tables scroll inside
        assert d.execute_script("return document.documentElement.scrollWidth") <= width
        d.execute_script("window.scrollTo(0, 0)")
        folder = SHOTS if UPDATE else tmp_path
        path = folder / f"{name}.png"
        d.save_screenshot(str(path))
        assert struct.unpack(">II", Path(path).read_bytes()[16:24]) == size


def test_the_page_s_circuit_script_ships_with_it(client):
    r = client.get("/static/circuit.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert "function viewCircuit" in r.text
    assert '<script src="/static/circuit.js"></script>' in client.get("/").text


def test_the_docs_show_the_circuit_view():
    text = (Path(__file__).resolve().parent.parent / "docs" / "explorer.md").read_text(encoding="utf-8")
    assert "images/explorer/circuit.png" in text and "images/explorer/circuit-narrow.png" in text
    assert "--circuit" in text and json.dumps("view=circuit")[1:-1] in text
