"""`dfgpt circuit --pairs FILE --metric SPEC --method acdc|eap|eap-ig [--threshold T] [--top K] -o circuit.json`:
find the circuit behind a behaviour over a dataset of (clean, corrupted) pairs, print it as a table,
and write it (`.json`), its picture (`.svg`, `.png`, `.dot`) or both (`-o` twice)."""

from __future__ import annotations

import argparse

from ..batch.circuits import acdc, eap, eap_ig
from ..batch.pairs import read_pairs
from ..circuits.circuit import Circuit
from ..errors import QueryError
from ..model import load
from .options import model_arg

__all__ = ["register"]

METHODS = ("acdc", "eap", "eap-ig")


def _circuit(args: argparse.Namespace) -> int:
    model = load(args.model)
    pairs = read_pairs(args.pairs)
    where = {"scheduler": args.scheduler, "workers": args.workers}
    if args.method == "acdc":
        if args.top is not None or args.steps is not None:
            raise QueryError("--top and --steps choose edges for eap and eap-ig; acdc keeps edges by --threshold.")
        found: Circuit = acdc(model, pairs, args.metric, threshold=0.1 if args.threshold is None else args.threshold,
                              **where)
    elif args.method == "eap":
        if args.steps is not None:
            raise QueryError("--steps is eap-ig's number of points on the path; drop it, or use --method eap-ig.")
        found = eap(model, pairs, args.metric, top=args.top, threshold=args.threshold, **where)
    else:
        found = eap_ig(model, pairs, args.metric, steps=5 if args.steps is None else args.steps, top=args.top,
                       threshold=args.threshold, **where)
    print(found.table())
    if not found.ran_on.startswith("this process"):
        print(f"ran on {found.ran_on}")
    for path in args.output or []:
        print(f"wrote {found.save(path)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("circuit", help="circuit discovery over pairs: ACDC, EAP or EAP-IG")
    p.add_argument("--pairs", required=True,
                   help='a .jsonl file, one pair a line ({"clean": ..., "corrupted": ...} or [clean, corrupted])')
    p.add_argument("--metric", default="kl",
                   help="logit_diff:A,C | logit:A | prob:A | logprob:A | kl, optionally @position (default kl)")
    p.add_argument("--method", default="acdc", choices=METHODS, help="acdc (default), eap or eap-ig")
    p.add_argument("--threshold", type=float, default=None,
                   help="acdc: the least change in distance to the clean run that keeps an edge (default 0.1); "
                        "eap, eap-ig: keep edges with |score| at least this")
    p.add_argument("--top", type=int, default=None, help="eap, eap-ig: keep the best K edges (default 20)")
    p.add_argument("--steps", type=int, default=None,
                   help="eap-ig: points on the path from clean to corrupted (default 5)")
    p.add_argument("-o", "--output", action="append", default=None,
                   help="write the circuit: circuit.json, or its picture: circuit.svg|png|dot (repeatable)")
    p.add_argument("--scheduler", default=None,
                   help="where it runs: auto (default: in process unless a local Dask cluster pays), inline, local, "
                        "or a Dask scheduler's address tcp://HOST:PORT")
    p.add_argument("--workers", type=int, default=None, help="local Dask worker processes (default: one per core)")
    model_arg(p)
    p.set_defaults(func=_circuit)
