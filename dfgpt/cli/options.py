"""Options every verb shares: which model, which input."""

from __future__ import annotations

import argparse
from typing import NoReturn

__all__ = ["OneLineParser", "model_arg"]


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one `dfgpt: error: ...` line, like every other failure."""

    def error(self, message: str) -> NoReturn:
        verb = self.prog.removeprefix("dfgpt").strip()
        where = f"{verb}: " if verb else ""
        text = " ".join(message.split())
        self.exit(2, f"dfgpt: error: {where}{text}; see `{self.prog} --help`.\n")


def model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="sort", help="shipped model name or path (default: sort)")
