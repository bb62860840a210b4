"""Tokenizers: characters for the small models; a BPE tokenizer file for GPT-2 checkpoints.

>>> from dfgpt.models.tokenizer import CharTokenizer
>>> tok = CharTokenizer(("A", "B", "C"))
>>> tok.encode("CAB"), tok.decode([2, 0, 1])
([2, 0, 1], 'CAB')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..errors import TokenError

__all__ = ["CharTokenizer", "IdTokenizer", "Tokenizer", "visible"]

# Whitespace a reader cannot see in a list of tokens, as signs they can (BPE tokens often start
# with a space: " sat" reads as "␣sat", so "the cat sat" lists as "the ␣cat ␣sat").
_VISIBLE = str.maketrans({" ": "␣", "\n": "↵", "\t": "⇥", "\r": "⏎"})


def visible(text: str) -> str:
    """A token's text with its whitespace shown.

    >>> visible(" sat"), visible("\\n")
    ('␣sat', '↵')
    """
    return text.translate(_VISIBLE) if text else "∅"


class Tokenizer(Protocol):
    vocab: tuple[str, ...]

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class CharTokenizer:
    """One token per character of the vocabulary."""

    def __init__(self, vocab: Sequence[str]) -> None:
        self.vocab = tuple(vocab)
        self.ids = {t: i for i, t in enumerate(self.vocab)}

    def encode(self, text: str) -> list[int]:
        bad = sorted({ch for ch in text if ch not in self.ids})
        if bad:
            raise TokenError(
                f"{''.join(bad)!r} in {text!r} is not in the vocabulary; "
                f"this model reads only {' '.join(self.vocab)}."
            )
        return [self.ids[ch] for ch in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.vocab[int(i)] for i in ids)


class IdTokenizer:
    """No tokenizer file: tokens are given as ids."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab: tuple[str, ...] = ()
        self.vocab_size = vocab_size

    def encode(self, text: str) -> list[int]:
        raise TokenError(
            "this checkpoint came without a tokenizer; give token ids (a list of ints), "
            "or put tokenizer.json (or vocab.json + merges.txt) beside the weights."
        )

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(str(int(i)) for i in ids)
