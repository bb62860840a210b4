"""Generation: continue a prompt one token at a time, each new token appended to one sheet.

Appending is an edit: earlier rows stay valid (the causal mask), so each new token
computes one new row per tensor, a KV cache that falls out of the dependency graph.
The returned text is the continuation only, not the prompt; a prompt given as token ids
gives a list of ids.

The context: only the tokens fed back must fit, so `len(prompt) + max_new_tokens - 1
<= block_size` (the last new token is predicted, never read). Past that, generation is
an error for every model unless `crop=True`, which keeps the last `block_size` tokens
like nanoGPT (a new sheet each time). Cropping is opt-in because it changes what the
model reads: the first tokens are dropped and every position embedding shifts, which a
sliding-window model (`aab`) is made for and a fixed-length task (`sort`: 6 letters + 5
fed back = block_size 11) is not.

>>> import dfgpt
>>> dfgpt.load("sort").generate("CBABBC", max_new_tokens=6)
'ABBBCC'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..cells import Cells
from ..core.blas import one_blas_thread
from ..errors import DfgptError, SequenceLengthError

if TYPE_CHECKING:
    from ..models.weights import Weights

__all__ = ["GenerateError", "Generation", "Step", "generate", "sample_dist"]

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


@dataclass(frozen=True)
class Generation:
    """What `generate(..., steps=True)` returns: the continuation and every step."""

    output: str | list[int]
    steps: tuple[Step, ...]


def _check(temperature: Any, top_k: Any, top_p: Any, max_new_tokens: Any) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise GenerateError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}.")
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
        raise GenerateError(
            f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}."
        )
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise GenerateError(f"top_k must be an integer >= 1 or None (no limit), got {top_k!r}.")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise GenerateError(f"top_p must be in (0, 1] or None (no nucleus cut), got {top_p!r}.")


def _encode(model: Weights, prompt: str | Sequence[int]) -> list[int]:
    """The prompt's ids, checked by Weights.encode (vocabulary, ids in range, not empty).

    A prompt may be longer than the context when it will be cropped, and Weights.encode
    refuses those: it checks the prompt one context-sized piece at a time.
    """
    ids = model.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
    block = model.config.block_size
    return [i for k in range(0, max(len(ids), 1), block) for i in model.encode(ids[k : k + block])]


def sample_dist(logits: np.ndarray, temperature: float, top_k: int | None, top_p: float | None) -> np.ndarray:
    """The distribution to sample from, [V] -> [V]: softmax(logits / T), top-k then top-p kept, renormalised.

    >>> sample_dist(np.array([2.0, 1.0, 0.0]), 1.0, 2, None).round(4)
    array([0.7311, 0.2689, 0.    ])
    """
    z = logits / temperature
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
    if max_new_tokens is None:
        max_new_tokens = max(1, min(CLI_NEW_TOKENS, model.config.block_size + 1 - len(_encode(model, prompt))))
    _check(temperature, top_k, top_p, max_new_tokens)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
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
        return _run(model, ids, prompt, max_new_tokens, float(temperature), top_k, top_p, seed, steps)


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
