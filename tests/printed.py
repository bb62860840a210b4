"""Printed numbers compared the way a reader compares them: to the last digit shown.

Values computed with BLAS differ from one CPU kernel to another in the last bits (AVX-512
and AVX2 sum in different orders), so a number printed with 5 significant digits can land
on the other side of a rounding boundary on another machine. Texts that show computed
numbers (doc outputs, DOT labels, golden files) are compared with this rule:

- everything that is not a number must be identical, character for character;
- a number written without a decimal point or exponent (a count, an index, a shape) must be
  identical;
- a number with a fractional part may differ by at most one unit in its last shown digit
  (`7.5037` matches `7.5036` and `7.5038`, not `7.5040`; `1.2e-05` matches `1.3e-05`).

>>> same_to_last_digit("x = +0.53511, 36 cells", "x = +0.53512, 36 cells")
True
>>> same_to_last_digit("x = +0.53511, 36 cells", "x = +0.53511, 37 cells")
False
"""

from __future__ import annotations

import re
from decimal import Decimal

__all__ = ["first_difference", "same_to_last_digit"]

# A number: an optional sign, digits with an optional fraction, an optional exponent.
# Commas in counts (102,751) split the count into whole numbers, which must match exactly.
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def _unit(text: str) -> Decimal | None:
    """One unit in the last shown digit of a fractional number; None for whole numbers."""
    mant, _, exp = text.lower().partition("e")
    if "." not in mant and not exp:
        return None
    decimals = len(mant.split(".")[1]) if "." in mant else 0
    return Decimal(1).scaleb(-decimals + (int(exp) if exp else 0))


def _numbers_match(a: str, b: str) -> bool:
    if a == b:
        return True
    ua, ub = _unit(a), _unit(b)
    if ua is None or ub is None:
        return False
    # Digits added by a rounding flip (9.9999 -> 10) keep the same unit on both sides.
    return abs(Decimal(a) - Decimal(b)) <= max(ua, ub) * Decimal("1.000001")


def same_to_last_digit(shown: str, actual: str) -> bool:
    """The same text, numbers equal to one unit in their last shown digit."""
    if shown == actual:
        return True
    if NUMBER.split(shown) != NUMBER.split(actual):
        return False
    return all(_numbers_match(a, b) for a, b in zip(NUMBER.findall(shown), NUMBER.findall(actual)))


def first_difference(shown: str, actual: str) -> str | None:
    """The first line pair that differs beyond the last shown digit (for messages), else None."""
    a, b = shown.splitlines(), actual.splitlines()
    if len(a) != len(b):
        return f"{len(a)} lines shown, {len(b)} printed"
    for i, (x, y) in enumerate(zip(a, b)):
        if not same_to_last_digit(x, y):
            return f"line {i + 1}: shown {x!r}, printed {y!r}"
    return None
