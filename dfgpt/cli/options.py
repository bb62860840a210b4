"""Options every verb shares: which model, which input."""

from __future__ import annotations

import argparse
from typing import NoReturn

from ..errors import QueryError

__all__ = ["CLI_TERMS", "OneLineParser", "in_cli_terms", "json_arg", "model_arg", "resolve_text", "text_arg"]


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one `dfgpt: error: ...` line, like every other failure."""

    def error(self, message: str) -> NoReturn:
        verb = self.prog.removeprefix("dfgpt").strip()
        where = f"{verb}: " if verb else ""
        text = " ".join(message.split())
        self.exit(2, f"dfgpt: error: {where}{text}; see `{self.prog} --help`.\n")


def model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="sort", help="shipped model name or path (default: sort)")


def text_arg(p: argparse.ArgumentParser, default: str | None = "CABACA", positional: bool = False,
             what: str = "the input") -> None:
    """The input, the same way on every verb: `--text TEXT`, and a bare TEXT where it reads naturally."""
    shown = f" (default {default})" if default else ""
    if positional:
        p.add_argument("text_pos", nargs="?", default=None, metavar="TEXT", help=f"{what}{shown}; or --text")
    p.add_argument("--text", default=None, help=f"{what}{shown}")
    p.set_defaults(text_default=default)


def resolve_text(args: argparse.Namespace) -> None:
    """args.text from the bare TEXT or --text (given once), else the verb's default."""
    if not hasattr(args, "text_default"):
        return
    pos = getattr(args, "text_pos", None)
    if pos is not None and args.text is not None and pos != args.text:
        raise QueryError(f"the input is given twice ({pos!r} and --text {args.text!r}); give it once.")
    args.text = pos if pos is not None else args.text if args.text is not None else args.text_default


def json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the answer as one JSON object (for scripts)")


# The library's errors name Python calls; on the command line the same advice names flags.
CLI_TERMS = (
    ("generate(..., crop=True)", "`dfgpt generate --crop`"),
    ("pass crop=True", "pass --crop"),
    ("sheet.tensors()", "`dfgpt draw model --level text`"),
    ("sheet.impact(cell)", "`dfgpt precedents CELL --dependents`"),
    ("(or None for every block)", "(or 'model' for every block)"),
)


def in_cli_terms(message: str) -> str:
    """An error message with its Python advice in command-line words.

    >>> in_cli_terms("shorten it (generate(..., crop=True) keeps the last block_size tokens).")
    'shorten it (`dfgpt generate --crop` keeps the last block_size tokens).'
    """
    for python, cli in CLI_TERMS:
        message = message.replace(python, cli)
    return message
