"""The `dfgpt` command line: the same verbs as the Python API.

    dfgpt run CABACA                 # logits and probabilities per position
    dfgpt formula "logit[5][A]"      # a cell's formula, value and state
    dfgpt precedents "logit[5][A]"   # the cells it reads directly

Each verb group is a module of this package with a `register(subparsers)`; every verb
parses its arguments, calls the public API and prints. No library module imports this
package.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from ..errors import DfgptError, QueryError
from ..model import load
from . import draw, edit, export, expr, generate, train, why
from .options import OneLineParser, model_arg

__all__ = ["build_parser", "main"]

VERBS = (why, edit, expr, draw, export, train, generate)  # each adds its verbs, in this order


def _run(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise QueryError(f"--top must be at least 1 (tokens shown per position), got {args.top}.")
    model = load(args.model)
    sheet = model.sheet(args.text, temperature=args.temperature)
    logits = sheet.values("logit")
    probs = sheet.values("prob")
    vocab = model.vocab
    top = min(len(vocab), args.top)
    print(f"{model!r}")
    print(f"input: {sheet.text!r} ({sheet.T} tokens), temperature {args.temperature:g}")
    for t in range(sheet.T):
        order = np.argsort(-logits[t], kind="stable")[:top]
        cells = "  ".join(f"{vocab[v]!s}: logit {logits[t, v]:+.4f} p {probs[t, v]:.4f}" for v in order)
        print(f"pos {t:>2} {model.decode([sheet.tokens[t]])!r} -> {cells}")
    nxt = [int(np.argmax(logits[t])) for t in range(sheet.T)]
    print(f"greedy next tokens: {model.decode(nxt)!r}")
    return 0


def _formula(args: argparse.Namespace) -> int:
    sheet = load(args.model).sheet(args.text)
    print(sheet.formula(args.cell))
    print(f"value: {sheet.value(args.cell):.10g}   kind: {sheet.kind(args.cell)}   state: {sheet.state(args.cell)}")
    return 0


def _precedents(args: argparse.Namespace) -> int:
    sheet = load(args.model).sheet(args.text)
    cells = sheet.dependents(args.cell) if args.dependents else sheet.precedents(args.cell)
    for name in cells:
        print(name)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="dfgpt", description="A GPT as a spreadsheet of named cells.")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    p = sub.add_parser("run", help="run the model on a text: logits and probabilities per position")
    p.add_argument("text", nargs="?", default="CABACA")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top", type=int, default=3, help="tokens shown per position")
    model_arg(p)
    p.set_defaults(func=_run)
    p = sub.add_parser("formula", help="the formula, value and state of one cell")
    p.add_argument("cell")
    p.add_argument("--text", default="CABACA", help="the input (default CABACA)")
    model_arg(p)
    p.set_defaults(func=_formula)
    p = sub.add_parser("precedents", help="the cells one cell reads directly")
    p.add_argument("cell")
    p.add_argument("--text", default="CABACA")
    p.add_argument("--dependents", action="store_true", help="list the cells that read it instead")
    model_arg(p)
    p.set_defaults(func=_precedents)
    for verb in VERBS:
        verb.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DfgptError as e:
        print(f"dfgpt: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
