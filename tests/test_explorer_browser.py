"""The explorer in a real browser: Debian's Chromium driven by Selenium against a running server.

The page is opened, `logit[5][A]` clicked, its value and formula read, a precedent followed,
a weight edited (the logit and the receipt change), the edit undone, the temperature slider
moved; every number read off the page is checked against the Python API. The screenshots of
docs/explorer.md are taken here: into a scratch folder on every run, and into
docs/images/explorer/ with DFGPT_UPDATE_DOCS=1 (like the other docs pictures).
"""

from __future__ import annotations

import os
import re
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from serving import running

import dfgpt
from dfgpt.generation.generate import sample_dist

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "docs" / "images" / "explorer"
UPDATE = os.environ.get("DFGPT_UPDATE_DOCS") == "1"
SIZE = (1400, 860)
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         "--hide-scrollbars",
         "--force-device-scale-factor=1", "--font-render-hinting=none", f"--window-size={SIZE[0]},{SIZE[1]}")
NAMES = ("overview", "block", "head", "cell", "edit", "generate", "narrow",  # the screenshots docs/explorer.md shows
         "architecture", "trace", "path",  # these three: taken by test_explorer_views.py
         "circuit", "circuit-narrow")  # these two: by test_explorer_circuit.py
NARROW = (1024, 768)


@pytest.fixture(scope="module")
def model():
    return dfgpt.load("sort")


@pytest.fixture(scope="module")
def base(model):
    with running({"sort": model, "aab": dfgpt.load("aab")}) as url:
        yield url


@contextmanager
def chromium(width: int = 1440, height: int = 900) -> Iterator[WebDriver]:
    """A fresh Chromium (its own profile: no cookie, no history) whose page is width × height whatever the
    window frame, its console recorded: every browser test starts its browser here."""
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for flag in FLAGS:
        if not flag.startswith("--window-size"):
            options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with tempfile.TemporaryDirectory() as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        try:
            yield driver
        finally:
            driver.quit()


@pytest.fixture(scope="module")
def browser():
    with chromium(*SIZE) as d:
        yield d


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return SHOTS if UPDATE else tmp_path_factory.mktemp("explorer")


def wait(driver: WebDriver, cond, timeout: float = 20):
    """cond's first truthy answer; an element replaced by a render while read is read again."""
    return WebDriverWait(driver, timeout, ignored_exceptions=[StaleElementReferenceException]).until(
        lambda d: cond(d))


def open_page(driver: WebDriver, url: str) -> None:
    driver.get(url)
    ready(driver, 0)


def ready(driver: WebDriver, before: int) -> int:
    """Wait until the page has rendered more times than `before`; the render count now."""
    def count(d):
        n = d.execute_script("return Number(document.body.dataset.ready || 0)")
        return n if n > before else None
    n = wait(driver, count)
    shown = driver.execute_script(
        "return [...document.querySelectorAll('.field-error')].filter((e) => !e.hidden).map((e) => e.textContent)")
    assert not shown, shown
    return n


def renders(driver: WebDriver) -> int:
    return int(driver.execute_script("return Number(document.body.dataset.ready || 0)"))


def text_of(driver: WebDriver, css: str, contains: str = "") -> str:
    return wait(driver, lambda d: next((e.text for e in d.find_elements(By.CSS_SELECTOR, css)
                                        if e.text and contains in e.text), None))


