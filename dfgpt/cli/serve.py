"""`dfgpt serve`: the explorer, a spreadsheet of the model in the browser (see dfgpt.server)."""

from __future__ import annotations

import argparse
import math

from ..errors import QueryError
from ..server.app import load_models, serve
from ..server.circuit import load_circuits

__all__ = ["register"]


def _serve(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise QueryError(f"--port must be in 1..65535, got {args.port}.")
    if args.max_sessions < 1:
        raise QueryError(f"--max-sessions must be at least 1, got {args.max_sessions}.")
    if not (math.isfinite(args.idle_minutes * 60) and args.idle_minutes > 0):  # nan would never expire a session
        raise QueryError(f"--idle-minutes must be a finite number of minutes > 0 (default 30), "
                         f"got {args.idle_minutes}.")
    try:
        import starlette  # noqa: F401  # the `serve` extra
        import uvicorn  # noqa: F401
    except ImportError:
        raise QueryError("`dfgpt serve` needs Starlette and uvicorn: pip install -e \".[serve]\".") from None
    models = load_models(args.model or ["sort"])
    serve(models, host=args.host, port=args.port, max_sessions=args.max_sessions,
          idle_seconds=args.idle_minutes * 60, circuits=load_circuits(args.circuit or [], models))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="the explorer: click through a model's cells in the browser")
    p.add_argument("--model", action="append", default=None, metavar="NAME_OR_PATH",
                   help="a shipped model or a checkpoint path; repeat for several (default: sort)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this machine only; another is warned about)")
    p.add_argument("--max-sessions", type=int, default=32, help="browser sessions kept at once (default 32)")
    p.add_argument("--idle-minutes", type=float, default=30.0, help="a session idle this long is dropped (default 30)")
    p.add_argument("--circuit", action="append", default=None, metavar="FILE",
                   help="a circuit saved by `dfgpt circuit ... -o circuit.json`, shown in the circuit view "
                        "(repeatable; it opens on the served model whose edges it has)")
    p.set_defaults(func=_serve)
