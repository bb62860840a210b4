"""`dfgpt patch --clean TEXT --corrupted TEXT --metric SPEC --over FAMILY`: an activation-patching sweep;
`--pairs pairs.jsonl` sweeps a dataset (the mean, and each pair's unpatched metrics), and
`--ablate zero|mean --inputs inputs.jsonl` ablates each site of each input instead. A dataset runs
in process by default, and on an embedded local Dask cluster when its work pays for the
cluster's start-up; `--scheduler local` always starts that cluster (`--workers N` local
workers), `--scheduler inline` keeps it in process, `--scheduler tcp://host:port` runs it on a
running cluster."""

from __future__ import annotations

import argparse

from ..batch import api
from ..batch.ablation import HOWS
from ..batch.cluster import INLINE
from ..batch.pairs import read_inputs, read_pairs
from ..errors import QueryError
from ..interventions.attribution import attribution_patch
from ..interventions.sites import FAMILIES
from ..interventions.sweep import WIDTH, sweep
from ..model import load
from ..views.sweep_map import sweep_map
from .options import model_arg

__all__ = ["register"]


def _pairs(args: argparse.Namespace) -> int:
    model = load(args.model)
    pairs = read_pairs(args.pairs)
    kw = {"over": args.over, "positions": "all" if args.all_positions else "each", "position": args.position}
    exact = None if args.attribution else api.sweep_pairs(
        model, pairs, args.metric, scheduler=args.scheduler, workers=args.workers, chunk=args.chunk,
        progress=False if args.no_progress else None, **kw)
    approx = api.attribution_patch(model, pairs, args.metric, **kw) if args.attribution or args.compare else None
    shown = exact if exact is not None else approx  # --attribution makes approx; without it, exact
    if shown is None:  # argparse's choices leave no such case; a typed error all the same
        raise QueryError("nothing to show: give --attribution, --compare or neither.")
    print(shown.table())
    if exact is not None and approx is not None:
        print()
        print("attribution patching against the exact sweep (means over pairs):")
        print(exact.mean().compare(approx.mean()))
    if args.output:
        sweep_map(shown.mean(), args.output)
        print(f"wrote {args.output}")
    return 0


def _ablate(args: argparse.Namespace) -> int:
    if args.inputs is None:
        raise QueryError("--ablate sweeps a dataset of inputs: give --inputs inputs.jsonl (one input a line).")
    if args.pairs is not None or args.clean is not None or args.corrupted is not None:
        raise QueryError("--ablate takes --inputs, not --pairs, --clean or --corrupted.")
    if args.attribution or args.compare:
        raise QueryError("--attribution and --compare approximate patching, not ablation: drop them.")
    if args.reference is not None and args.ablate != "mean":
        raise QueryError("--reference is what --ablate mean averages over: drop it, or use --ablate mean.")
    r = api.ablation_sweep(
        load(args.model), read_inputs(args.inputs), args.metric, over=args.over, how=args.ablate,
        reference=None if args.reference is None else read_inputs(args.reference),
        positions="all" if args.all_positions else "each", position=args.position, scheduler=args.scheduler,
        workers=args.workers, chunk=args.chunk, progress=False if args.no_progress else None)
    print(r.table())
    if args.output:
        sweep_map(r.mean(), args.output)
        print(f"wrote {args.output}")
    return 0


def _patch(args: argparse.Namespace) -> int:
    if args.share and (args.pairs is not None or args.ablate is not None):
        raise QueryError("--share shows one pair's sweep (--clean and --corrupted); for a dataset, "
                         "dfgpt.sweep(...).mean().table(share=True) in Python.")
    if args.ablate is not None:
        return _ablate(args)
    if args.inputs is not None or args.reference is not None:
        raise QueryError("--inputs and --reference are datasets of single inputs for --ablate zero|mean; "
                         "activation patching takes --pairs pairs.jsonl.")
    if args.pairs is not None:
        if args.clean is not None or args.corrupted is not None:
            raise QueryError("give either --pairs or --clean and --corrupted, not both.")
        return _pairs(args)
    if args.clean is None or args.corrupted is None:
        raise QueryError("give --clean and --corrupted (one pair), or --pairs pairs.jsonl (a dataset).")
    if (args.scheduler is not None and args.scheduler != INLINE) or args.workers is not None:
        raise QueryError("--scheduler and --workers run a dataset: give --pairs pairs.jsonl (one pair a line).")
    model = load(args.model)
    clean, corrupted = model.sheet(args.clean), model.sheet(args.corrupted)
    positions = "all" if args.all_positions else "each"
    kw = {"over": args.over, "positions": positions, "position": args.position}
    exact = None if args.attribution else sweep(clean, corrupted, args.metric, **kw)
    approx = attribution_patch(clean, corrupted, args.metric, **kw) if args.attribution or args.compare else None
    shown = exact if exact is not None else approx  # --attribution makes approx; without it, exact
    if shown is None:
        raise QueryError("nothing to show: give --attribution, --compare or neither.")
    print(shown.table(share=args.share, width=args.width or None))
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
    p.add_argument("--clean", default=None, help="the clean input, e.g. CABACA")
    p.add_argument("--corrupted", default=None, help="the corrupted input, of the same length")
    p.add_argument("--pairs", default=None,
                   help='a dataset: a .jsonl file, one pair a line '
                        '({"clean": ..., "corrupted": ...} or [clean, corrupted])')
    p.add_argument("--ablate", default=None, choices=HOWS,
                   help="ablate each site of each --inputs input (to zero, or to its mean over the inputs) "
                        "instead of patching")
    p.add_argument("--inputs", default=None,
                   help='the inputs of --ablate: a .jsonl file, one input a line ("CABACA" or [2, 0, 1]), '
                        "or a text file, one input a line")
    p.add_argument("--reference", default=None,
                   help="the inputs --ablate mean averages over (default: the --inputs), a file like --inputs")
    p.add_argument("--scheduler", default=None,
                   help="where a dataset runs: by default this process, or a local Dask cluster when the work "
                        "pays for its start-up; 'local' (one Dask worker process per core), 'inline' (this "
                        "process) or tcp://host:port")
    p.add_argument("--workers", type=int, default=None, help="local Dask worker processes (implies --scheduler local)")
    p.add_argument("--chunk", type=int, default=None, help="sites per Dask task (default: about four tasks per worker)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--metric", default="kl",
                   help="logit_diff:A,C | logit:A | prob:A | logprob:A | kl, optionally @position (default kl)")
    p.add_argument("--over", default="resid_pre",
                   help=f"a family ({', '.join(FAMILIES)}) or a selection with * axes (default resid_pre)")
    p.add_argument("--position", type=int, default=None, help="where the metric is read (default: the last position)")
    p.add_argument("--all-positions", action="store_true", help="one site per layer (and head) over every position")
    p.add_argument("--attribution", action="store_true", help="first-order approximation (one backward pass)")
    p.add_argument("--compare", action="store_true",
                   help="also run attribution patching and compare it with the exact sweep")
    p.add_argument("--share", action="store_true",
                   help="show the share of the gap restored, (patched - corrupted) / (clean - corrupted), "
                        "for a single pair")
    p.add_argument("--width", type=int, default=WIDTH,
                   help=f"the table's rows fit this many columns (default {WIDTH}); 0: every position on one line")
    p.add_argument("-o", "--output", default=None, help="write the heatmap: file.png|svg|pdf|dot")
    model_arg(p)
    p.set_defaults(func=_patch)
