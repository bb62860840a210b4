"""Datasets: (clean, corrupted) pairs or single inputs, texts or token lists, checked once, read from files.

`as_pairs(model, pairs)` turns every pair into two tuples of token ids of one length (the
sites of a sweep are the same cells in every pair, so every input has the same number of
tokens). `read_pairs(path)` reads a `.jsonl` file, one pair a line, either
`{"clean": "CABACAAAA", "corrupted": "CACACAAAA"}` or `["CABACAAAA", "CACACAAAA"]`; an input
may be a text or a list of token ids. `as_inputs(model, inputs)` and `read_inputs(path)` do the
same for a dataset of single inputs (an ablation sweep, influence, the task score): a `.jsonl`
file holds one input a line (`"CABACA"`, `[2, 0, 1]` or `{"input": ...}`), any other file one
text a line.

>>> import dfgpt
>>> m = dfgpt.load("sort")
>>> try:
...     as_pairs(m, [("CABACAAAA", "CACACAAAA"), ([2, 0, 1], [2, 0, 2])])
... except dfgpt.DfgptError as e:
...     print(type(e).__name__, str(e)[:43])
SequenceLengthError pair 1 has 3 tokens and pair 0 has 9: every
>>> as_pairs(m, [("CAB", "CAC"), ([2, 0, 1], [2, 0, 0])])
(((2, 0, 1), (2, 0, 2)), ((2, 0, 1), (2, 0, 0)))
>>> as_inputs(m, ["CAB", [2, 0]], same_length=False)
((2, 0, 1), (2, 0))
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import DfgptError, QueryError, SequenceLengthError, show
from ..models.weights import Weights

__all__ = ["Inputs", "Tokens", "as_inputs", "as_pairs", "read_inputs", "read_pairs"]

Tokens = tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]  # per pair: (clean ids, corrupted ids)
Inputs = tuple[tuple[int, ...], ...]  # per input: its token ids


def _input(x: Any, where: str) -> str | list[int]:
    if isinstance(x, str):
        return x
    if isinstance(x, (list, tuple)) and all(isinstance(i, int) and not isinstance(i, bool) for i in x):
        return list(x)
    raise QueryError(f"{where} must be a text or a list of token ids, got {show(x)}; "
                     "a pair is (clean, corrupted), e.g. ('CABACAAAA', 'CACACAAAA').")


def _ids(model: Weights, x: Any, where: str) -> tuple[int, ...]:
    try:
        return tuple(model.encode(_input(x, where)))
    except DfgptError as e:
        raise type(e)(f"{where}: {e}") from None


def as_inputs(model: Weights, inputs: Sequence[Any], same_length: bool = True) -> Inputs:
    """Every input's token ids, checked; `same_length`: all of one length (the sites of an ablation
    sweep are the same cells in every input)."""
    if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Sequence):
        raise QueryError(f"inputs must be a list of texts or token lists, got {type(inputs).__name__}; "
                         "e.g. ['CABACA', 'BCAACB'], or read_inputs(path).")
    if not inputs:
        raise QueryError("inputs is empty: give at least one input, e.g. ['CABACA'].")
    out = tuple(_ids(model, x, f"input {i}") for i, x in enumerate(inputs))
    if same_length:
        for i, a in enumerate(out):
            if len(a) != len(out[0]):
                raise SequenceLengthError(
                    f"input {i} has {len(a)} tokens and input 0 has {len(out[0])}: every input of this dataset "
                    "must have the same number of tokens (the sites are the same cells in every input); pad or "
                    "crop the inputs, or run each length on its own.")
    return out


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
        ids = [_ids(model, x, f"pair {i}'s {what} input") for x, what in zip(pair, ("clean", "corrupted"))]
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


def _lines(p: Path, what: str) -> list[tuple[int, str]]:
    """(line number, line) of every line of the file that is not blank."""
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        why = getattr(e, "strerror", None) or type(e).__name__
        one = "one (clean, corrupted) pair" if what == "pairs" else "one input"
        raise QueryError(f"cannot read the {what} file {show(str(p))}: {why}; give the path of a .jsonl file "
                         f"with {one} a line.") from None
    return [(n, line) for n, line in enumerate(lines, 1) if line.strip()]


def _json_lines(p: Path, what: str, example: str) -> list[tuple[int, Any]]:
    """(line number, value) of every JSON line of the file."""
    out = []
    for n, line in _lines(p, what):
        try:
            out.append((n, json.loads(line)))
        except json.JSONDecodeError as e:
            raise QueryError(f"{p}:{n} is not JSON ({e.msg}); write one {what[:-1]} a line, e.g. {example}.") from None
        except RecursionError:  # Python's parser recurses once per level of nesting
            raise QueryError(f"{p}:{n} nests lists or objects too deeply to read ({len(line)} characters); write one "
                             f"{what[:-1]} a line, e.g. {example}.") from None
    return out


def read_pairs(path: str | Path) -> list[tuple[Any, Any]]:
    """The pairs of a JSON-lines file: `{"clean": ..., "corrupted": ...}` or `[clean, corrupted]` a line."""
    p = Path(path)
    out: list[tuple[Any, Any]] = []
    for n, obj in _json_lines(p, "pairs", '{"clean": "CABACAAAA", "corrupted": "CACACAAAA"}'):
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


def read_inputs(path: str | Path) -> list[Any]:
    """The inputs of a file: `.jsonl`, one a line (`"CABACA"`, `[2, 0, 1]`, `{"input": ...}`); else a text a line."""
    p = Path(path)
    if p.suffix not in (".jsonl", ".json"):
        return [line.strip() for _, line in _lines(p, "inputs")]
    out: list[Any] = []
    for n, obj in _json_lines(p, "inputs", '"CABACA"'):
        if isinstance(obj, dict) and set(obj) == {"input"}:
            obj = obj["input"]
        if not isinstance(obj, (str, list)):
            raise QueryError(f"{p}:{n}: expected an input (\"CABACA\", a list of token ids or {{\"input\": ...}}), "
                             f"got {show(obj)}; a file of (clean, corrupted) pairs is read by read_pairs.")
        out.append(obj)
    if not out:
        raise QueryError(f"{p} holds no input: write one input a line.")
    return out
