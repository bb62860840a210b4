"""Issue 28: the explorer's sessions, limits and errors (items 3, 4, 11, 12); config files read whole (item 2)."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import numpy as np
import pytest
from serving import running
from starlette.testclient import TestClient

import dfgpt
import dfgpt.models.checkpoints
from dfgpt.cli import main as cli_main
from dfgpt.core.config import FILE_FIELDS, MissingFieldError
from dfgpt.server.app import COOKIE, MAX_BODY, create_app
from dfgpt.server.sessions import SessionStore

Q = {"model": "sort", "text": "CABACA"}
EDIT = {**Q, "name": "lm_head.w[A][26]", "value": -5.0}


@pytest.fixture(scope="module")
def model():
    return dfgpt.load("sort")


# -- item 3: only a request that succeeds makes a session -------------------------------------------
BAD_NO_COOKIE = [
    ("GET", "/api/cell", {**Q, "name": "logit[5][D]"}, None),
    ("GET", "/api/cell", {"model": "nope", "text": "CABACA", "name": "logit[0][A]"}, None),
    ("GET", "/api/nothing", Q, None),
    ("POST", "/api/set", None, b"{not json"),
    ("POST", "/api/set", None, json.dumps({**Q, "name": "tokens[0]", "value": "Z"}).encode()),
    ("POST", "/api/undo", None, json.dumps(Q).encode()),
    ("POST", "/api/set", None, b"[" * 30000 + b"]" * 30000),
    ("POST", "/api/set", None, b"x" * (MAX_BODY + 1)),
]


def test_bad_cookieless_requests_never_make_or_evict_a_session(model):
    app = create_app({"sort": model}, max_sessions=2)
    user = TestClient(app)
    assert user.post("/api/set", json=EDIT).status_code == 200
    cookie = user.cookies.get(COOKIE)
    for _ in range(10):  # 80 bad requests, each from a new browser without a cookie
        for method, path, params, body in BAD_NO_COOKIE:
            r = TestClient(app).request(method, path, params=params, content=body)
            assert 400 <= r.status_code < 500 and "set-cookie" not in r.headers
    assert len(app.state.store) == 1 and cookie in app.state.store
    edited = model.sheet("CABACA")
    edited.set(EDIT["name"], EDIT["value"])
    got = user.get("/api/cell", params={**Q, "name": "logit[5][A]"})
    assert got.json()["value"] == edited.value("logit[5][A]") != model.sheet("CABACA").value("logit[5][A]")
    assert user.cookies.get(COOKIE) == cookie and user.get("/api/overview", params=Q).json()["history"]["undo"] == 1


def test_a_good_cookieless_request_makes_one_session_and_sends_its_cookie(model):
    app = create_app({"sort": model}, max_sessions=2)
    r = TestClient(app).get("/api/models")
    assert r.status_code == 200 and r.cookies.get(COOKIE) in app.state.store and len(app.state.store) == 1


def test_a_session_opened_for_a_request_is_kept_only_when_asked(model):
    store = SessionStore({"sort": model}, max_sessions=2)
    a, b = store.get(None), store.get(None)
    pending = store.open(None)
    assert len(store) == 2 and pending.sid not in store and store.open(a.sid) is a
    store.keep(pending)  # b is now the least recently used
    assert len(store) == 2 and pending.sid in store and a.sid in store and b.sid not in store


# -- item 4: a new input of another length keeps the temperature ----------------------------------
def test_a_new_input_of_another_length_keeps_the_temperature(model):
    c = TestClient(create_app({"sort": model}))
    assert c.post("/api/set", json={**Q, "name": "temperature", "value": 0.5}).status_code == 200
    got = c.post("/api/input", json={**Q, "new": "CBA"}).json()
    assert (got["text"], got["kept_edits"], got["kept_weights"], got["temperature"]) == ("CBA", True, [], 0.5)
    prob = c.get("/api/cell", params={"model": "sort", "text": "CBA", "name": "prob[2][A]"}).json()["value"]
    assert prob == model.sheet("CBA", temperature=0.5).value("prob[2][A]") != model.sheet("CBA").value("prob[2][A]")


def test_a_new_input_of_another_length_says_which_weights_and_temperature_it_kept(model):
    c = TestClient(create_app({"sort": model}))
    c.post("/api/set", json={**Q, "name": "temperature", "value": 2.0})
    c.post("/api/set", json=EDIT)
    got = c.post("/api/input", json={**Q, "new": "CBAB"}).json()
    assert (got["kept_edits"], got["kept_weights"], got["temperature"], got["dropped_pins"]) == (
        True, ["lm_head.w"], 2.0, 0)
    edited = model.sheet("CABACA")
    edited.set(EDIT["name"], EDIT["value"])
    want = dfgpt.Model.of(edited.to_model()).sheet("CBAB", temperature=2.0).value("prob[3][A]")
    assert c.get("/api/cell", params={"model": "sort", "text": "CBAB", "name": "prob[3][A]"}).json()["value"] == want


def test_a_new_input_without_edits_keeps_nothing_and_says_so(model):
    c = TestClient(create_app({"sort": model}))
    c.get("/api/overview", params=Q)
    got = c.post("/api/input", json={**Q, "new": "CBA"}).json()
    assert (got["kept_edits"], got["kept_weights"], got["temperature"]) == (False, [], 1.0)


def test_a_new_input_counts_the_pins_it_drops(model):
    c = TestClient(create_app({"sort": model}))
    assert c.post("/api/set", json={**Q, "name": "h[0].out[1][2]", "value": 0.5}).json()["history"]["undo"] == 1
    got = c.post("/api/input", json={**Q, "new": "CBA"}).json()
    assert (got["kept_edits"], got["dropped_pins"]) == (False, 1)


# -- item 11: a body past 64 KiB is refused before it is read -------------------------------------
def _post_asgi(app, chunks, headers):
    """POST /api/set straight to the ASGI app; (status, JSON answer, body bytes the app asked for)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/api/set", "raw_path": b"/api/set", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1"), *headers], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    sent, out = [0], {"body": b""}
    source = iter(chunks)

    async def receive():
        chunk = next(source, None)
        sent[0] += len(chunk or b"")
        return {"type": "http.request", "body": chunk or b"", "more_body": chunk is not None}

    async def send(message):
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        else:
            out["body"] += message.get("body", b"")

    asyncio.run(app(scope, receive, send))
    return out["status"], json.loads(out["body"]), sent[0]


