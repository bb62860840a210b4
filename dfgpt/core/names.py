"""Cell names: parse and print `h[1].attn.c_attn.w[3][40]`, `logit[5][A]`, `h[*].attn.att[1][5][:]`.

A name is a tensor path (dot-separated segments, which may carry their own indices, as in
`h[1]`) followed by one index per axis of that tensor. Parsing is purely syntactic; a
`Sheet` resolves the result against its tensors (token texts, ranges, "did you mean").

>>> from dfgpt.core.names import parse
>>> sel = parse("logit[5][A]")
>>> sel.path, sel.index
('logit', (5, 'A'))
>>> str(parse("h[*].attn.att[1][5][0:3]"))
'h[*].attn.att[1][5][0:3]'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import IndexError_, NameError_, show

__all__ = ["ALL", "Index", "Selector", "format_index", "parse", "path_matches", "split_path"]


class _All:
    """The wildcard index `*` (also written `:`): every position of an axis."""

    _instance: _All | None = None

    def __new__(cls) -> _All:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ALL"


ALL = _All()
Index = int | str | slice | _All

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT = re.compile(r"-?[0-9]+")
_SLICE = re.compile(r"(-?[0-9]*):(-?[0-9]*)(?::(-?[0-9]*))?")


@dataclass(frozen=True)
class Selector:
    """A parsed name: a tensor path pattern and the indices that follow it."""

    path: str
    index: tuple[Index, ...] = ()

    def __str__(self) -> str:
        return self.path + "".join(f"[{format_index(i)}]" for i in self.index)

    @property
    def is_wild(self) -> bool:
        return "*" in self.path or any(not isinstance(i, (int, str)) for i in self.index)


def format_index(i: Index) -> str:
    """Print one index the way `parse` reads it back."""
    if i is ALL:
        return ":"
    if isinstance(i, slice):
        parts = ["" if v is None else str(v) for v in (i.start, i.stop)]
        s = ":".join(parts)
        return s if i.step is None else f"{s}:{i.step}"
    return str(i)


_DIGITS = 18  # more digits than any tensor's size has; Python refuses int() past 4,300


def _int(raw: str, text: str, clamp: bool) -> int:
    """An index or slice bound; a bound of absurdly many digits clamps (a slice past the end is
    the whole axis), an index of absurdly many digits is out of range of every tensor."""
    digits = raw.lstrip("-")
    if len(digits) <= _DIGITS:
        return int(raw)
    if clamp:
        return -(10**_DIGITS) if raw.startswith("-") else 10**_DIGITS
    raise IndexError_(
        f"index {raw[:12]}... ({len(digits)} digits) in {show(text)} is out of range of every tensor; "
        "indices count from 0 (from the end when negative) and are far smaller."
    )


def _parse_index(raw: str, text: str) -> Index:
    if raw in ("*", ":"):
        return ALL
    if _INT.fullmatch(raw):
        return _int(raw, text, clamp=False)
    m = _SLICE.fullmatch(raw)
    if m:
        start, stop, step = (_int(g, text, clamp=True) if g else None for g in m.groups())
        if step == 0:
            raise NameError_(f"slice step 0 in {text!r}: a step must be non-zero, e.g. [0:6:2].")
        return slice(start, stop, step)
    if raw == "":
        raise NameError_(f"empty index '[]' in {text!r}: write a number, a token, a slice or '*'.")
    return raw


def _segments(text: str) -> list[tuple[str, list[str]]]:
    """Split 'h[0].attn.att[1][2]' into [('h', ['0']), ('attn', []), ('att', ['1', '2'])]."""
    segs: list[tuple[str, list[str]]] = []
    pos, n = 0, len(text)
    while True:
        m = _IDENT.match(text, pos)
        if not m:
            where = text[:pos] + "⟨here⟩" + text[pos:]
            raise NameError_(
                f"cannot parse name {text!r} at {where!r}: expected a name like "
                "'logit[5][A]' or 'h[0].attn.att[1][5][3]'."
            )
        ident, pos = m.group(), m.end()
        brackets: list[str] = []
        while pos < n and text[pos] == "[":
            close = text.find("]", pos + 1)
            if close < 0:
                raise NameError_(f"unclosed '[' in name {text!r}: add the closing ']'.")
            brackets.append(text[pos + 1 : close])
            pos = close + 1
        segs.append((ident, brackets))
        if pos == n:
            return segs
        if text[pos] != ".":
            hint = (" A token that contains ']' (or '[') cannot be written inside brackets: address it by "
                    "its id, e.g. logit[5][93]." if text[pos] == "]" else "")
            raise NameError_(
                f"unexpected {text[pos]!r} in name {text!r}: segments are joined by '.', "
                "indices are written in brackets." + hint
            )
        pos += 1


def parse(text: str) -> Selector:
    """Parse a cell, slice or tensor name (syntax only)."""
    if not isinstance(text, str):
        raise NameError_(f"a cell name must be a string, got {type(text).__name__}: {text!r}.")
    text = text.strip()
    segs = _segments(text)
    head = [ident + "".join(f"[{b}]" for b in br) for ident, br in segs[:-1]]
    last_ident, last_br = segs[-1]
    path = ".".join([*head, last_ident])
    return Selector(path, tuple(_parse_index(b, text) for b in last_br))


def split_path(path: str) -> list[tuple[str, list[str]]]:
    """The segments of a tensor path, brackets kept raw."""
    return _segments(path)


def _bracket_matches(pattern: str, value: str) -> bool:
    if pattern in ("*", ":") or pattern == value:
        return True
    if _INT.fullmatch(value):
        v = _int(value, value, clamp=True)
        m = _SLICE.fullmatch(pattern)
        if m:
            start, stop, step = (_int(g, pattern, clamp=True) if g else None for g in m.groups())
            if any(x is not None and x < 0 for x in (start, stop, step)):
                raise NameError_(
                    f"'[{pattern}]' in a path: path ranges count forward, e.g. h[0:2] or h[*]; "
                    "negative bounds are for cell indices such as logit[-1]."
                )
            return v in range(start or 0, stop if stop is not None else v + 1, step or 1)
    return False


def path_matches(pattern: str, path: str) -> bool:
    """Does the tensor path `path` match `pattern` (which may use `*` and slices in brackets)?

    A pattern also matches every tensor below it: `h[0]` matches `h[0].ln_1.out`.
    """
    if pattern == path:
        return True
    ps, ts = _segments(pattern), _segments(path)
    if len(ps) > len(ts):
        return False
    for (pi, pb), (ti, tb) in zip(ps, ts):
        if pi != ti and pi != "*":
            return False
        if len(pb) != len(tb) or not all(_bracket_matches(a, b) for a, b in zip(pb, tb)):
            return False
    return True
