"""`dfgpt why CELL`: the exact cone of a cell and the cells that matter most; `--inputs FILE`: over a dataset."""

from __future__ import annotations

import argparse
import json

from ..analysis.attribution import direct_attribution
from ..analysis.influence import RANKS, influence
from ..analysis.target import resolve
from ..batch.influence import influence as influence_over
from ..batch.pairs import read_inputs
from ..core import arena
from ..errors import QueryError
from ..model import load
from .options import in_cli_terms, json_arg, model_arg, text_arg

__all__ = ["register"]


def _over(args: argparse.Namespace) -> int:
    """The mean influence over the inputs of a file (`dfgpt.influence(model, inputs, target)`)."""
    if args.by is not None:
        raise QueryError("--by groups one input's cone; with --inputs, drop --by (the ranking is of mean scores).")
    if args.text != args.text_default:
        raise QueryError("give the input with --text, or a dataset with --inputs, not both.")
    res = influence_over(load(args.model), read_inputs(args.inputs), args.cell, top=args.top, by=args.rank)
    if args.json:
        print(json.dumps({
            "target": args.cell, "by": args.rank, "inputs": list(res.texts), "targets": list(res.targets),
            "values": res.target_values.tolist(),
            "top": [{"cell": it.cell, "score": it.score, "scores": res.scores[:, j].tolist()}
                    for j, it in enumerate(res.items)]}))
        return 0
    print(res.table())
    return 0


def _why(args: argparse.Namespace) -> int:
    if args.inputs is not None:
        return _over(args)
    sheet = load(args.model).sheet(args.text)
    target = resolve(sheet, args.cell)  # a cell, or a spec such as 'logit_diff:A,C'
    res = influence(sheet, args.cell, top=args.top, by=args.rank)  # bad arguments fail before printing
    prov = res.provenance  # the cone it ranked: one set of masks (a byte per cell: 1.1 GB at TinyLlama's size)
    groups = {"head": res.by_head, "position": res.by_position, "tensor": res.by_tensor, "block": res.by_block}
    rows = groups[args.by]()[: max(args.top, 1)] if args.by is not None else []
    direct = (direct_attribution(sheet, args.cell)
              if args.by == "head" and set(target.masks) == {"logit"} and len(target.cells) <= 2 else None)
    if args.json:
        out: dict[str, object] = {
            "cell": args.cell, "value": res.target_value, "cone": {"cells": len(prov), "tensors": len(prov.masks)},
            "by": args.rank, "top": [{"cell": it.cell, "value": it.value, "grad": it.grad, "score": it.score}
                                     for it in res.items]}
        if args.by is not None:  # the same groups (and, by head, the same direct attribution) the text shows
            out["groups"] = {"by": args.by, "rows": [{"key": r.key, "cells": r.cells, "sum": r.score,
                                                      "abs_sum": r.abs_score} for r in rows]}
        if direct is not None:
            out["direct_attribution"] = {"logit": direct.logit, "sum": direct.total,
                                         "parts": [{"name": p.name, "kind": p.kind, "layer": p.layer,
                                                    "head": p.head, "value": p.value} for p in direct]}
        print(json.dumps(out))
        return 0
    ranked = in_cli_terms(res.table())
    del res, groups  # its scores (as large as the weights) let go before the summary builds its own masks of the cone,
    arena.release()  # and their block too: the arena would keep it for a next ranking this command never makes
    print(prov.summary())
    print()
    if args.by is None:
        print(ranked)
        return 0
    print(f"{args.rank} scores of the cone of {args.cell}, summed by {args.by} (a map of where the "
          "influence flows: a chain counts at every step, so these sums are no decomposition):")
    for row in rows:
        print(f"  {row.key:<28} {row.cells:>8,} cells  sum {row.score:+.6g}  sum|·| {row.abs_score:.6g}")
    if direct is not None:
        print()
        print(direct.table())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("why", help="what affects a cell: its exact cone and the cells that matter most")
    p.add_argument("cell", help="a cell name, e.g. 'logit[5][A]', or a logit difference 'logit_diff:A,C' "
                                "(at the last position, or '@t'); with --inputs also 'logit[-1][A]'")
    text_arg(p)
    p.add_argument("--inputs", default=None,
                   help="rank by the mean score over a dataset: a .jsonl file, one input a line, or a text file")
    p.add_argument("--top", type=int, default=20, help="how many contributors to list")
    json_arg(p)
    p.add_argument("--by", choices=["head", "position", "tensor", "block"], default=None,
                   help="sum the scores by head, position, tensor or block instead of listing cells")
    p.add_argument("--rank", default="grad*value", choices=list(RANKS),
                   help="how cells are scored: grad*value (the default: first order, one backward pass), "
                        "grad, ablation (the exact change when a cell is zeroed: zeroing a LayerNorm "
                        "variance divides by sqrt(eps), so variances rank first), or ablation-fixed-norms "
                        "(the same with the LayerNorm variances and softmax shifts and sums held at their "
                        "values, as direct logit attribution does: what a cell adds through the linear paths)")
    model_arg(p)
    p.set_defaults(func=_why)
