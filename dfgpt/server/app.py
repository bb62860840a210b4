"""The explorer's web app: Starlette routes for the page, its colours and the JSON API; `serve` runs it on uvicorn.

Models are loaded once, at start-up, by name or path; a request only names a served model,
never a file. Every request runs with its session's lock held (one request at a time per
sheet), off the event loop. A `DfgptError` is a 4xx JSON answer `{"error", "message"}`;
nothing a request sends makes a 500 or shows a traceback.

>>> import dfgpt
>>> from starlette.testclient import TestClient
>>> client = TestClient(create_app({"sort": dfgpt.load("sort-random")}))
>>> client.get("/api/cell", params={"text": "CABACA", "name": "logit[5][Z]"}).json()["error"]
'TokenError'
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..circuits.circuit import Circuit
from ..errors import DfgptError, QueryError, UnknownNameError
from ..model import Model, load
from ..views.colors import COLORS, heat
from . import routes
from .circuit import matching
from .sessions import SessionStore

__all__ = ["COOKIE", "LOCAL_HOSTS", "colors_css", "create_app", "load_models", "serve", "warm"]

COOKIE = "dfgpt_session"
MAX_BODY = 64 * 1024  # bytes of JSON a request may send
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "circuit.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
STATUS = {UnknownNameError: 404}  # every other DfgptError is a 400
log = logging.getLogger("dfgpt.server")

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse


def colors_css() -> str:
    """CSS custom properties of the one colour map (`--parameter`, `--stale`, ...; `--heat-0`, `--heat-1`)."""
    lines = [f"  --{k}: {v};" for k, v in COLORS.items()] + [f"  --heat-0: {heat(0.0)};", f"  --heat-1: {heat(1.0)};"]
    return ":root {\n" + "\n".join(lines) + "\n}\n"


def _colors() -> dict[str, str]:
    return {**COLORS, "heat_0": heat(0.0), "heat_1": heat(1.0)}


def load_models(names: Sequence[str]) -> dict[str, Model]:
    """Models by the names the page shows: a shipped name as is, a path by its folder or file name."""
    out: dict[str, Model] = {}
    for name in names or ["sort"]:
        model = load(name)
        key = name if not any(c in name for c in "/\\") else (Path(name).name or "model")
        base, n = key, 2
        while key in out:
            key, n = f"{base}-{n}", n + 1
        out[key] = model
    return out


def warm(models: Mapping[str, Model], T: int = 64) -> None:
    """Fault in each model's influence workspace once, so a page's first "why" is not its slowest.

    A backward at GPT-2 size writes ~1 GB of gradients and scores; fresh pages cost the kernel
    more to zero than the arithmetic (2–3 s against 0.6 s). One influence of the last logit
    of a T-token input leaves those blocks in dfgpt.core.arena's pool for the requests
    (a block serves inputs whose cone has between half and all of its cells).
    """
    for name, model in models.items():
        if model.n_params > 10_000_000:  # seconds, not milliseconds: say why the address is not up yet
            print(f"dfgpt serve: preparing {name}'s influence workspace ({model.n_params:,} parameters)…",
                  file=sys.stderr, flush=True)
        n = max(1, min(T, model.config.block_size))
        sheet = model.sheet([0] * n)
        sheet.influence(sheet.name("logit", (n - 1, 0)), top=1)


def _error(e: DfgptError, status: int | None = None) -> JSONResponse:
    from starlette.responses import JSONResponse

    status = status or next((code for cls, code in STATUS.items() if isinstance(e, cls)), 400)
    body = {"error": type(e).__name__, "message": str(e)}
    if isinstance(getattr(e, "field", None), str):  # the form field the page shows it at (the circuit view's)
        body["field"] = e.field  # type: ignore[attr-defined]
    return JSONResponse(body, status_code=status)


async def _body(request: Any) -> bytes | int:
    """The request's body; or, past MAX_BODY bytes, its declared size (0 if undeclared), read no further.

    A Content-Length over the limit is refused before a byte is read; without one (chunked),
    the body is counted as it streams and reading stops at the first chunk past the limit,
    so a 40 MB POST costs the server 64 KiB, not 80 MB.
    """
    length = request.headers.get("content-length")
    if length is not None:
        length = length.strip()
        if not (length.isascii() and length.isdigit()):
            raise QueryError(f"the request's Content-Length is {length[:40]!r}, not a number of bytes.")
        if len(length) > 12 or int(length) > MAX_BODY:
            return int(length) if len(length) <= 12 else 0
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > MAX_BODY:
            return 0
        chunks.append(chunk)
    return b"".join(chunks)


def _json(body: bytes) -> dict[str, Any]:
    """A POST's parameters: a JSON object, or a QueryError saying what is wrong with the body."""
    example = "send an object such as {\"model\": \"sort\", \"text\": \"CABACA\"}."
    try:
        params = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise QueryError(f"the request body is not valid JSON ({e.msg if hasattr(e, 'msg') else e}); "
                         + example) from None
    except RecursionError:  # the parser nests as deep as the body does: refused, never a traceback in the log
        raise QueryError("the request body is JSON nested too deeply to read; the API's parameters are a flat "
                         "object of texts and numbers: " + example) from None
    except ValueError:  # Python reads whole numbers of at most sys.get_int_max_str_digits() digits
        raise QueryError(f"the request body holds a whole number of more than {sys.get_int_max_str_digits():,} "
                         "digits, which no parameter takes; send numbers of a few digits: " + example) from None
    if not isinstance(params, dict):
        raise QueryError("the request body must be a JSON object, e.g. {\"model\": \"sort\"}.")
    return params


