"""A dataset of (clean, corrupted) pairs: texts or token lists, checked once, read from JSON lines.

`as_pairs(model, pairs)` turns every pair into two tuples of token ids of one length (the
sites of a sweep are the same cells in every pair, so every input has the same number of
tokens). `read_pairs(path)` reads a `.jsonl` file, one pair a line, either
`{"clean": "CABACAAAA", "corrupted": "CACACAAAA"}` or `["CABACAAAA", "CACACAAAA"]`; an input
may be a text or a list of token ids.

>>> import dfgpt
>>> m = dfgpt.load("sort")
>>> try:
...     as_pairs(m, [("CABACAAAA", "CACACAAAA"), ([2, 0, 1], [2, 0, 2])])
... except dfgpt.DfgptError as e:
...     print(type(e).__name__, str(e)[:43])
SequenceLengthError pair 1 has 3 tokens and pair 0 has 9: every
>>> as_pairs(m, [("CAB", "CAC"), ([2, 0, 1], [2, 0, 0])])
(((2, 0, 1), (2, 0, 2)), ((2, 0, 1), (2, 0, 0)))
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import DfgptError, QueryError, SequenceLengthError, show
from ..models.weights import Weights

__all__ = ["Tokens", "as_pairs", "read_pairs"]

Tokens = tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]  # per pair: (clean ids, corrupted ids)


def _input(x: Any, where: str) -> str | list[int]:
    if isinstance(x, str):
        return x
    if isinstance(x, (list, tuple)) and all(isinstance(i, int) and not isinstance(i, bool) for i in x):
        return list(x)
    raise QueryError(f"{where} must be a text or a list of token ids, got {show(x)}; "
                     "a pair is (clean, corrupted), e.g. ('CABACAAAA', 'CACACAAAA').")


def as_pairs(model: Weights, pairs: Sequence[Any]) -> Tokens:
    """Every pair's (clean ids, corrupted ids), checked: two inputs each, all of one length."""
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence):
        raise QueryError(f"pairs must be a list of (clean, corrupted) inputs, got {type(pairs).__name__}; "
                         "e.g. [('CABACAAAA', 'CACACAAAA'), ('CBBACAAAA', 'CCBACAAAA')], or read_pairs(path).")
    if not pairs:
        raise QueryError("pairs is empty: give at least one (clean, corrupted) pair.")
    out = []
    for i, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise QueryError(f"pair {i} must be two inputs (clean, corrupted), got {show(pair)}.")
        ids = []
        for x, what in zip(pair, ("clean", "corrupted")):
            try:
                ids.append(tuple(model.encode(_input(x, f"pair {i}'s {what} input"))))
            except DfgptError as e:
                raise type(e)(f"pair {i}'s {what} input: {e}") from None
        out.append((ids[0], ids[1]))
    T = len(out[0][0])
    for i, (a, b) in enumerate(out):
        if len(b) != len(a):
            raise SequenceLengthError(f"pair {i}'s corrupted input has {len(b)} tokens and its clean input "
                                      f"{len(a)}: the two inputs of a pair must have the same length.")
        if len(a) != T:
            raise SequenceLengthError(
                f"pair {i} has {len(a)} tokens and pair 0 has {T}: every input of a dataset must have the same "
                "number of tokens (the sites are the same cells in every pair); pad or crop the inputs, "
                "or sweep each length on its own.")
    return tuple(out)


def read_pairs(path: str | Path) -> list[tuple[Any, Any]]:
    """The pairs of a JSON-lines file: `{"clean": ..., "corrupted": ...}` or `[clean, corrupted]` a line."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise QueryError(f"cannot read the pairs file {show(str(p))}: {e.strerror or type(e).__name__}; "
                         "give the path of a .jsonl file with one (clean, corrupted) pair a line.") from None
    out: list[tuple[Any, Any]] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise QueryError(f"{p}:{n} is not JSON ({e.msg}); write one pair a line, e.g. "
                             '{"clean": "CABACAAAA", "corrupted": "CACACAAAA"}.') from None
        if isinstance(obj, dict) and set(obj) >= {"clean", "corrupted"}:
            out.append((obj["clean"], obj["corrupted"]))
        elif isinstance(obj, list) and len(obj) == 2:
            out.append((obj[0], obj[1]))
        else:
            raise QueryError(f"{p}:{n}: expected {{\"clean\": ..., \"corrupted\": ...}} or [clean, corrupted], "
                             f"got {show(obj)}.")
    if not out:
        raise QueryError(f"{p} holds no pair: write one (clean, corrupted) pair a line.")
    return out
