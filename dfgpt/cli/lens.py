"""`dfgpt lens TEXT`: the logit lens, every layer's residual stream read through ln_f and the unembedding."""

from __future__ import annotations

import argparse

from ..interventions.lens import logit_lens
from ..model import load
from ..views.sweep_map import lens_map
from .options import model_arg, text_arg

__all__ = ["register"]


def _lens(args: argparse.Namespace) -> int:
    lens = logit_lens(load(args.model).sheet(args.text), target=args.target)
    print(lens.table(n=args.top))
    if args.output:
        lens_map(lens, args.output)
        print(f"wrote {args.output}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lens", help="the logit lens: top tokens of every layer's residual stream, per position")
    text_arg(p, positional=True)
    p.add_argument("--target", default=None, help="the token whose rank is shown (default: the final prediction)")
    p.add_argument("--top", type=int, default=1, help="top tokens shown per cell (default 1)")
    p.add_argument("-o", "--output", default=None, help="write the picture: file.png|svg|pdf|dot")
    model_arg(p)
    p.set_defaults(func=_lens)
