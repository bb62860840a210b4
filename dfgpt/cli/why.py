"""`dfgpt why CELL`: the exact cone of a cell and the cells that matter most."""

from __future__ import annotations

import argparse
import json

from ..analysis.attribution import direct_attribution
from ..analysis.influence import influence
from ..analysis.provenance import provenance
from ..model import load
from .options import in_cli_terms, json_arg, model_arg, text_arg

__all__ = ["register"]

def _why(args: argparse.Namespace) -> int:
    sheet = load(args.model).sheet(args.text)
    prov = provenance(sheet, args.cell)
    res = influence(sheet, args.cell, top=args.top, by=args.rank)  # bad arguments fail before printing
    if args.json:
        print(json.dumps({
            "cell": args.cell, "value": res.target_value, "cone": {"cells": len(prov), "tensors": len(prov.masks)},
            "by": args.rank, "top": [{"cell": it.cell, "value": it.value, "grad": it.grad, "score": it.score}
                                     for it in res.items]}))
        return 0
    print(prov.summary())
    print()
    if args.by is None:
        print(in_cli_terms(res.table()))
        return 0
    groups = {"head": res.by_head, "position": res.by_position, "tensor": res.by_tensor, "block": res.by_block}
    print(f"{args.rank} scores of the cone of {args.cell}, summed by {args.by} (a map of where the "
          "influence flows: a chain counts at every step, so these sums are no decomposition):")
    for row in groups[args.by]()[: max(args.top, 1)]:
        print(f"  {row.key:<28} {row.cells:>8,} cells  sum {row.score:+.6g}  sum|·| {row.abs_score:.6g}")
    if args.by == "head" and sheet.cell(args.cell)[0] == "logit":
        print()
        print(direct_attribution(sheet, args.cell).table())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("why", help="what affects a cell: its exact cone and the cells that matter most")
    p.add_argument("cell", help="a cell name, e.g. 'logit[5][A]'")
    text_arg(p)
    p.add_argument("--top", type=int, default=20, help="how many contributors to list")
    json_arg(p)
    p.add_argument("--by", choices=["head", "position", "tensor", "block"], default=None,
                   help="sum the scores by head, position, tensor or block instead of listing cells")
    p.add_argument("--rank", default="grad*value", choices=["grad*value", "grad", "ablation"],
                   help="how cells are scored (default grad*value)")
    model_arg(p)
    p.set_defaults(func=_why)
