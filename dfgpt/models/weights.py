"""Weights: a config, its tensor graph, its parameters and a tokenizer (what a checkpoint holds).

>>> from dfgpt.models.catalog import load_weights
>>> w = load_weights("sort-random")
>>> w.config.n_layer, w.n_params
(3, 85728)
>>> w.encode("CAB")
[2, 0, 1]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.builder import build
from ..core.config import Config, ConfigError
from ..core.graph import Graph
from ..core.rope import rope_tables
from ..errors import SequenceLengthError, StateDictError, TokenError, show
from .checkpoints import params_from_state_dict, saved_keys, write_model_dir
from .tokenizer import CharTokenizer, IdTokenizer, Tokenizer, display_vocab, visible

__all__ = ["Weights"]


class Weights:
    """A config, its tensor graph, its parameters and a tokenizer; immutable in use (edits belong to sheets).

    Everything a checkpoint holds. `dfgpt.Model` is this plus the verbs that run it
    (`sheet`, `generate`); the loaders of this layer return `Weights`.
    """

    def __init__(
        self,
        config: Config,
        params: dict[str, np.ndarray],
        tokenizer: Tokenizer | None = None,
        graph: Graph | None = None,
    ) -> None:
        if not isinstance(config, Config):
            raise ConfigError(f"config must be a dfgpt.Config, got {type(config).__name__}.")
        self.config = config
        self.graph = graph or build(config)
        if config.rotary and isinstance(params, dict):  # the rotary tables: constants of the config
            params = {**rope_tables(config), **params}
        _check_params(params, self.graph)
        self.source_dtype: str = config.dtype  # what the checkpoint stored (a loader says: bfloat16, float16)
        # Read-only views: sheets copy a parameter on their first edit, and a model written
        # in place would leave every sheet's cached values silently out of date.
        self.params = {n: _read_only(a) for n, a in params.items()}
        # No texts in the config: tokens are ids, printed as numbers.
        self.tokenizer: Tokenizer = tokenizer or (CharTokenizer(config.vocab) if config.vocab
                                                  else IdTokenizer(config.vocab_size))

    @classmethod
    def from_state_dict(
        cls, state: dict[str, Any], config: Config | dict[str, Any], tokenizer: Tokenizer | None = None,
        copy: bool = True,
    ) -> Weights:
        """A model from a nanoGPT / minGPT state dict (numpy arrays or torch tensors), copied.

        The model's arrays are its own: changing `state` afterwards changes nothing. Loaders
        that read the arrays fresh from a file pass copy=False.

        >>> import dfgpt
        >>> m = dfgpt.load("sort-random")
        >>> Weights.from_state_dict(m.state_dict(), m.config).n_params
        85728
        """
        if isinstance(config, dict):
            config = Config.from_dict(config)
        if not isinstance(config, Config):
            raise ConfigError(f"config must be a dfgpt.Config or a dict of its fields, got {type(config).__name__}.")
        if not isinstance(state, dict):
            raise StateDictError(f"a state dict maps tensor names to arrays, got {type(state).__name__}.")
        graph = build(config)
        return cls(config, params_from_state_dict(state, graph, copy), tokenizer, graph)

    @property
    def n_params(self) -> int:
        return int(sum(a.size for a in self.params.values()))

    @property
    def vocab(self) -> tuple[str, ...]:
        return self.config.vocab or tuple(self.tokenizer.vocab)

    @property
    def shown(self) -> tuple[str, ...]:
        """Each token as it is displayed everywhere: one spelling for BPE's `Ġ` and SentencePiece's `▁`
        (`␣John`), a lone byte as `<0xE2>` (dfgpt.models.tokenizer.display_vocab); built once."""
        got = self.__dict__.get("_shown")
        if got is None:
            got = self.__dict__["_shown"] = display_vocab(self.vocab)
        return got

    @property
    def token_ids(self) -> dict[str, int]:
        """Token text -> id, in the tokenizer's spelling (`ĠJohn`) and the displayed one (`␣John`); built once
        (a 50k vocabulary is searched often). Where two spellings clash, the tokenizer's own wins."""
        ids = self.__dict__.get("_token_ids")
        if ids is None:
            ids = {t: i for i, t in enumerate(self.vocab)}
            for i, t in enumerate(self.shown):
                ids.setdefault(t, i)
            space = getattr(self.tokenizer, "space", None)
            if space:  # a leading space in any spelling: "▁the", "Ġthe" or "␣the" (a token's own text first)
                for t, i in list(ids.items()):
                    if t.startswith(space):
                        for other in {"▁", "Ġ", "␣"} - {space}:
                            ids.setdefault(other + t[1:], i)
            self.__dict__["_token_ids"] = ids
        return ids

    def encode(self, text: str | Sequence[int]) -> list[int]:
        """Token ids of a text (or ids checked against the vocabulary), within the context."""
        if isinstance(text, str):
            ids = [int(i) for i in self.tokenizer.encode(text)]
            V = self.config.vocab_size
            bad = sorted({i for i in ids if not 0 <= i < V})
            if bad:
                raise TokenError(
                    f"the tokenizer encodes {show(text)} to token ids {bad[:5]}, out of range: this model "
                    f"has ids 0..{V - 1}; the tokenizer file does not match the model's vocabulary."
                )
        elif isinstance(text, list) and all(type(i) is int and 0 <= i < self.config.vocab_size for i in text):
            ids = text.copy()  # ids already in range (as `Model.sheet` hands on what it encoded)
        elif isinstance(text, (list, tuple, np.ndarray)):
            ids = [self._token(i) for i in text]
        else:
            raise TokenError(
                f"an input is a text or a list of token ids (or token texts), got {type(text).__name__}: {text!r}."
            )
        if not ids:
            raise SequenceLengthError("the input is empty: give at least one token.")
        if len(ids) > self.config.block_size:
            raise SequenceLengthError(
                f"the input has {len(ids)} tokens but the context holds {self.config.block_size}; "
                "shorten it (generate(..., crop=True) keeps the last block_size tokens)."
            )
        return ids

    def _token(self, i: Any) -> int:
        """One token of a list: an id in range, or a token's text."""
        V = self.config.vocab_size
        if isinstance(i, str):
            got = self.token_ids.get(i)
            if got is None:
                raise TokenError(f"token {i!r} is not in the vocabulary; give a token text or an id 0..{V - 1}.")
            return got
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise TokenError(f"token ids are whole numbers 0..{V - 1}, got {i!r} ({type(i).__name__}).")
        if not 0 <= int(i) < V:
            raise TokenError(f"token id {int(i)} is out of range: this vocabulary has ids 0..{V - 1}.")
        return int(i)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)

    def token_text(self, i: int) -> str:
        """One token as a reader sees it in a list: its displayed spelling (`␣sat`, `<0xE2>`); its id where
        the vocabulary has no text."""
        shown = self.shown
        if 0 <= i < len(shown) and shown[i] != "∅":
            return shown[i]
        try:
            piece = getattr(self.tokenizer, "piece", None)
            return visible(piece(i) if piece is not None else self.decode([i]))
        except (IndexError, KeyError, ValueError):
            return str(i)

    def state_dict(self) -> dict[str, np.ndarray]:
        """nanoGPT keys (another family's: transformers' keys, no rotary tables); the tied head is not repeated."""
        return {k: self.params[n] for n, k in saved_keys(list(self.params), self.config).items()}

    def save(self, path: str | Path) -> None:
        """A folder with config.json and model.safetensors, loadable by `dfgpt.load(path)`."""
        write_model_dir(self.config, self.params, path)

    def __repr__(self) -> str:
        c = self.config
        heads = _count(c.n_head, "head") + (f" ({c.kv_heads} key/value)" if c.kv_heads != c.n_head else "")
        family = "" if c.family == "gpt2" else f"{c.family}, "
        source = f" from {self.source_dtype}" if self.source_dtype != c.dtype else ""
        computes = "" if c.family == "gpt2" and not source else f", computes in {c.dtype}{source}"
        return (
            f"{type(self).__name__}({c.name or 'gpt'}: {family}{_count(c.n_layer, 'layer')}, {heads}, "
            f"n_embd {c.n_embd}, "
            f"vocab {c.vocab_size}, context {c.block_size}, {self.n_params:,} parameters{computes})"
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _read_only(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v


def _check_params(params: Any, graph: Graph) -> None:
    """Every parameter the graph needs, by dfgpt name, as a real-valued array of its shape."""
    if not isinstance(params, dict):
        raise StateDictError(f"params maps dfgpt parameter names to arrays, got {type(params).__name__}.")
    want = {n: graph.specs[n].dims for n in graph.parameters}
    missing = [n for n in want if n not in params]
    extra = sorted(str(n) for n in params if n not in want)
    wrong = [f"{n}: {getattr(params[n], 'shape', type(params[n]).__name__)}, expected {want[n]}" for n in want
             if n in params and (not isinstance(params[n], np.ndarray) or params[n].shape != want[n]
                                 or params[n].dtype.kind not in "fiu")]
    if missing or extra or wrong:
        parts = [f"missing {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}" if missing else "",
                 f"unexpected {', '.join(extra[:8])}" if extra else "",
                 f"not real arrays of the right shape: {'; '.join(wrong[:4])}" if wrong else ""]
        raise StateDictError(
            "params do not fit the config: " + "; ".join(p for p in parts if p) + ". Give every parameter by "
            "its dfgpt name (dfgpt.models.catalog.random_params(config) shows them), or load nanoGPT keys "
            "with Model.from_state_dict."
        )