def _host_guard(app: Any, hosts: Sequence[str]) -> Any:
    """An ASGI wrapper refusing requests whose Host header is not one of `hosts` (DNS rebinding), as JSON."""
    allowed = {h.lower() for h in hosts}

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            raw = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1").lower()
            name = raw[: raw.find("]") + 1] if raw.startswith("[") else raw.split(":")[0]  # the port dropped
            if name not in allowed:
                body = json.dumps({"error": "HostError", "message": f"this explorer answers only requests to "
                                   f"{', '.join(sorted(allowed))}, not to {raw or '(no host)'!r}."}).encode()
                head = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
                await send({"type": "http.response.start", "status": 421, "headers": head})
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    return guarded


def create_app(models: Mapping[str, Model], max_sessions: int = 32, idle_seconds: float = 1800.0,
               hosts: Sequence[str] | None = None, circuits: Mapping[str, Circuit] | None = None) -> Starlette:
    """The explorer for these models (name -> Model), with its bounded store of sessions at `app.state.store`.

    hosts: the Host headers answered (None: any); `serve` on this machine answers only its own names.
    circuits: saved circuits the circuit view opens by name (`dfgpt serve --circuit FILE`).
    """
    # Starlette is the `serve` extra: imported when an app is made, so the rest of dfgpt works without it.
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    store = SessionStore(models, max_sessions=max_sessions, idle_seconds=idle_seconds)
    gets, posts = routes.tables(circuits)
    assets = {n: resources.files("dfgpt.server").joinpath("static", n).read_bytes() for n in STATIC}
    css = colors_css().encode()

    async def call(request: Request) -> Response:
        verb = request.path_params["verb"]
        table = gets if request.method == "GET" else posts
        try:
            handler = table.get(verb)
            if handler is None:
                other = posts if request.method == "GET" else gets
                if verb in other:
                    raise QueryError(f"/api/{verb} takes {'POST' if request.method == 'GET' else 'GET'}.")
                raise UnknownNameError(f"no API endpoint /api/{verb}; the endpoints are "
                                       f"{', '.join(sorted(gets))} (GET) and {', '.join(sorted(posts))} "
                                       "(POST).")
            if request.method == "GET":
                params: dict[str, Any] = dict(request.query_params)
            else:
                body = await _body(request)
                if isinstance(body, int):
                    size = f"{body:,} bytes" if body else f"more than {MAX_BODY:,} bytes"
                    return _error(QueryError(f"the request body is {size}; at most {MAX_BODY:,} are accepted."), 413)
                params = _json(body)
            session = store.open(request.cookies.get(COOKIE))  # a new one is kept only if the request succeeds

            def run() -> dict[str, Any]:
                with session.lock:
                    return handler(session, params)

            answer = await run_in_threadpool(run)
            response: Response = JSONResponse(answer)
        except DfgptError as e:
            return _error(e)
        except (RecursionError, MemoryError, ValueError, TypeError, KeyError, IndexError, OverflowError) as e:
            log.exception("explorer request failed")  # a bug: logged on the server, never shown to the client
            return JSONResponse({"error": type(e).__name__, "message": "the server could not answer this "
                                 "request; the input may be outside what dfgpt supports."}, status_code=422)
        if request.cookies.get(COOKIE) != session.sid:  # a new session: kept now, and its cookie sent
            store.keep(session)
            response.set_cookie(COOKIE, session.sid, httponly=True, samesite="strict")
        return response

    async def page(request: Request) -> Response:
        return Response(assets["index.html"], media_type=STATIC["index.html"])

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name == "colors.css":
            return Response(css, media_type=STATIC["style.css"])
        if name not in assets:  # a fixed set of files held in memory: a request never names a path
            return JSONResponse({"error": "NotFound", "message": f"no file {name!r} here."}, status_code=404)
        return Response(assets[name], media_type=STATIC[name], headers={"Cache-Control": "no-cache"})

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)

    async def colors(request: Request) -> Response:
        return JSONResponse(_colors())

    async def not_found(request: Request, exc: Exception) -> Response:
        code = exc.status_code if isinstance(exc, HTTPException) else 404
        return JSONResponse({"error": "NotFound" if code == 404 else "HTTPError",
                             "message": f"nothing at {request.url.path} for {request.method}."}, status_code=code)

    async def server_error(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": "ServerError", "message": "the server could not answer this request."},
                            status_code=500)

    app = Starlette(routes=[
        Route("/", page), Route("/static/{name}", static), Route("/api/colors", colors),
        Route("/favicon.ico", favicon),
        Route("/api/{verb}", call, methods=["GET", "POST"]),
    ], exception_handlers={HTTPException: not_found, 500: server_error})
    app.state.store = store
    app.state.models = models
    if hosts is not None:
        guarded = _host_guard(app, hosts)
        guarded.state = app.state  # type: ignore[attr-defined]
        return guarded  # type: ignore[no-any-return]
    return app


def serve(models: Mapping[str, Model], host: str = "127.0.0.1", port: int = 8000, **kw: Any) -> None:
    """Run the explorer on uvicorn until interrupted; a host other than this machine's is warned about."""
    import uvicorn  # the `serve` extra: imported when a server starts

    if host not in LOCAL_HOSTS:
        print(f"dfgpt serve: warning: listening on {host}, not only on this machine: anyone who can reach "
              f"port {port} can read and edit the served models' sheets.", file=sys.stderr)
    warm(models)
    shown = f"[{host}]" if ":" in host else host
    first = next(iter(models))
    print(f"dfgpt explorer: http://{shown}:{port}/?model={first}  (models: {', '.join(models)}; Ctrl-C stops)",
          flush=True)
    for name, c in (kw.get("circuits") or {}).items():  # each loaded circuit opens on the model whose edges it has
        owner = next(m for m, model in models.items() if matching(model, c))
        print(f"  circuit {name}: http://{shown}:{port}/?model={owner}&view=circuit&circuit={name}", flush=True)
    hosts = ["127.0.0.1", "localhost", "[::1]"] if host in LOCAL_HOSTS else None
    uvicorn.run(create_app(models, hosts=hosts, **kw), host=host, port=port, log_level="warning")
