"""Typed errors: every failure a user can cause is a `DfgptError` that says what, expected, and how to fix.

>>> import dfgpt
>>> try:
...     dfgpt.load("sort-random").sheet("CAT")
... except dfgpt.DfgptError as e:
...     print(type(e).__name__)
TokenError
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "CheckpointError",
    "DfgptError",
    "EditError",
    "IndexError_",
    "NameError_",
    "QueryError",
    "SequenceLengthError",
    "StateDictError",
    "TokenError",
    "UnknownNameError",
    "suggest",
]


class DfgptError(Exception):
    """Base class of every error dfgpt raises on bad input."""


class NameError_(DfgptError):
    """A cell or tensor name that does not parse."""


class UnknownNameError(NameError_):
    """A name that parses but names nothing in this model."""


class IndexError_(DfgptError):
    """A wrong number of indices, or an index out of range."""


class TokenError(DfgptError):
    """A token outside the model's vocabulary."""


class SequenceLengthError(DfgptError):
    """A sequence empty or longer than the model's context."""


class StateDictError(DfgptError):
    """A state dict with missing, extra or wrong-shaped tensors."""


class CheckpointError(DfgptError):
    """A checkpoint file that cannot be read safely or completely."""


class EditError(DfgptError):
    """An edit that cannot be applied (non-finite value, wrong type, nothing to undo)."""


class QueryError(DfgptError):
    """A query with arguments out of their domain (top < 1, unknown `by`, ...)."""


def suggest(word: str, choices: Iterable[str], n: int = 3) -> str:
    """' Did you mean ...?' for the closest choices, or '' when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"