def _forty_megabytes(chunk=16384):
    return (b"x" * chunk for _ in range(40_000_000 // chunk))


def test_a_body_declared_past_the_limit_is_refused_unread(model):
    status, got, read = _post_asgi(create_app({"sort": model}), _forty_megabytes(), [(b"content-length", b"40000000")])
    assert (status, got["error"], read) == (413, "QueryError", 0)
    assert got["message"] == "the request body is 40,000,000 bytes; at most 65,536 are accepted."


def test_a_streamed_body_is_read_no_further_than_the_limit(model):
    status, got, read = _post_asgi(create_app({"sort": model}), _forty_megabytes(), [])
    assert (status, got["error"]) == (413, "QueryError") and MAX_BODY < read <= MAX_BODY + 16384
    assert got["message"] == "the request body is more than 65,536 bytes; at most 65,536 are accepted."


def test_a_body_within_the_limit_is_read_whole_from_chunks(model):
    body = json.dumps({**EDIT, "pad": "x" * 60000}).encode()
    status, got, read = _post_asgi(create_app({"sort": model}), [body[i:i + 1000] for i in range(0, len(body), 1000)],
                                   [])
    assert (status, read, got["history"]) == (200, len(body), {"undo": 1, "redo": 0})


def test_a_real_server_answers_a_40_megabyte_post_with_413_json(model):
    with running({"sort": model}) as url:
        for content in (b"x" * 40_000_000, _forty_megabytes()):  # with a Content-Length, then chunked
            r = httpx.post(f"{url}/api/set", content=content, timeout=60)
            assert (r.status_code, r.json()["error"]) == (413, "QueryError")
        assert httpx.post(f"{url}/api/set", json=EDIT).json()["history"] == {"undo": 1, "redo": 0}


@pytest.mark.parametrize("minutes", ["nan", "inf", "-1", "0", "1e308"])
def test_serve_refuses_idle_minutes_that_are_not_a_finite_positive_time(monkeypatch, capsys, minutes):
    calls = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: calls.append(kw))
    assert cli_main(["serve", f"--idle-minutes={minutes}"]) == 2 and not calls
    assert "dfgpt: error: --idle-minutes must be a finite number of minutes > 0" in capsys.readouterr().err


def test_serve_refuses_fewer_than_one_session(monkeypatch, capsys):
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: pytest.fail("started"))
    assert cli_main(["serve", "--max-sessions", "0"]) == 2
    assert "--max-sessions must be at least 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("seconds", [float("nan"), float("inf"), 0.0, -5.0])
def test_a_session_store_refuses_an_idle_time_that_never_or_always_expires(model, seconds):
    with pytest.raises(dfgpt.DfgptError, match="a finite idle_seconds > 0"):
        SessionStore({"sort": model}, idle_seconds=seconds)


