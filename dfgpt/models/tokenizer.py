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

__all__ = ["CharTokenizer", "IdTokenizer", "Tokenizer", "display_vocab", "visible"]

# Whitespace a reader cannot see in a list of tokens, as signs they can (BPE tokens often start
# with a space: " sat" reads as "␣sat", so "the cat sat" lists as "the ␣cat ␣sat").
_VISIBLE = str.maketrans({" ": "␣", "\n": "↵", "\t": "⇥", "\r": "⏎"})


def visible(text: str) -> str:
    """A token's text with its whitespace shown.

    >>> visible(" sat"), visible("\\n")
    ('␣sat', '↵')
    """
    return text.translate(_VISIBLE) if text else "∅"


def _byte_chars() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the printable character that stands for each byte in a vocabulary."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = dict(zip(map(chr, keep), keep))
    extra = 0
    for b in range(256):
        if b not in keep:
            chars[chr(256 + extra)] = b  # space is Ġ, newline Ċ, ...
            extra += 1
    return chars


_BYTES = _byte_chars()


def _text_of(raw: bytes) -> str:
    """Bytes as text; a byte that is no whole UTF-8 character alone reads `<0xE2>` (never U+FFFD)."""
    out, at = [], 0
    while at < len(raw):
        try:
            out.append(raw[at:].decode("utf-8"))
            break
        except UnicodeDecodeError as e:
            out.append(raw[at: at + e.start].decode("utf-8"))
            bad = raw[at + e.start: at + e.end]
            out.append("".join(f"<0x{b:02X}>" for b in bad))
            at += e.end
    text = "".join(out)
    # a control character (other than the whitespace `visible` shows) would be invisible or move the cursor
    return "".join(f"<0x{ord(c):02X}>" if (ord(c) < 32 and c not in "\n\t\r") or ord(c) == 127 else c
                   for c in text) if any(ord(c) < 32 or ord(c) == 127 for c in text) else text


def display_vocab(vocab: Sequence[str]) -> tuple[str, ...]:
    """Each token spelled one way for display, whatever the tokenizer's own spelling.

    A byte-level BPE token (GPT-2's `ĠJohn`, `Ċ`) and a SentencePiece piece (`▁John`) are both
    shown as the text they stand for with whitespace made visible (`␣John`, `↵`); a byte that
    is no character alone shows as `<0xE2>`, SentencePiece's own spelling of a byte. A plain
    vocabulary (`A B C`) is shown as it is.

    >>> display_vocab(["ĠJohn", "Ċ", "âĢ", "A"]), display_vocab(["▁John", "<0x0A>", "A"])
    (('␣John', '↵', '<0xE2><0x80>', 'A'), ('␣John', '<0x0A>', 'A'))
    """
    vocab = list(vocab)
    if any("Ġ" in t for t in vocab) and set("".join(vocab)) <= _BYTES.keys():  # byte-level BPE: every char a byte
        return tuple(visible(_text_of(bytes(_BYTES[c] for c in t))) if t else "∅" for t in vocab)
    if any("▁" in t for t in vocab):  # SentencePiece: ▁ is a space
        return tuple(visible(t.replace("▁", " ")) for t in vocab)
    return tuple(t if t.strip() == t and t else visible(t) for t in vocab)


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
    """No tokenizer file: tokens are given as ids, a list or a text of ids separated by spaces
    (what `decode` writes, so `--text "3 17 5"` works on the command line)."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab: tuple[str, ...] = ()
        self.vocab_size = vocab_size

    def encode(self, text: str) -> list[int]:
        parts = text.split()
        if parts and all(p.isascii() and p.isdigit() and len(p) < 10 for p in parts):
            ids = [int(p) for p in parts]
            if max(ids) < self.vocab_size:
                return ids
            raise TokenError(f"token id {max(ids)} in {text[:60]!r} is out of range; this model's ids are "
                             f"0..{self.vocab_size - 1}.")
        raise TokenError(
            f"this checkpoint came without a tokenizer, so {text[:40]!r} cannot be read; give token ids "
            "(a list of ints, or a text of ids separated by spaces such as '464 2068 7586'), "
            "or put tokenizer.json (or vocab.json + merges.txt) beside the weights."
        )

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(str(int(i)) for i in ids)
