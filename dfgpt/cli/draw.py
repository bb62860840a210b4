"""`dfgpt draw TARGET`: a stage or a cell's cone as DOT, SVG, PNG or PDF, or a text listing."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ..errors import QueryError
from ..model import load
from ..views.attention_map import attention_map
from ..views.colors import write
from ..views.render import LEVELS, draw, text_view
from .options import model_arg, text_arg

__all__ = ["register"]

def _cli(args: argparse.Namespace) -> int:
    model = load(args.model)
    target = None if args.target == "model" else args.target
    if args.level == "text":
        out = text_view(model if target is None else model.sheet(args.text), target)
        if args.output:
            Path(args.output).write_text(out, encoding="utf-8")
        else:
            sys.stdout.write(out)
        return 0
    if args.level == "attention":
        layer = None
        if target is not None:
            m = re.fullmatch(r"h\[(\d{1,6})\](?:\.attn(?:\.att)?)?", target)
            if m is None:
                raise QueryError(f"--level attention draws the heads of one block, named like 'h[1]' or "
                                 f"'h[1].attn', or of every block with 'model'; got {target!r}.")
            layer = int(m.group(1))
        dot = attention_map(model.sheet(args.text), layer=layer, path=args.output)
    else:
        obj = model if target is None and args.level in (None, "model") else model.sheet(args.text)
        dot = draw(obj, target, level=args.level, depth=args.depth, max_nodes=args.max_nodes,
                   expand=args.expand)
        if args.output:
            write(dot, args.output)
    if args.output:
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(dot.source)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("draw", help="draw a stage or a cell's cone (DOT, SVG, PNG, PDF) or list it as text")
    p.add_argument("target", help="'model', a stage ('h[0]', 'h[0].attn') or one cell ('logit[5][A]')")
    text_arg(p)
    p.add_argument("--level", choices=[*LEVELS, "text", "attention"], default=None)
    p.add_argument("--depth", type=int, default=2, help="cell level: how many levels of precedents")
    p.add_argument("--max-nodes", type=int, default=200, help="cell level: node budget")
    p.add_argument("--expand", action="store_true", help="model level: draw every block")
    p.add_argument("-o", "--output", default=None, help="file.svg|png|pdf|dot (default: DOT on stdout)")
    model_arg(p)
    p.set_defaults(func=_cli)
