"""The op registry: each op kind's class, filled by `@register` as the op modules are imported.

Consulted when a graph is built or a tool asks what a kind is, never per row: a computation
calls the op object's own methods.

>>> from dfgpt.core.ops import OpKind, op_class
>>> op_class(OpKind.GELU).__name__, op_class("add").__name__
('Gelu', 'Add')
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from ...errors import QueryError
from .kind import OpKind

if TYPE_CHECKING:
    from .base import Op

__all__ = ["op_class", "register", "registered"]

_CLASSES: dict[OpKind, type[Op]] = {}
O = TypeVar("O", bound="type[Op]")


def register(cls: O) -> O:
    """Class decorator: file an op class under its `kind` (one class per kind)."""
    kind = OpKind(cls.kind)
    if kind in _CLASSES and _CLASSES[kind] is not cls:
        raise ValueError(f"op kind {kind!r} is registered twice: {_CLASSES[kind].__name__} and {cls.__name__}")
    _CLASSES[kind] = cls
    return cls


def op_class(kind: OpKind | str) -> type[Op]:
    """The class of an op kind."""
    try:
        return _CLASSES[OpKind(kind)]
    except ValueError:
        raise QueryError(
            f"no op kind {kind!r}; the kinds are {', '.join(k.value for k in OpKind)}."
        ) from None


def registered() -> dict[OpKind, type[Op]]:
    """{kind: class} for every registered op kind."""
    return dict(_CLASSES)
