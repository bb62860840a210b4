"""`dfgpt expr CELL`: a cell as a SymPy expression, expanded by depth or with free cells."""

from __future__ import annotations

import argparse
from typing import Any

from ..analysis.symbolic import DEFAULT_BUDGET, expr, latex
from ..errors import QueryError
from ..model import load
from .options import model_arg, text_arg

__all__ = ["register"]

def _cli(args: argparse.Namespace) -> int:
    model = load(args.model)
    text = args.text or ("aabaa" if model.vocab == ("a", "b") else "CABACA")
    sheet = model.sheet(text)
    if args.depth is not None and args.free:
        raise QueryError("give either --depth or --free, not both.")
    kw: dict[str, Any] = {"budget": args.budget}
    if args.free:
        kw["free"] = args.free
    else:
        kw["depth"] = 1 if args.depth is None else args.depth
    if args.latex:
        print(latex(sheet, args.cell, **kw))
    else:
        e = expr(sheet, args.cell, **kw)
        print(f"{sheet.name(*sheet.cell(args.cell))} = {e}")
    print(f"value: {sheet.value(args.cell):.10g}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("expr", help="a cell as a SymPy expression (expanded by depth, or with free cells)")
    p.add_argument("cell")
    text_arg(p, default=None, what="the input (default CABACA, or aabaa for aab)")
    p.add_argument("--depth", type=int, default=None, help="steps upstream to expand (default 1)")
    p.add_argument("--free", nargs="+", metavar="CELL", help="keep only these cells symbolic")
    p.add_argument("--latex", action="store_true", help="print LaTeX")
    p.add_argument("--budget", type=int, default=DEFAULT_BUDGET, help="refuse expressions larger than this")
    model_arg(p)
    p.set_defaults(func=_cli)
