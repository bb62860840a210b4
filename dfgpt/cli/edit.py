"""`dfgpt set CELL VALUE`: a what-if edit and its receipt."""

from __future__ import annotations

import argparse
from typing import Any

from ..batch.task import task_score
from ..errors import EditError, QueryError, TokenError
from ..model import load
from .options import model_arg, text_arg

__all__ = ["register"]

def _cli_set(args: argparse.Namespace) -> int:
    sheet = load(args.model).sheet(args.text)
    tensor, _ = sheet.cell(args.cell)
    value: Any = args.value
    if tensor == "tokens":
        digits = value.lstrip("-")
        if digits.isdigit() and len(digits) > 18:  # int() of thousands of digits is refused by Python itself
            raise TokenError(
                f"{args.cell}: token id of {len(digits)} digits is out of range; this vocabulary has ids "
                f"0..{sheet.config.vocab_size - 1}."
            )
        value = int(value) if digits.isdigit() else value  # an id (negative: refused as out of range)
    else:
        try:
            value = float(value)
        except ValueError:
            shown = args.value if len(args.value) <= 60 else args.value[:40] + f"... ({len(args.value)} characters)"
            raise EditError(f"{args.cell}: expected a number, got {shown!r}.") from None
    if args.inputs is not None and not args.score:
        raise QueryError("--inputs names the inputs --score scores: add --score.")

    def score() -> Any:
        return sheet.task_score() if args.inputs is None else task_score(sheet, args.inputs)

    before = score() if args.score else None
    sheet.values("prob")  # computed before the edit, so the receipt shows what changed
    receipt = sheet.set(args.cell, value).settle()
    print(receipt)
    if args.score:
        after = score()
        print(f"before: {before}")
        print(f"after:  {after}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("set", help="edit a weight, token or cell; print what was recomputed")
    p.add_argument("cell", help="e.g. 'h[2].mlp.c_proj.w[0][0]', 'tokens[2]', 'h[0].attn.att[0][5][3]'")
    p.add_argument("value", help="a number, or a token for tokens[t]")
    text_arg(p)
    p.add_argument("--score", action="store_true", help="re-score the sort task before and after")
    p.add_argument("--inputs", metavar="FILE", help="with --score: score these inputs (.jsonl, or one a line) "
                   "instead of all 729")
    model_arg(p)
    p.set_defaults(func=_cli_set)
