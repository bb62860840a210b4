"""`dfgpt export xlsx|npz PATH [TEXT]`: the sheet as a workbook of live formulas or as arrays."""

from __future__ import annotations

import argparse
from typing import Any

from ..export.writers import to_npz, to_xlsx
from ..model import load
from .options import OneLineParser, model_arg, text_arg

__all__ = ["register"]

def _export(args: argparse.Namespace) -> int:
    sheet = load(args.model).sheet(args.text, temperature=args.temperature)
    if args.format == "xlsx":
        result = to_xlsx(sheet, args.path, progress=False)
    else:
        result = to_npz(sheet, args.path)
    print(result)
    return 0


class _Intermixed(OneLineParser):
    """Accepts `PATH --model NAME TEXT`: positionals before and after options."""

    _inner = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        if self._inner:  # parse_known_intermixed_args calls back into parse_known_args
            return super().parse_known_args(args, namespace)
        self._inner = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False


def register(sub: argparse._SubParsersAction) -> None:
    """`dfgpt export xlsx|npz PATH [--model NAME] [TEXT]`."""
    p = sub.add_parser("export", help="write the sheet as a workbook of live formulas (xlsx) or arrays (npz)")
    fmt = p.add_subparsers(dest="format", required=True, metavar="FORMAT", parser_class=_Intermixed)
    for name, doc in (("xlsx", "a workbook with live formulas"), ("npz", "every tensor's values by name")):
        q = fmt.add_parser(name, help=doc)
        q.add_argument("path")
        text_arg(q, positional=True)
        q.add_argument("--temperature", type=float, default=1.0)
        model_arg(q)
        q.set_defaults(func=_export)
