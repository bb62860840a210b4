"""The explorer's JSON API: the Python API's answers, 4xx JSON for every bad request, sessions apart and bounded."""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from serving import running
from starlette.testclient import TestClient

import dfgpt
from dfgpt.cli import main as cli_main
from dfgpt.generation.generate import sample_dist
from dfgpt.models.catalog import random_params
from dfgpt.server import app as app_module
from dfgpt.server.app import COOKIE, colors_css, create_app, load_models
from dfgpt.server.sessions import MAX_TEXT, SessionStore
from dfgpt.views.colors import COLORS

Q = {"model": "sort", "text": "CABACA"}


@pytest.fixture(scope="module")
def model():
    return dfgpt.load("sort")


@pytest.fixture(scope="module")
def app(model):
    return create_app({"sort": model, "aab": dfgpt.load("aab")})


@pytest.fixture
def client(app):
    return TestClient(app)


def same(got, want) -> bool:
    """A JSON number equals the Python float (non-finite ones travel as 'inf', '-inf', 'nan')."""
    if isinstance(got, str):
        return got == ("nan" if math.isnan(want) else "inf" if want > 0 else "-inf")
    return got == want


# -- the JSON API is the Python API -----------------------------------------------------------------
@pytest.mark.parametrize("name", ["logit[5][A]", "logit[5][0]", "h[0].attn.att[1][2][1]", "wte[A][0]", "tokens[2]",
                                  "h[0].attn.score[0][0][3]", "h[2].mlp.gelu[4][100]", "ln_f.var[5]", "prob[3][C]"])
def test_cell_is_the_python_api(client, model, name):
    sheet = model.sheet("CABACA")
    r = client.get("/api/cell", params={**Q, "name": name})
    assert r.status_code == 200
    got = r.json()
    assert set(got) == {"name", "value", "formula", "precedents", "dependents", "kind", "state"}
    canon = sheet.name(*sheet.cell(name))
    assert got["name"] == canon
    assert same(got["value"], sheet.value(canon))
    assert got["formula"] == sheet.formula(canon)
    assert got["precedents"] == sheet.precedents(canon)
    assert got["dependents"] == sheet.dependents(canon)
    assert (got["kind"], got["state"]) == (sheet.kind(canon), sheet.state(canon))


def test_cell_is_what_the_cli_prints(client, capsys):
    assert cli_main(["formula", "logit[5][A]", "--json"]) == 0
    assert client.get("/api/cell", params={**Q, "name": "logit[5][A]"}).json() == json.loads(capsys.readouterr().out)


def test_tensor_cone_influence_and_distribution_are_the_python_api(client, model):
    sheet = model.sheet("CABACA")
    t = client.get("/api/tensor", params={**Q, "name": "h[1].attn.att", "lead": 2}).json()
    assert np.array_equal(np.array(t["values"]), sheet.values("h[1].attn.att")[2])
    assert t["prefix"] == "h[1].attn.att[2]" and t["rows"] == [str(i) for i in range(6)]
    t = client.get("/api/tensor", params={**Q, "name": "logit"}).json()
    assert t["cols"] == ["A", "B", "C"] and np.array_equal(np.array(t["values"]), sheet.values("logit"))
    t = client.get("/api/tensor", params={**Q, "name": "h[0].mlp.c_fc.w", "r0": 128, "c0": 0}).json()
    assert np.array_equal(np.array(t["values"]), sheet.values("h[0].mlp.c_fc.w")[128:192, 0:64])
    cone = client.get("/api/cone", params={**Q, "name": "logit[5][A]", "tensor": "wpe"}).json()
    prov = sheet.provenance("logit[5][A]")
    assert np.array_equal(np.array(cone["mask"]), prov.masks["wpe"]) and cone["cells"] == len(prov)
    infl = client.get("/api/influence", params={**Q, "name": "logit[5][A]", "top": 10}).json()
    want = sheet.influence("logit[5][A]", top=10)
    assert [(i["cell"], i["value"], i["grad"], i["score"]) for i in infl["items"]] == [
        (i.cell, i.value, i.grad, i.score) for i in want]
    for temperature, top_k, top_p in [(1.0, None, None), (0.3, 2, None), (2.5, None, 0.5)]:
        params = {**Q, "temperature": temperature, "top_k": top_k or "", "top_p": top_p or ""}
        d = client.get("/api/dist", params=params).json()
        p = sample_dist(sheet.value("logit[5]"), temperature, top_k, top_p)
        assert {x["token"]: x["p"] for x in d["tokens"]} == {v: float(p[i]) for i, v in enumerate(model.vocab)}
    d = client.get("/api/dist", params={**Q, "temperature": 0}).json()
    assert [x["p"] for x in d["tokens"]] == [1.0, 0.0, 0.0] and d["tokens"][0]["token"] == "A"
    o = client.get("/api/overview", params=Q).json()
    assert [f["next"] for f in o["flow"]] == list(model.decode(np.argmax(sheet.values("logit"), -1).tolist()))
    assert o["flow"][2]["norms"][1] == float(np.linalg.norm(sheet.values("h[0].out")[2]))


