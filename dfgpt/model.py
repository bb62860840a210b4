"""A model: its weights, and the verbs that run them (`sheet`, `generate`); `load` by name or path.

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
from typing import Any

from .generation.generate import generate
from .models.catalog import load_weights
from .models.weights import Weights
from .sheet import Sheet

__all__ = ["Model", "load"]


class Model(Weights):
    """Weights and architecture, and the sheets and generations made from them.

    `source`: the (name or path, dtype) `load` read it from, so a worker can load it again.
    """

    source: tuple[str, str | None] | None = None

    @classmethod
    def of(cls, weights: Weights) -> Model:
        """The model of loaded weights (the arrays are shared, read-only, not copied)."""
        if isinstance(weights, cls):
            return weights
        model = cls(weights.config, weights.params, weights.tokenizer, weights.graph)
        model.source_dtype = weights.source_dtype  # what the checkpoint stored (bfloat16, ...)
        return model

    def sheet(self, text: str | Sequence[int], temperature: float = 1.0, exact: bool | None = None) -> Sheet:
        """All the cells of one input, evaluated lazily."""
        return Sheet(self, text, temperature=temperature, exact=exact)  # Cells encodes and checks it, once

    def generate(self, prompt: str | Sequence[int], max_new_tokens: int | None = None, **kw: Any) -> Any:
        """Continue a prompt: temperature, top_k, top_p, seed (see dfgpt.generation.generate)."""
        return generate(self, prompt, max_new_tokens=max_new_tokens, **kw)


def load(name: str | Path = "sort", dtype: str | None = None) -> Model:
    """A shipped model by name (`sort`, `sort-random`, `sort-neat`, `aab`), or a model folder / checkpoint on disk.

    >>> import dfgpt
    >>> dfgpt.load("sort-random").config.vocab
    ('A', 'B', 'C')
    """
    model = Model.of(load_weights(name, dtype))
    model.source = (str(name), dtype)
    return model