def shot(driver: WebDriver, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    driver.execute_script("window.scrollTo(0, 0)")
    ActionChains(driver).move_to_element(driver.find_element(By.ID, "home")).perform()  # no hover in the picture
    driver.save_screenshot(str(path))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == SIZE  # loosely compared: the same size, not the same pixels
    return path


def cell_value(driver: WebDriver) -> float:
    return float(wait(driver, lambda d: d.find_element(By.ID, "cell-value").get_attribute("data-value")))


def test_click_through_the_explorer(browser, base, model, shots):
    d = browser
    python = model.sheet("CABACA")
    open_page(d, f"{base}/?model=sort&text=CABACA")
    assert d.find_element(By.ID, "text").get_attribute("value") == "CABACA"
    flow = d.find_elements(By.CSS_SELECTOR, "table.flow td.tok")
    nxt = np.argmax(python.values("logit"), axis=-1)
    assert [e.text.split()[0] for e in flow[6:]] == [model.vocab[i] for i in nxt]
    shot(d, shots, "overview")

    # a block, then a head
    n = renders(d)
    d.find_element(By.CSS_SELECTOR, 'details[data-block="1"] summary a.go').click()
    n = ready(d, n)
    shot(d, shots, "block")
    d.find_element(By.CSS_SELECTOR, '.head-card[data-head="2"]').click()
    n = ready(d, n)
    att = d.find_element(By.CSS_SELECTOR, 'td[data-cell="h[1].attn.att[2][5][3]"]')
    assert float(att.get_attribute("data-value")) == python.value("h[1].attn.att[2][5][3]")
    att.click()
    wait(d, lambda d: "h[1].attn.att[2][5][3]" in d.find_element(By.ID, "cell-name").text)
    text_of(d, "#influence-table")
    shot(d, shots, "head")

    # the output tensor; click logit[5][A]; its value and formula are the Python API's
    d.find_element(By.CSS_SELECTOR, "a.go[data-home]").click()
    n = ready(d, n)
    # the cell click above rendered too, so the count may already be past n: wait for the overview itself
    wait(d, lambda d: d.find_element(By.CSS_SELECTOR, '.chip[data-tensor="logit"]')).click()
    n = ready(d, n)
    d.find_element(By.CSS_SELECTOR, 'td[data-cell="logit[5][A]"]').click()
    wait(d, lambda d: "logit[5][A]" in d.find_element(By.ID, "cell-name").text)
    assert cell_value(d) == python.value("logit[5][A]")
    assert float(d.find_element(By.ID, "cell-value").text) == python.value("logit[5][A]")
    assert d.find_element(By.ID, "cell-formula").text.replace("\n", " ") == python.formula("logit[5][A]")
    assert "cell=logit[5][A]" in d.current_url
    rows = text_of(d, "#influence-table")
    top = python.influence("logit[5][A]", top=10)
    assert [r.split()[0] for r in rows.splitlines()[1:]] == [i.cell for i in top]
    scores = [float(e.get_attribute("data-score"))
              for e in d.find_elements(By.CSS_SELECTOR, "#influence-table td[data-score]")]
    assert scores == [i.score for i in top]
    deps = d.find_element(By.ID, "cell-dependents").text.split()
    assert deps == python.dependents("logit[5][A]")
    text_of(d, "#cell-cone", "reads")
    assert f"{len(python.provenance('logit[5][A]')):,}" in d.find_element(By.ID, "cell-cone").text
    shot(d, shots, "cell")

    # follow a precedent
    first = python.precedents("logit[5][A]")[0]
    d.find_element(By.CSS_SELECTOR, f'#cell-precedents a[data-cell="{first}"]').click()
    n = ready(d, n)
    wait(d, lambda d: first in d.find_element(By.ID, "cell-name").text)
    assert cell_value(d) == python.value(first)
    assert d.find_element(By.ID, "cell-formula").text.replace("\n", " ") == python.formula(first)
    assert d.find_element(By.CSS_SELECTOR, f'td.selected[data-cell="{first}"]')

    # back to the logits; edit a weight: the logit and the receipt change, the changed cells light up
    open_page(d, f"{base}/?model=sort&text=CABACA&cell=logit[5][A]")
    n = renders(d)
    before = cell_value(d)
    d.find_element(By.ID, "whatif-cell").send_keys("lm_head.w[A][26]")
    d.find_element(By.ID, "whatif-value").send_keys("-5")
    d.find_element(By.ID, "whatif-set").click()
    n = ready(d, n)
    python.values("prob")
    receipt = python.set("lm_head.w[A][26]", -5.0).settle()
    wait(d, lambda d: cell_value(d) != before)
    assert cell_value(d) == python.value("logit[5][A]")
    got = {k: int(d.find_element(By.ID, f"receipt-{k}").text.replace(",", ""))
           for k in ("stale", "recomputed", "reused", "cutoff")}
    assert got == {"stale": receipt.stale, "recomputed": receipt.recomputed, "reused": receipt.reused,
                   "cutoff": receipt.cutoff}
    changed = {e.get_attribute("data-cell") for e in d.find_elements(By.CSS_SELECTOR, "td.changed")}
    assert changed == {f"logit[{t}][A]" for t in range(6)}
    for name in changed:
        shown = d.find_element(By.CSS_SELECTOR, f'td[data-cell="{name}"]')
        assert float(shown.get_attribute("data-value")) == python.value(name)
        assert abs(float(shown.text) - python.value(name)) <= 5e-4 * max(1.0, abs(python.value(name)))
    assert "flipped" in d.find_element(By.ID, "receipt").text
    shot(d, shots, "edit")

    # undo: the logit comes back, bit for bit
    d.find_element(By.ID, "undo").click()
    n = ready(d, n)
    python.undo()
    wait(d, lambda d: cell_value(d) == before)
    assert before == python.value("logit[5][A]")
    assert "undo set" in d.find_element(By.ID, "receipt-action").text
    assert not d.find_element(By.ID, "redo").get_attribute("disabled")

    # the temperature slider: the distribution follows as it moves
    slider = d.find_element(By.ID, "temperature")
    for _ in range(8):  # a key press moves a slider one step, 0.05, like a drag does
        slider.send_keys(Keys.ARROW_LEFT)
    t = float(slider.get_attribute("value"))
    assert t == 0.6
    wait(d, lambda d: d.find_element(By.ID, "temperature-out").text == f"{t:.2f}")

    def shown_dist(d):
        bars = d.find_elements(By.CSS_SELECTOR, "#dist .bar")
        p = {b.get_attribute("data-token"): float(b.get_attribute("data-p")) for b in bars}
        want = sample_dist(python.value("logit[5]"), t, None, None) if t > 0 else None
        return p if want is not None and p == {v: float(want[i]) for i, v in enumerate(model.vocab)} else None

    assert wait(d, shown_dist)
    # generation: one step appends one token
    d.find_element(By.ID, "step").click()
    n = ready(d, n)
    text = d.find_element(By.ID, "text").get_attribute("value")
    assert len(text) == 7 and text.startswith("CABACA")
    assert re.search(r"text=CABACA[ABC]", d.current_url)
    shot(d, shots, "generate")


def test_a_link_opens_its_cell_and_the_models_switch(browser, base, model):
    d = browser
    open_page(d, f"{base}/?model=sort&text=CBABBC&cell=h[0].attn.att[1][2][1]")
    assert "h[0].attn.att[1][2][1]" in d.find_element(By.ID, "cell-name").text
    assert cell_value(d) == model.sheet("CBABBC").value("h[0].attn.att[1][2][1]")
    n = renders(d)
    d.find_element(By.CSS_SELECTOR, '#model option[value="aab"]').click()
    n = ready(d, n)
    assert "model=aab" in d.current_url
    assert d.find_element(By.ID, "text").get_attribute("value") == "ababa"  # the input in aab's vocabulary
    # a new input, typed: the same length is a token edit with its receipt
    n = renders(d)
    d.find_element(By.CSS_SELECTOR, '#model option[value="sort"]').click()
    n = ready(d, n)
    box = d.find_element(By.ID, "text")
    box.clear()
    box.send_keys("CBACBA", Keys.ENTER)
    n = ready(d, n)
    assert "text=CBACBA" in d.current_url and "tokens[" in d.find_element(By.ID, "receipt-action").text
    chips = {e.get_attribute("data-tensor") for e in d.find_elements(By.CSS_SELECTOR, ".chip.stale-mark")}
    assert {"emb", "logit", "h[0].attn.att"} <= chips and "wte" not in chips
    d.get(f"{base}/?model=sort&text=CAXACA")  # a bad link says what is wrong, at the input field
    err = wait(d, lambda d: d.find_element(By.ID, "text-error").text or None)
    assert "vocabulary" in err and "'X'" in err


def test_a_shared_address_in_a_narrow_window(base, model, shots):
    """The address of an edited sheet, opened at 1024 × 768 in a fresh browser: one column, the badge, the numbers."""
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for flag in FLAGS:
        options.add_argument(flag if not flag.startswith("--window-size") else f"--window-size={NARROW[0]},{NARROW[1]}")
    with tempfile.TemporaryDirectory() as profile:
        options.add_argument(f"--user-data-dir={profile}")
        d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                              {"width": NARROW[0], "height": NARROW[1], "deviceScaleFactor": 1, "mobile": False})
            open_page(d, f"{base}/?model=sort&text=CABACA&view=head&block=1&head=2&cell=h[1].attn.att[2][5][3]"
                         "&temperature=0.6&edit=lm_head.w[A][26]=-5")
            python = model.sheet("CABACA")
            python.set("lm_head.w[A][26]", -5.0)
            assert cell_value(d) == python.value("h[1].attn.att[2][5][3]")
            assert d.find_element(By.ID, "badge-summary").text == "edited: 1 change"
            d.execute_script("document.querySelector('#badge details').open = true; window.scrollTo(0, 0)")
            path = shots / "narrow.png"
            d.save_screenshot(str(path))
            assert struct.unpack(">II", path.read_bytes()[16:24]) == NARROW
        finally:
            d.quit()


def test_the_docs_show_the_screenshots_these_tests_take():
    text = (ROOT / "docs" / "explorer.md").read_text(encoding="utf-8")
    shown = set(re.findall(r"images/explorer/([\w-]+)\.png", text))
    assert shown == set(NAMES)
    assert {p.stem for p in SHOTS.glob("*.png")} == set(NAMES)