def test_edits_receipts_undo_and_generation_are_the_python_api(client, model):
    sheet = model.sheet("CABACA")
    sheet.values("prob")
    client.get("/api/overview", params=Q)  # the page reads every output first, as the Python session did
    want = sheet.set("lm_head.w[A][26]", -5.0).settle()
    got = client.post("/api/set", json={**Q, "name": "lm_head.w[A][26]", "value": -5.0}).json()
    for key in ("action", "stale", "recomputed", "reused", "cutoff", "flipped", "stale_by_tensor"):
        assert got[key] == getattr(want, key), key
    assert got["cells"] == list(want.cells) and got["max_change"] == want.max_change
    assert got["history"] == {"undo": 1, "redo": 0}
    cell = client.get("/api/cell", params={**Q, "name": "logit[5][A]"}).json()
    assert cell["value"] == sheet.value("logit[5][A]") != model.sheet("CABACA").value("logit[5][A]")
    got = client.post("/api/undo", json=Q).json()
    want = sheet.undo().settle()
    assert (got["action"], got["stale"], got["history"]) == (want.action, want.stale, {"undo": 0, "redo": 1})
    assert client.get("/api/cell", params={**Q, "name": "logit[5][A]"}).json()["value"] == sheet.value("logit[5][A]")
    assert client.post("/api/redo", json=Q).json()["history"] == {"undo": 1, "redo": 0}
    got = client.post("/api/input", json={**Q, "new": "CACACA"}).json()  # same length: a token edit
    assert got["text"] == "CACACA" and got["history"]["undo"] == 2
    got = client.post("/api/step", json={**Q, "text": "CACACA", "temperature": 0}).json()
    sheet.redo()  # the edit is back: the greedy step follows the edited weights
    assert got["action"] == "append"
    assert got["text"] == "CACACA" + dfgpt.Model.of(sheet.to_model()).generate("CACACA", max_new_tokens=1)
    got = client.post("/api/input", json={**Q, "text": got["text"], "new": "CBA"}).json()
    assert got["text"] == "CBA" and got["kept_edits"] is True


def test_a_step_samples_like_generate(client, model):
    got = client.post("/api/step", json={**Q, "text": "CABAC", "temperature": 1.5, "top_k": 2, "seed": 7}).json()
    logits = model.sheet("CABAC").value("logit[4]")
    p = sample_dist(logits, 1.5, 2, None)
    draw = np.random.default_rng(7 + 5).random() * p.sum()
    assert got["token"] == model.vocab[int(np.searchsorted(np.cumsum(p), draw, side="right"))]


def test_the_page_and_its_colours_are_served_from_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and "<script src=\"/static/app.js\">" in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # no CDN: every asset comes from this server
    for name in ("app.js", "style.css"):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and "https://" not in r.text
    assert client.get("/api/colors").json()["parameter"] == COLORS["parameter"]
    css = client.get("/static/colors.css").text
    assert css == colors_css() and all(f"--{k}: {v};" in css for k, v in COLORS.items())


