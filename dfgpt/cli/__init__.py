"""The `dfgpt` command: the top layer, a thin shell over the public API."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
