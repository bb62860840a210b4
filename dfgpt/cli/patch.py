"""`dfgpt patch --clean TEXT --corrupted TEXT --metric SPEC --over FAMILY`: an activation-patching sweep."""

from __future__ import annotations

import argparse

from ..interventions.attribution import attribution_patch
from ..interventions.sites import FAMILIES
from ..interventions.sweep import sweep
from ..model import load
from ..views.sweep_map import sweep_map
from .options import model_arg

__all__ = ["register"]


def _patch(args: argparse.Namespace) -> int:
    model = load(args.model)
    clean, corrupted = model.sheet(args.clean), model.sheet(args.corrupted)
    positions = "all" if args.all_positions else "each"
    kw = {"over": args.over, "positions": positions, "position": args.position}
    exact = None if args.attribution else sweep(clean, corrupted, args.metric, **kw)
    approx = attribution_patch(clean, corrupted, args.metric, **kw) if args.attribution or args.compare else None
    shown = exact if exact is not None else approx
    assert shown is not None
    print(shown.table())
    if exact is not None and approx is not None:
        print()
        print("attribution patching against the exact sweep:")
        print(exact.compare(approx))
    if args.output:
        sweep_map(shown, args.output)
        print(f"wrote {args.output}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("patch", help="activation patching: patch each site from the clean input into the corrupted one")
    p.add_argument("--clean", required=True, help="the clean input, e.g. CABACA")
    p.add_argument("--corrupted", required=True, help="the corrupted input, of the same length")
    p.add_argument("--metric", default="kl",
                   help="logit_diff:A,C | logit:A | prob:A | logprob:A | kl, optionally @position (default kl)")
    p.add_argument("--over", default="resid_pre",
                   help=f"a family ({', '.join(FAMILIES)}) or a selection with * axes (default resid_pre)")
    p.add_argument("--position", type=int, default=None, help="where the metric is read (default: the last position)")
    p.add_argument("--all-positions", action="store_true", help="one site per layer (and head) over every position")
    p.add_argument("--attribution", action="store_true", help="first-order approximation (one backward pass)")
    p.add_argument("--compare", action="store_true",
                   help="also run attribution patching and compare it with the exact sweep")
    p.add_argument("-o", "--output", default=None, help="write the heatmap: file.png|svg|pdf|dot")
    model_arg(p)
    p.set_defaults(func=_patch)