# -- bad requests: 4xx JSON with the DfgptError message, never a 500, never a traceback -------------
BAD = [
    ("GET", "/api/cell", {**Q, "name": "logit[5][D]"}, None, "TokenError"),
    ("GET", "/api/cell", {**Q, "name": "logits2[5][A]"}, None, "UnknownNameError"),
    ("GET", "/api/cell", {**Q, "name": "logit[9][A]"}, None, "BadIndexError"),
    ("GET", "/api/cell", {**Q, "name": "logit[5"}, None, "BadNameError"),
    ("GET", "/api/cell", Q, None, "QueryError"),  # no name
    ("GET", "/api/cell", {"model": "sort", "text": "CAXACA", "name": "logit[0][A]"}, None, "TokenError"),
    ("GET", "/api/cell", {"model": "sort", "text": "CABACABACABA", "name": "logit[0][A]"}, None,
     "SequenceLengthError"),
    ("GET", "/api/cell", {"model": "sort", "text": "C" * (MAX_TEXT + 1), "name": "logit[0][A]"}, None, "QueryError"),
    ("GET", "/api/cell", {"model": "sort", "text": "", "name": "logit[0][A]"}, None, "QueryError"),
    ("GET", "/api/cell", {"model": "../../etc/passwd", "text": "CABACA", "name": "logit[0][A]"}, None,
     "UnknownNameError"),
    ("GET", "/api/tensor", {**Q, "name": "h[0].attn.att", "lead": 7}, None, "BadIndexError"),
    ("GET", "/api/tensor", {**Q, "name": "logit", "r0": "x"}, None, "QueryError"),
    ("GET", "/api/tensor", {**Q, "name": "logit", "r0": 600}, None, "BadIndexError"),
    ("GET", "/api/influence", {**Q, "name": "logit[5][A]", "by": "magic"}, None, "QueryError"),
    ("GET", "/api/influence", {**Q, "name": "logit[5][A]", "top": 0}, None, "QueryError"),
    ("GET", "/api/dist", {**Q, "temperature": "-1"}, None, "QueryError"),
    ("GET", "/api/dist", {**Q, "temperature": "nan"}, None, "QueryError"),
    ("GET", "/api/dist", {**Q, "top_p": "2"}, None, "QueryError"),
    ("GET", "/api/nothing", Q, None, "UnknownNameError"),
    ("GET", "/api/set", Q, None, "QueryError"),
    ("POST", "/api/set", None, b"{not json", "QueryError"),
    ("POST", "/api/set", None, b"[1, 2]", "QueryError"),
    ("POST", "/api/set", None, b"\xff\xfe", "QueryError"),
    ("POST", "/api/set", None, json.dumps({**Q, "name": "wpe[0][0]", "value": "abc"}).encode(), "EditError"),
    ("POST", "/api/set", None, json.dumps({**Q, "name": "wpe[0][0]", "value": 1e400}).encode(), "EditError"),
    ("POST", "/api/set", None, json.dumps({**Q, "name": "wpe[0][0]", "value": [1]}).encode(), "QueryError"),
    ("POST", "/api/set", None, json.dumps({**Q, "name": "tokens[0]", "value": "Z"}).encode(), "TokenError"),
    ("POST", "/api/set", None, json.dumps({**Q, "name": 5, "value": 1}).encode(), "QueryError"),
    ("POST", "/api/set", None, b"{\"text\": \"" + b"C" * 70000 + b"\"}", "QueryError"),
    ("POST", "/api/undo", None, json.dumps(Q).encode(), "EditError"),
    ("POST", "/api/redo", None, json.dumps(Q).encode(), "EditError"),
    ("POST", "/api/input", None, json.dumps({**Q, "new": "CAD"}).encode(), "TokenError"),
    ("POST", "/api/step", None, json.dumps({**Q, "text": "CABACABACABA"}).encode(), "SequenceLengthError"),
    ("POST", "/api/step", None, json.dumps({**Q, "top_k": True}).encode(), "QueryError"),
]


@pytest.mark.parametrize(("method", "path", "params", "body", "error"), BAD,
                         ids=[f"{b[4]}-{i}" for i, b in enumerate(BAD)])
def test_every_bad_request_is_a_4xx_json_error(client, method, path, params, body, error):
    r = client.request(method, path, params=params, content=body)
    assert 400 <= r.status_code < 500
    got = r.json()
    assert set(got) == {"error", "message"} and got["error"] == error and got["message"]
    assert "Traceback" not in r.text and "File \"" not in r.text


def test_the_error_message_is_the_python_api_s(client, model):
    with pytest.raises(dfgpt.DfgptError) as e:
        model.sheet("CABACA").value("logit[5][D]")
    assert client.get("/api/cell", params={**Q, "name": "logit[5][D]"}).json()["message"] == str(e.value)


