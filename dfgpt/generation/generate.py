"""Generation: continue a prompt one token at a time, each new token appended to one sheet.

Appending is an edit: earlier rows stay valid (the causal mask), so each new token
computes one new row per tensor, a KV cache that falls out of the dependency graph.
The returned text is the continuation only, not the prompt; a prompt given as token ids
gives a list of ids.

The context: only the tokens fed back must fit, so `len(prompt) + max_new_tokens - 1
<= block_size` (the last new token is predicted, never read). Past that, generation is
an error for every model unless `crop=True`, which keeps the last `block_size` tokens
like nanoGPT (a new sheet each time). One call makes at most MAX_NEW_TOKENS (100,000) tokens,
cropped or not; generate in pieces past that. Cropping is opt-in because it changes what the
model reads: the first tokens are dropped and every position embedding shifts, which a
sliding-window model (`aab`) is made for and a fixed-length task (`sort`: 6 letters + 5
fed back = block_size 11) is not.

>>> import dfgpt
>>> dfgpt.load("sort").generate("CBABBC", max_new_tokens=6)
'ABBBCC'
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..cells import Cells
from ..core.blas import one_blas_thread
from ..errors import DfgptError, SequenceLengthError, show
from ..html import table

if TYPE_CHECKING:
    from ..models.weights import Weights

__all__ = ["MAX_NEW_TOKENS", "GenerateError", "Generation", "Step", "generate", "sample_dist"]

MAX_NEW_TOKENS = 100_000  # one call's bound: each token is at least a row of every tensor (crop: a new sheet)
CLI_NEW_TOKENS = 16  # `dfgpt generate` without --max-new-tokens: fill the context, up to this many


class GenerateError(DfgptError):
    """Generation arguments out of their domain (temperature, top_k, top_p, max_new_tokens)."""


@dataclass(frozen=True)
class Step:
    """One generation step: the position read, the token chosen, and the distributions there."""

    position: int  # the position whose logits chose the token (in the current context)
    token: int
    text: str
    probs: np.ndarray  # [V] the model's probabilities at that position (temperature 1)
    sampled: np.ndarray  # [V] the distribution sampled from (temperature, top-k, top-p); one-hot if greedy

    def __repr__(self) -> str:
        return f"Step(position {self.position} -> {self.text!r}, p {float(self.probs[self.token]):.4f})"


@dataclass(frozen=True)
class Generation:
    """What `generate(..., steps=True)` returns: the continuation and every step."""

    output: str | list[int]
    steps: tuple[Step, ...]

    def __repr__(self) -> str:
        return f"Generation({self.output!r}, {len(self.steps)} steps)"

    def _repr_html_(self) -> str:
        rows = [[k, s.position, s.text, f"{float(s.probs[s.token]):.4f}", f"{float(s.sampled[s.token]):.4f}"]
                for k, s in enumerate(self.steps)]
        return table(f"generated {self.output!r}", ["step", "position", "token", "p (model)", "p (sampled)"], rows)


def _real(x: Any) -> bool:
    """A real number of any numeric type (int, float, numpy scalars, Fraction), not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def _whole(x: Any) -> bool:
    """An integer of any integer type (int, numpy integers), not a bool."""
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


def _item(x: Any) -> Any:
    """A 0-d array as its number; anything else unchanged (checked by `_check`)."""
    return x.item() if isinstance(x, np.ndarray) and x.ndim == 0 else x


def _check(temperature: Any, top_k: Any, top_p: Any, max_new_tokens: Any) -> None:
    if not _whole(max_new_tokens) or max_new_tokens < 0:
        raise GenerateError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}.")
    if max_new_tokens > MAX_NEW_TOKENS:
        raise GenerateError(
            f"max_new_tokens={max_new_tokens} is more than one call generates (at most {MAX_NEW_TOKENS:,}); "
            "generate in pieces, feeding each output back as the next prompt."
        )
    if not _real(temperature) or not math.isfinite(temperature) or temperature < 0:
        raise GenerateError(
            f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}."
        )
    if top_k is not None and (not _whole(top_k) or top_k < 1):
        raise GenerateError(f"top_k must be an integer >= 1 or None (no limit), got {top_k!r}.")
    if top_p is not None and not (_real(top_p) and 0 < top_p <= 1):
        raise GenerateError(f"top_p must be in (0, 1] or None (no nucleus cut), got {top_p!r}.")


def _encode(model: Weights, prompt: str | Sequence[int]) -> list[int]:
    """The prompt's ids, checked by Weights.encode (vocabulary, ids in range, not empty).

    A prompt may be longer than the context when it will be cropped, and Weights.encode
    refuses those: it checks the prompt one context-sized piece at a time.
    """
    if not isinstance(prompt, (str, list, tuple, np.ndarray)):
        raise GenerateError(
            f"a prompt is a text or a list of token ids, got {show(prompt)} ({type(prompt).__name__}); "
            "e.g. model.generate('CBABBC') or model.generate([2, 1, 0])."
        )
    ids = model.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
    block = model.config.block_size
    return [i for k in range(0, max(len(ids), 1), block) for i in model.encode(ids[k : k + block])]


