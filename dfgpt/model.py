"""A model: a config, its tensor graph, its parameters and a tokenizer; sheets are made from it.

>>> import dfgpt
>>> model = dfgpt.load("sort-random")
>>> model.config.n_layer, model.n_params
(3, 85728)
>>> sheet = model.sheet("CABACA")
>>> sheet.value("logit[5]").shape
(3,)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .checkpoints import params_from_state_dict, to_nanogpt_key, write_model_dir
from .config import Config, ConfigError
from .errors import SequenceLengthError, StateDictError, TokenError
from .graph import Graph, build
from .tokenizer import CharTokenizer, Tokenizer

if TYPE_CHECKING:
    from .sheet import Sheet

__all__ = ["Model"]


class Model:
    """Weights and architecture; immutable in use (edits belong to sheets)."""

    def __init__(
        self,
        config: Config,
        params: dict[str, np.ndarray],
        tokenizer: Tokenizer | None = None,
        graph: Graph | None = None,
    ) -> None:
        self.config = config
        self.graph = graph or build(config)
        # Read-only views: sheets copy a parameter on their first edit, and a model written
        # in place would leave every sheet's cached values silently out of date.
        self.params = {n: _read_only(a) for n, a in params.items()}
        self.tokenizer: Tokenizer = tokenizer or CharTokenizer(config.vocab)

    @classmethod
    def from_state_dict(
        cls, state: dict[str, Any], config: Config | dict[str, Any], tokenizer: Tokenizer | None = None
    ) -> Model:
        """A model from a nanoGPT / minGPT state dict (numpy arrays or torch tensors).

        >>> import dfgpt
        >>> m = dfgpt.load("sort-random")
        >>> dfgpt.Model.from_state_dict(m.state_dict(), m.config).n_params
        85728
        """
        if isinstance(config, dict):
            config = Config.from_dict(config)
        if not isinstance(config, Config):
            raise ConfigError(f"config must be a dfgpt.Config or a dict of its fields, got {type(config).__name__}.")
        if not isinstance(state, dict):
            raise StateDictError(f"a state dict maps tensor names to arrays, got {type(state).__name__}.")
        graph = build(config)
        return cls(config, params_from_state_dict(state, graph), tokenizer, graph)

    @property
    def n_params(self) -> int:
        return int(sum(a.size for a in self.params.values()))

    @property
    def vocab(self) -> tuple[str, ...]:
        return self.config.vocab or tuple(self.tokenizer.vocab)

    @property
    def token_ids(self) -> dict[str, int]:
        """Token text -> id, built once (a 50k vocabulary is searched often)."""
        ids = self.__dict__.get("_token_ids")
        if ids is None:
            ids = self.__dict__["_token_ids"] = {t: i for i, t in enumerate(self.vocab)}
        return ids

    def encode(self, text: str | Sequence[int]) -> list[int]:
        """Token ids of a text (or ids checked against the vocabulary), within the context."""
        if isinstance(text, str):
            ids = self.tokenizer.encode(text)
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

    def sheet(
        self, text: str | Sequence[int], temperature: float = 1.0, exact: bool | None = None
    ) -> Sheet:
        """All the cells of one input, evaluated lazily."""
        from .sheet import Sheet

        return Sheet(self, self.encode(text), temperature=temperature, exact=exact)

    def generate(self, prompt: str | Sequence[int], max_new_tokens: int | None = None, **kw: Any) -> Any:
        """Continue a prompt: temperature, top_k, top_p, seed (see dfgpt.generate)."""
        from .generate import generate

        return generate(self, prompt, max_new_tokens=max_new_tokens, **kw)

    def state_dict(self) -> dict[str, np.ndarray]:
        """nanoGPT keys; the tied head is not repeated."""
        return {to_nanogpt_key(n): a for n, a in self.params.items()}

    def save(self, path: str | Path) -> None:
        """A folder with config.json and model.safetensors, loadable by `dfgpt.load(path)`."""
        write_model_dir(self.config, self.params, path)

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Model({c.name or 'gpt'}: {_count(c.n_layer, 'layer')}, {_count(c.n_head, 'head')}, n_embd {c.n_embd}, "
            f"vocab {c.vocab_size}, context {c.block_size}, {self.n_params:,} parameters)"
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _read_only(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v