# -- item 12: bodies Python's JSON parser cannot read are clean 4xx answers -----------------------
@pytest.mark.parametrize(("body", "words"), [
    (b"[" * 30000 + b"]" * 30000, "nested too deeply"),
    (b'{"value": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
    (b'{"model": "sort", "text": "CABACA", "seed": ' + b"7" * 5000 + b"}", "more than 4,300 digits"),
])
def test_deep_json_or_a_huge_integer_is_a_clean_4xx_without_a_traceback(model, caplog, body, words):
    caplog.set_level(logging.DEBUG, logger="dfgpt.server")
    r = TestClient(create_app({"sort": model})).post("/api/step", content=body)
    got = r.json()
    assert (r.status_code, set(got), got["error"]) == (400, {"error", "message"}, "QueryError")
    assert words in got["message"] and "Traceback" not in r.text
    assert not [rec for rec in caplog.records if rec.name.startswith("dfgpt")]


def test_a_huge_integer_in_a_query_is_a_clean_4xx(model, caplog):
    caplog.set_level(logging.DEBUG, logger="dfgpt.server")
    r = TestClient(create_app({"sort": model})).get("/api/tensor", params={**Q, "name": "logit", "r0": "9" * 5000})
    assert (r.status_code, r.json()["error"]) == (400, "QueryError") and not caplog.records


# -- item 2: a config FILE names every architecture field; none is filled from GPT-2's defaults ---
@pytest.fixture(scope="module")
def sort_folder(tmp_path_factory, model):
    folder = tmp_path_factory.mktemp("sort")
    model.save(folder)
    return folder


def _without(src, dst, field, config="config.json"):
    """A copy of a model folder whose config lacks `field`."""
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    d = json.loads((src / config).read_text())
    del d[field]
    (dst / config).write_text(json.dumps(d))
    return dst


@pytest.mark.parametrize("field", list(FILE_FIELDS))
def test_a_dfgpt_config_file_missing_an_architecture_field_is_refused_by_name(tmp_path, sort_folder, field):
    folder = _without(sort_folder, tmp_path / "m", field)
    with pytest.raises(MissingFieldError) as e:
        dfgpt.load(folder)
    assert e.value.fields == (field,) and e.value.file == str(folder / "config.json")
    msg = str(e.value)
    assert msg.startswith(f'{folder / "config.json"} has no "{field}" ({FILE_FIELDS[field][0]})')
    assert "never filled from a default" in msg and f'e.g. "{field}": ' in msg and "model.save(folder)" in msg


@pytest.mark.parametrize("field", ["n_head", "gelu", "ln_eps"])
def test_a_state_dict_file_beside_a_config_missing_a_field_is_refused_by_name(tmp_path, model, field):
    dfgpt.models.checkpoints.write_weights(model.params, tmp_path / "w.npz")
    d = model.config.to_dict()
    del d[field]
    (tmp_path / "w.json").write_text(json.dumps(d))
    with pytest.raises(MissingFieldError, match=f'has no "{field}"'):
        dfgpt.load(tmp_path / "w.npz")


def test_an_intact_config_file_loads_the_same_model_and_sorts_all_729(sort_folder, model):
    again = dfgpt.load(sort_folder)
    assert again.config == model.config and again.config.n_head == 3
    assert again.sheet("CABACA").task_score().correct == 729


def test_only_the_name_may_be_absent_from_a_config_file(tmp_path, sort_folder, model):
    again = dfgpt.load(_without(sort_folder, tmp_path / "m", "name"))
    assert again.config == model.config and again.sheet("CBABBC").task_score().correct == 729


def test_config_in_python_still_takes_gpt2_small_s_defaults():
    cfg = dfgpt.Config(vocab=("A", "B"))
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, cfg.gelu, cfg.ln_eps) == (12, 12, 768, 1024,
                                                                                          "tanh", 1e-5)
    assert dfgpt.Config.from_dict({"vocab": ["A", "B"]}) == cfg


HF_REQUIRED = ["n_layer", "n_head", "n_embd", "n_positions", "vocab_size", "activation_function", "layer_norm_epsilon"]


@pytest.mark.parametrize("field", HF_REQUIRED)
def test_a_hugging_face_config_missing_a_field_is_refused_by_name(tmp_path, hf_dir, field):
    folder = _without(hf_dir[0], tmp_path / "m", field)
    with pytest.raises(MissingFieldError) as e:
        dfgpt.load(folder)
    assert e.value.fields == (field,) and e.value.file == str(folder / "config.json")
    assert str(e.value).startswith(f"{folder / 'config.json'} lacks '{field}', which a Hugging Face GPT-2 config has")


@pytest.mark.parametrize("field", ["n_inner", "tie_word_embeddings"])
def test_a_hugging_face_config_may_leave_out_what_transformers_leaves_out(tmp_path, hf_dir, field):
    folder = hf_dir[0]
    again = dfgpt.load(_without(folder, tmp_path / "m", field))
    base = dfgpt.load(folder)
    assert again.config == base.config
    ids = [1, 5, 9, 2]
    assert np.array_equal(again.sheet(ids).values("logit"), base.sheet(ids).values("logit"))


@pytest.mark.parametrize(("key", "value", "words"), [
    ("scale_attn_by_inverse_layer_idx", True, "scale_attn_by_inverse_layer_idx=True is an attention dfgpt does not"),
    ("scale_attn_weights", False, "scale_attn_weights=False is an attention dfgpt does not compute"),
    ("model_type", "phi", "model_type 'phi' .* is not a family dfgpt reads"),
    ("model_type", "llama", "lacks 'hidden_size', which a llama config has"),  # read as Llama: GPT-2's fields are not
])
def test_a_hugging_face_config_dfgpt_would_misread_is_refused(tmp_path, hf_dir, key, value, words):
    folder = _without(hf_dir[0], tmp_path / "m", "n_inner")
    d = json.loads((folder / "config.json").read_text())
    d[key] = value
    (folder / "config.json").write_text(json.dumps(d))
    with pytest.raises(dfgpt.DfgptError, match=words):
        dfgpt.load(folder)