def test_unknown_paths_and_files_are_json_404s(client):
    for path in ("/nothing", "/static/../dfgpt/server/app.py", "/static/sessions.py", "/api/"):
        r = client.get(path)
        assert r.status_code == 404 and r.json()["error"] and "Traceback" not in r.text


# -- sessions: kept apart, one request at a time each, bounded, expiring ---------------------------------
def test_each_browser_has_its_own_sheet(app, model):
    a, b = TestClient(app), TestClient(app)
    base = model.sheet("CABACA").value("logit[5][A]")
    a.post("/api/set", json={**Q, "name": "lm_head.w[A][26]", "value": -5.0})
    assert a.get("/api/cell", params={**Q, "name": "logit[5][A]"}).json()["value"] != base
    assert b.get("/api/cell", params={**Q, "name": "logit[5][A]"}).json()["value"] == base
    assert a.cookies.get(COOKIE) != b.cookies.get(COOKIE)


def _script(i: int) -> list[tuple[str, str, dict]]:
    """One user's session: edits and reads, different per user."""
    cell = f"lm_head.w[{'ABC'[i % 3]}][{i}]"
    return [("POST", "set", {**Q, "name": cell, "value": 0.5 + i}),
            ("GET", "cell", {**Q, "name": "logit[5][A]"}),
            ("POST", "set", {**Q, "name": f"wpe[{i % 6}][{i}]", "value": -1.0 - i}),
            ("GET", "cell", {**Q, "name": f"logit[{i % 6}][B]"}),
            ("GET", "influence", {**Q, "name": "logit[5][C]", "top": 3}),
            ("POST", "undo", Q),
            ("GET", "cell", {**Q, "name": "logit[5][C]"}),
            ("GET", "dist", {**Q, "temperature": 0.7})]


def _play(base: str, i: int) -> list:
    out = []
    with httpx.Client(base_url=base, timeout=60) as c:
        for method, verb, params in _script(i):
            r = c.get(f"/api/{verb}", params=params) if method == "GET" else c.post(f"/api/{verb}", json=params)
            body = r.json()
            out.append((r.status_code, {k: v for k, v in body.items() if k != "history"}))
    return out


def test_concurrent_sessions_give_the_serial_answers(model):
    users = 8
    with running({"sort": model}) as base:
        serial = [_play(base, i) for i in range(users)]
        with ThreadPoolExecutor(users) as pool:
            concurrent = list(pool.map(lambda i: _play(base, i), range(users)))
    assert concurrent == serial
    assert all(code == 200 for run in serial for code, _ in run)


def test_one_session_takes_one_request_at_a_time(model):
    """Many concurrent edits and reads on ONE session: the sheet ends where the serial run ends."""
    cells = [f"lm_head.w[B][{i}]" for i in range(24)]
    with running({"sort": model}) as base, httpx.Client(base_url=base, timeout=60) as c:
        c.get("/api/overview", params=Q)

        def hit(i: int) -> int:
            r = c.post("/api/set", json={**Q, "name": cells[i], "value": 0.25 * i})
            c.get("/api/cell", params={**Q, "name": "logit[5][B]"})
            return r.status_code

        with ThreadPoolExecutor(12) as pool:
            assert set(pool.map(hit, range(len(cells)))) == {200}
        got = c.get("/api/cell", params={**Q, "name": "logit[5][B]"}).json()["value"]
        hist = c.get("/api/overview", params=Q).json()["history"]
    sheet = model.sheet("CABACA")
    for i, name in enumerate(cells):
        sheet.set(name, 0.25 * i)
    assert got == sheet.value("logit[5][B]") and hist == {"undo": len(cells), "redo": 0}


def test_sessions_are_bounded_and_expire_when_idle(model):
    now = [0.0]
    store = SessionStore({"sort": model}, max_sessions=3, idle_seconds=60, clock=lambda: now[0])
    s = [store.get(None) for _ in range(3)]
    assert len(store) == 3
    store.get(None)  # a fourth: the least recently used goes
    assert s[0].sid not in store and len(store) == 3
    now[0] = 30.0
    store.get(s[2].sid)
    now[0] = 80.0  # s[1] and the fourth idle 80 s, s[2] 50 s
    store.get(s[2].sid)
    assert len(store) == 1 and s[2].sid in store
    with pytest.raises(dfgpt.DfgptError):
        SessionStore({"sort": model}, max_sessions=0)


