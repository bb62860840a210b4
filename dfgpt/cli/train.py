"""`dfgpt train sort`: train the sort model with dfgpt's own gradients."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import OutputError
from ..toys.training import SEED, train_sort

__all__ = ["register"]

def _check_out(out: Path) -> None:
    """Refuse an --out that cannot become a folder before training, not after it."""
    try:
        if out.exists() and not out.is_dir():
            raise OutputError(
                f"--out {str(out)[:200]!r} exists and is not a folder; expected a folder (new or existing) "
                "to write config.json, model.safetensors and TRAINING.md into; choose another path."
            )
        for parent in out.parents:  # the nearest existing ancestor must be a folder
            if parent.exists():
                if not parent.is_dir():
                    raise OutputError(
                        f"--out {str(out)[:200]!r} is below {str(parent)!r}, which is a file, not a folder; "
                        "choose a path whose parents are folders."
                    )
                break
    except OSError as e:
        raise OutputError.wrap(out, e, "use --out") from None


def _train_cmd(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else None
    if out is not None:
        _check_out(out)
    res = train_sort(seed=args.seed, max_steps=args.max_steps)
    print(
        f"seed {res.seed}: {res.steps} steps, {res.seconds:.1f} s, last loss {res.loss:.4f}, "
        f"greedy sorts {round(res.accuracy * 729)}/729"
    )
    if out is not None:
        res.model.save(out)
        try:
            (out / "TRAINING.md").write_text(res.notes(args.max_steps))
        except OSError as e:
            raise OutputError.wrap(out / "TRAINING.md", e) from None
        print(f"wrote {out}/config.json, model.safetensors, TRAINING.md")
    return 0 if res.accuracy == 1.0 else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model with dfgpt's own gradients (the sort task)")
    p.add_argument("task", choices=["sort"], help="the task to train (sort: 6 letters A/B/C)")
    p.add_argument("--seed", type=int, default=SEED, help=f"random seed (default {SEED}, the shipped one)")
    p.add_argument("--out", default=None, help="folder to write config.json + model.safetensors into")
    p.add_argument("--max-steps", type=int, default=20000, help="stop after this many steps at most")
    p.set_defaults(func=_train_cmd)
