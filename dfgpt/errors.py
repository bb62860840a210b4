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
import math
from collections.abc import Iterable
from typing import Any

__all__ = [
    "BadIndexError",
    "BadNameError",
    "CheckpointError",
    "ClusterError",
    "DfgptError",
    "EditError",
    "IndexError_",
    "NameError_",
    "OutputError",
    "QueryError",
    "SequenceLengthError",
    "StateDictError",
    "TokenError",
    "UnknownNameError",
    "show",
    "suggest",
]


class DfgptError(Exception):
    """Base class of every error dfgpt raises on bad input."""


class BadNameError(DfgptError, NameError):
    """A cell or tensor name that does not parse (also a built-in NameError)."""


class UnknownNameError(BadNameError):
    """A name that parses but names nothing in this model."""


class BadIndexError(DfgptError, IndexError):
    """A wrong number of indices, or an index out of range (also a built-in IndexError)."""


# The earlier names (a trailing underscore, which showed in messages and the API's `error` field),
# kept as aliases so that `except IndexError_` in existing code still works.
NameError_ = BadNameError
IndexError_ = BadIndexError


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


class ClusterError(DfgptError):
    """A distributed run that cannot start or finish (no scheduler there, a chunk failed on every retry)."""


class OutputError(DfgptError):
    """A file or folder that cannot be written (a parent that is a file, a name too long, no permission)."""

    @classmethod
    def wrap(cls, path: object, e: OSError, what: str = "write") -> OutputError:
        """The OSError `e` met writing `path`, as one sentence with the fix."""
        reason = e.strerror or type(e).__name__
        shown = str(path)
        if len(shown) > 200:
            shown = shown[:100] + "..." + shown[-60:] + f" ({len(shown)} characters)"
        return cls(
            f"cannot {what} {shown!r}: {reason}. Expected a path whose parent folders exist or can be "
            "made and are folders, not files; choose another path."
        )


def suggest(word: str, choices: Iterable[str], n: int = 3) -> str:
    """' Did you mean ...?' for the closest choices, or '' when none is close."""
    if not isinstance(word, str) or len(word) > 200:  # nothing that long is a typo of a name; bound the work
        return ""
    close = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


def show(value: Any, limit: int = 60) -> str:
    """repr(value) shortened for a message: a long text is cut, and a huge int (which Python
    will not print past 4,300 digits) is described by its size."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**limit:
        return f"an integer of about {int(math.log10(abs(value)))} digits"
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 20]}...{text[-10:]} ({len(text)} characters)"