def test_a_dropped_session_starts_afresh(model):
    app = create_app({"sort": model}, max_sessions=2)
    a = TestClient(app)
    a.post("/api/set", json={**Q, "name": "lm_head.w[A][26]", "value": -5.0})
    old = a.cookies.get(COOKIE)
    for _ in range(2):
        TestClient(app).get("/api/models")
    assert len(app.state.store) == 2
    r = a.get("/api/cell", params={**Q, "name": "logit[5][A]"})
    assert r.json()["value"] == model.sheet("CABACA").value("logit[5][A]") and a.cookies.get(COOKIE) != old


# -- start-up ---------------------------------------------------------------------------------------------
def test_models_load_at_start_up_by_name_or_path(tmp_path, model):
    model.save(tmp_path / "mine")
    models = load_models(["sort", str(tmp_path / "mine"), str(tmp_path / "mine")])
    assert list(models) == ["sort", "mine", "mine-2"]
    c = TestClient(create_app(models))
    assert [m["name"] for m in c.get("/api/models").json()["models"]] == ["sort", "mine", "mine-2"]
    got = c.get("/api/cell", params={"model": "mine", "text": "CABACA", "name": "logit[5][A]"}).json()
    assert got["value"] == model.sheet("CABACA").value("logit[5][A]")


def test_serve_binds_to_this_machine_and_warns_for_another_host(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: calls.append(kw))
    assert cli_main(["serve", "--port", "8123"]) == 0
    out = capsys.readouterr()
    assert calls[-1]["host"] == "127.0.0.1" and calls[-1]["port"] == 8123
    assert "http://127.0.0.1:8123/" in out.out and "warning" not in out.err
    app_module.serve({"sort": dfgpt.load("sort-random")}, host="0.0.0.0", port=8124)
    out = capsys.readouterr()
    assert calls[-1]["host"] == "0.0.0.0" and "warning" in out.err
    assert cli_main(["serve", "--port", "0"]) == 2


def test_influence_is_remembered_per_sheet_state_only(client, model):
    q = {**Q, "name": "logit[5][A]", "top": 3}
    first = client.get("/api/influence", params=q).json()
    assert client.get("/api/influence", params=q).json() == first
    client.post("/api/set", json={**Q, "name": "ln_f.g[26]", "value": 3.0})
    edited = model.sheet("CABACA")
    edited.set("ln_f.g[26]", 3.0)
    got = client.get("/api/influence", params=q).json()
    want = edited.influence("logit[5][A]", top=3)
    assert got != first and [i["score"] for i in got["items"]] == [i.score for i in want]
    client.post("/api/undo", json=Q)
    assert client.get("/api/influence", params=q).json() == first


def test_a_local_server_answers_only_its_own_host_names(model):
    app = create_app({"sort": model}, hosts=["127.0.0.1", "localhost", "[::1]"])
    c = TestClient(app, base_url="http://127.0.0.1:8000")
    assert c.get("/api/cell", params={**Q, "name": "logit[5][A]"}).status_code == 200
    assert TestClient(app, base_url="http://[::1]:8000").get("/api/models").status_code == 200
    r = TestClient(app, base_url="http://evil.example:8000").get("/api/models")  # DNS rebinding
    assert r.status_code == 421 and r.json()["error"] == "HostError"


def test_a_checkpoint_without_a_tokenizer_takes_ids(tmp_path):
    cfg = dfgpt.Config(n_layer=1, n_head=2, n_embd=8, block_size=8, vocab_size=20, name="ids")
    dfgpt.Model(cfg, random_params(cfg, seed=0)).save(tmp_path / "ids")
    models = load_models([str(tmp_path / "ids")])
    c = TestClient(create_app(models))
    got = c.get("/api/cell", params={"model": "ids", "text": "3 4 19", "name": "logit[2][7]"}).json()
    assert got["value"] == models["ids"].sheet([3, 4, 19]).value("logit[2][7]")
    assert c.get("/api/models").json()["models"][0]["tokenizer"] == "ids"
    for bad in ("hello", "3 25", "3 -1"):
        r = c.get("/api/cell", params={"model": "ids", "text": bad, "name": "logit[0][0]"})
        assert r.status_code == 400 and r.json()["error"] in ("TokenError", "BadIndexError"), r.json()
    r = c.post("/api/step", json={"model": "ids", "text": "3 4 19", "temperature": 0})
    assert r.status_code == 200 and len(r.json()["text"].split()) == 4
