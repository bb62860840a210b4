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
import json
import os
import sys
from collections.abc import Sequence
from importlib.metadata import version

import numpy as np

from ..errors import DfgptError, QueryError
from ..model import load
from . import circuit, draw, edit, export, expr, generate, lens, patch, serve, train, why
from .options import OneLineParser, in_cli_terms, json_arg, model_arg, resolve_text, text_arg

__all__ = ["build_parser", "main"]

# each adds its verbs, in this order
VERBS = (why, edit, expr, draw, export, train, generate, patch, circuit, lens, serve)


def _run(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise QueryError(f"--top must be at least 1 (tokens shown per position), got {args.top}.")
    model = load(args.model)
    sheet = model.sheet(args.text, temperature=args.temperature)
    logits = sheet.values("logit")
    probs = sheet.values("prob")
    vocab = model.shown  # one spelling for display: `␣John`, never GPT-2's `ĠJohn` beside a decoded ' John'
    top = min(len(vocab), args.top)
    if args.json:
        print(json.dumps({"model": model.config.name, "tokens": sheet.tokens, "vocab": list(vocab),
                          "logits": logits.tolist(), "probs": probs.tolist(),
                          "greedy_next": [int(np.argmax(logits[t])) for t in range(sheet.T)]}))
        return 0
    print(f"{model!r}")
    greedy = " (greedy: p is 1 on the largest logit, ties to the lowest id)" if args.temperature == 0 else ""
    print(f"input: {sheet.text!r} ({sheet.T} tokens), temperature {args.temperature:g}{greedy}")
    for t in range(sheet.T):
        order = np.argsort(-logits[t], kind="stable")[:top]
        cells = "  ".join(f"{vocab[v]!s}: logit {logits[t, v]:+.4f} p {probs[t, v]:.4f}" for v in order)
        print(f"pos {t:>2} {model.token_text(sheet.tokens[t])!r} -> {cells}")
    nxt = [int(np.argmax(logits[t])) for t in range(sheet.T)]  # one prediction per position, not a text:
    print(f"greedy next tokens: {''.join(model.token_text(i) for i in nxt)!r}")  # spelled token by token
    return 0


def _formula(args: argparse.Namespace) -> int:
    sheet = load(args.model).sheet(args.text)
    if args.json:  # the same fields as the explorer's /api/cell
        name = sheet.name(*sheet.cell(args.cell))
        print(json.dumps({"name": name, "value": sheet.value(name), "formula": sheet.formula(name),
                          "precedents": sheet.precedents(name), "dependents": sheet.dependents(name),
                          "kind": sheet.kind(name), "state": sheet.state(name)}))
        return 0
    print(sheet.formula(args.cell))
    print(f"value: {sheet.value(args.cell):.10g}   kind: {sheet.kind(args.cell)}   state: {sheet.state(args.cell)}")
    return 0


def _precedents(args: argparse.Namespace) -> int:
    sheet = load(args.model).sheet(args.text)
    cells = sheet.dependents(args.cell) if args.dependents else sheet.precedents(args.cell)
    if args.json:
        print(json.dumps({"cell": args.cell, "dependents" if args.dependents else "precedents": cells}))
        return 0
    if not cells:  # say why the list is empty rather than print nothing
        kind = sheet.kind(args.cell)
        why = ("nothing reads it in this input" if args.dependents else
               {"parameter": "it is a parameter, a constant of the model: it reads no cell",
                "input": "it is an input: it reads no cell",
                "computed": "it is pinned to a constant, so it reads no cell"}[kind])
        other = "precedents (drop --dependents)" if args.dependents else "dependents (--dependents)"
        print(f"{args.cell}: no {'dependents' if args.dependents else 'precedents'}: {why}. Its {other} may help.")
        return 0
    for name in cells:
        print(name)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="dfgpt", description="A GPT as a spreadsheet of named cells.")
    parser.add_argument("--version", action="version", version=f"dfgpt {version('dfgpt')}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    p = sub.add_parser("run", help="run the model on a text: logits and probabilities per position")
    text_arg(p, positional=True)
    p.add_argument("--temperature", type=float, default=1.0,
                   help="the softmax temperature of p (default 1); 0 is greedy: p is one-hot on the largest logit")
    p.add_argument("--top", type=int, default=3, help="tokens shown per position")
    json_arg(p)
    model_arg(p)
    p.set_defaults(func=_run)
    p = sub.add_parser("formula", help="the formula, value and state of one cell")
    p.add_argument("cell")
    text_arg(p)
    json_arg(p)
    model_arg(p)
    p.set_defaults(func=_formula)
    p = sub.add_parser("precedents", help="the cells one cell reads directly")
    p.add_argument("cell")
    text_arg(p)
    p.add_argument("--dependents", action="store_true", help="list the cells that read it instead")
    json_arg(p)
    model_arg(p)
    p.set_defaults(func=_precedents)
    for verb in VERBS:
        verb.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:  # `dfgpt` alone: what it can do
        parser.print_help()
        return 0
    try:
        resolve_text(args)
        return int(args.func(args) or 0)
    except DfgptError as e:
        print(f"dfgpt: error: {in_cli_terms(str(e))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `dfgpt run --json | head`: the reader left; nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0




if __name__ == "__main__":
    sys.exit(main())