def sample_dist(logits: np.ndarray, temperature: float, top_k: int | None, top_p: float | None) -> np.ndarray:
    """The distribution to sample from, [V] -> [V]: softmax(logits / T), top-k then top-p kept, renormalised.

    >>> sample_dist(np.array([2.0, 1.0, 0.0]), 1.0, 2, None).round(4)
    array([0.7311, 0.2689, 0.    ])
    """
    # Shifted before dividing: a tiny temperature sends every other logit to -inf (greedy in the
    # limit) instead of overflowing the largest to inf and making nan.
    with np.errstate(over="ignore"):
        z = (logits - logits.max()) / temperature
    if top_k is not None and top_k < z.size:
        kth = np.sort(z)[-top_k]
        z = np.where(z < kth, -np.inf, z)  # like nanoGPT: ties at the k-th value are kept
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p is not None and top_p < 1:
        order = np.argsort(-p, kind="stable")
        before = np.cumsum(p[order]) - p[order]  # mass of the tokens ranked above each one
        drop = order[before >= top_p]
        p[drop] = 0.0
        p /= p.sum()
    return p


def generate(
    model: Weights,
    prompt: str | Sequence[int],
    max_new_tokens: int | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    steps: bool = False,
    crop: bool = False,
) -> Any:
    """The continuation of `prompt` (text, or ids for an id prompt); a Generation with `steps=True`.

    max_new_tokens: None fills the context (for the sort model, 6 letters in, 6 sorted out),
    at most CLI_NEW_TOKENS.
    crop: keep the last block_size tokens when the prompt and the fed-back tokens do not
    fit in the context (nanoGPT's behaviour); by default that is a SequenceLengthError.
    """
    # a 0-d array is its number, as in set
    temperature, top_k, top_p = _item(temperature), _item(top_k), _item(top_p)
    max_new_tokens, seed = _item(max_new_tokens), _item(seed)
    if max_new_tokens is None:
        max_new_tokens = max(1, min(CLI_NEW_TOKENS, model.config.block_size + 1 - len(_encode(model, prompt))))
    _check(temperature, top_k, top_p, max_new_tokens)
    if seed is not None and (not _whole(seed) or seed < 0):
        raise GenerateError(f"seed must be a whole number >= 0 or None, got {seed!r}.")
    if not isinstance(crop, bool):
        raise GenerateError(f"crop must be True or False, got {crop!r}.")
    ids = _encode(model, prompt)
    block = model.config.block_size
    need = max(len(ids), len(ids) + max_new_tokens - 1)  # the last new token is never fed back
    if not crop and need > block:
        room = block + 1 - len(ids)
        raise SequenceLengthError(
            f"{len(ids)} prompt tokens + {max_new_tokens} new ones need a context of {need} (the last "
            f"new token is not fed back), but this model holds {block}"
            + (f"; ask for at most {room} new tokens" if room >= 1
               else f"; shorten the prompt to at most {block} tokens")
            + ", or pass crop=True to keep the last tokens like nanoGPT (this shifts every position)."
        )
    with one_blas_thread():
        return _run(model, ids, prompt, int(max_new_tokens), float(temperature),
                    None if top_k is None else int(top_k), None if top_p is None else float(top_p),
                    None if seed is None else int(seed), steps)


def _run(model: Weights, ids: list[int], prompt: Any, max_new_tokens: int, temperature: float,
         top_k: int | None, top_p: float | None, seed: int | None, steps: bool) -> Any:
    block = model.config.block_size
    rng = np.random.default_rng(seed)
    seq = list(ids)
    sheet = Cells(model, seq[-block:], temperature=1.0)
    record: list[Step] = []
    vocab = model.vocab
    for i in range(max_new_tokens):
        eng = sheet.engine
        rows = np.zeros(eng.T, bool)
        rows[-1] = True
        eng.ensure({"logit": rows})
        logits = np.array(eng.view("logit")[eng.T - 1], dtype=np.float64)
        if temperature == 0:
            tok = int(np.argmax(logits))
            dist = np.zeros_like(logits)
            dist[tok] = 1.0
        else:
            dist = sample_dist(logits, temperature, top_k, top_p)
            tok = min(int(np.searchsorted(np.cumsum(dist), rng.random() * dist.sum(), side="right")),
                      int(np.flatnonzero(dist)[-1]))
        if steps:
            probs = np.exp(logits - logits.max())
            record.append(Step(eng.T - 1, tok, vocab[tok] if tok < len(vocab) else str(tok),
                               probs / probs.sum(), dist))
        seq.append(tok)
        if i + 1 < max_new_tokens:
            if eng.T < block:
                eng.append(tok)
            else:
                sheet = Cells(model, seq[-block:], temperature=1.0)
    new = seq[len(ids) :]
    out: str | list[int] = model.decode(new) if isinstance(prompt, str) else new
    return Generation(out, tuple(record)) if steps else out
