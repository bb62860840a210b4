"""Options every verb shares: which model, which input."""

from __future__ import annotations

import argparse

__all__ = ["model_arg"]


def model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="sort", help="shipped model name or path (default: sort)")
