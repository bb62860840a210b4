"""`dfgpt train sort`: train the sort model with dfgpt's own gradients."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..training.train import SEED, train_sort

__all__ = ["register"]

def _train_cmd(args: argparse.Namespace) -> int:
    res = train_sort(seed=args.seed, max_steps=args.max_steps)
    out = Path(args.out) if args.out else None
    print(
        f"seed {res.seed}: {res.steps} steps, {res.seconds:.1f} s, last loss {res.loss:.4f}, "
        f"greedy sorts {round(res.accuracy * 729)}/729"
    )
    if out is not None:
        res.model.save(out)
        (out / "TRAINING.md").write_text(res.notes(args.max_steps))
        print(f"wrote {out}/config.json, model.safetensors, TRAINING.md")
    return 0 if res.accuracy == 1.0 else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model with dfgpt's own gradients (the sort task)")
    p.add_argument("task", choices=["sort"], help="the task to train (sort: 6 letters A/B/C)")
    p.add_argument("--seed", type=int, default=SEED, help=f"random seed (default {SEED}, the shipped one)")
    p.add_argument("--out", default=None, help="folder to write config.json + model.safetensors into")
    p.add_argument("--max-steps", type=int, default=20000, help="stop after this many steps at most")
    p.set_defaults(func=_train_cmd)
