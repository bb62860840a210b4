"""Generation: continue a prompt one token at a time, each new token appended to one sheet.

Appending is an edit: earlier rows stay valid (the causal mask), so each new token
computes one new row per tensor, a KV cache that falls out of the dependency graph.
The context is cropped to the last `block_size` tokens like nanoGPT (a new sheet then).
The returned text is the continuation only, not the prompt; a prompt given as token ids
gives a list of ids.

The sort task holds 6 letters and 5 fed-back outputs (block_size 11): cropping would
shift every position embedding and make the task meaningless, so for a sort model
`prompt + max_new_tokens - 1 > block_size` is an error unless `crop=True` is passed.
Other models crop by default.

>>> import dfgpt
>>> dfgpt.load("sort").generate("CBABBC", max_new_tokens=6)
'ABBBCC'
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import DfgptError, SequenceLengthError, TokenError

if TYPE_CHECKING:
    from .model import Model

__all__ = ["GenerateError", "Generation", "Step", "generate", "register", "sample_dist"]


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


def _is_sort_task(model: Model) -> bool:
    name = model.config.name or ""
    return name == "sort" or name.startswith("sort-")


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


def _encode(model: Model, prompt: str | Sequence[int]) -> list[int]:
    if isinstance(prompt, str):
        ids = model.tokenizer.encode(prompt)
    else:
        ids = [int(i) for i in prompt]
        V = model.config.vocab_size
        bad = [i for i in ids if not 0 <= i < V]
        if bad:
            raise TokenError(f"token ids {bad} are out of range: this vocabulary has ids 0..{V - 1}.")
    if not ids:
        raise SequenceLengthError("the prompt is empty: give at least one token to continue.")
    return ids


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
    model: Model,
    prompt: str | Sequence[int],
    max_new_tokens: int = 5,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    steps: bool = False,
    crop: bool | None = None,
) -> Any:
    """The continuation of `prompt` (text, or ids for an id prompt); a Generation with `steps=True`."""
    _check(temperature, top_k, top_p, max_new_tokens)
    ids = _encode(model, prompt)
    block = model.config.block_size
    crop = not _is_sort_task(model) if crop is None else crop
    total = len(ids) + max_new_tokens - 1  # the last new token is never fed back
    if not crop and max(len(ids), total) > block:
        room = block + 1 - len(ids)
        raise SequenceLengthError(
            f"{len(ids)} prompt tokens + {max_new_tokens} new ones need a context of {total}, but "
            f"this model holds {block} (the sort task: 6 letters + 5 fed-back outputs)"
            + (f"; ask for at most {room} new tokens" if room >= 1
               else f"; shorten the prompt to at most {block} tokens")
            + ", or pass crop=True to crop the context like nanoGPT."
        )
    from .train import one_blas_thread

    with one_blas_thread():
        return _run(model, ids, prompt, max_new_tokens, float(temperature), top_k, top_p, seed, steps)


def _run(model: Model, ids: list[int], prompt: Any, max_new_tokens: int, temperature: float,
         top_k: int | None, top_p: float | None, seed: int | None, steps: bool) -> Any:
    block = model.config.block_size
    rng = np.random.default_rng(seed)
    seq = list(ids)
    sheet = model.sheet(seq[-block:], temperature=1.0)
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
                sheet = model.sheet(seq[-block:], temperature=1.0)
    new = seq[len(ids) :]
    out: str | list[int] = model.decode(new) if isinstance(prompt, str) else new
    return Generation(out, tuple(record)) if steps else out


def _generate_cmd(args: argparse.Namespace) -> int:
    from .catalog import load

    model = load(args.model)
    n = args.max_new_tokens
    if n is None:
        n = max(1, model.config.block_size + 1 - len(args.prompt)) if _is_sort_task(model) else 5
    res = generate(model, args.prompt, max_new_tokens=n, temperature=args.temperature, top_k=args.top_k,
                   top_p=args.top_p, seed=args.seed, steps=True, crop=True if args.crop else None)
    if args.steps:
        vocab = model.vocab
        for k, st in enumerate(res.steps):
            ps = "  ".join(f"{vocab[v]}: {st.probs[v]:.4f}" for v in np.argsort(-st.probs, kind="stable")[:5])
            print(f"step {k}: pos {st.position} -> {st.text!r}   p(next) {ps}")
    print(f"{args.prompt} -> {res.output}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from .cli import model_arg

    p = sub.add_parser("generate", help="continue a prompt (greedy by default)")
    p.add_argument("prompt", help="the text to continue, e.g. CBABBC")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="tokens to generate (default: fill the sort context, else 5)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None, help="seed of the sampler")
    p.add_argument("--steps", action="store_true", help="show each step's token and probabilities")
    p.add_argument("--crop", action="store_true", help="crop the context like nanoGPT even for sort")
    model_arg(p)
    p.set_defaults(func=_generate_cmd)
