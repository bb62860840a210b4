"""`dfgpt generate PROMPT`: continue a prompt, greedy or sampled."""

from __future__ import annotations

import argparse

import numpy as np

from ..errors import QueryError
from ..generation.generate import CLI_NEW_TOKENS, generate
from ..model import load
from .options import model_arg, text_arg

__all__ = ["register"]

def _generate_cmd(args: argparse.Namespace) -> int:
    model = load(args.model)
    n = args.max_new_tokens  # None: generate() fills the context, at most CLI_NEW_TOKENS
    if args.text is None:
        raise QueryError("give a prompt to continue: dfgpt generate CBABBC (or --text CBABBC).")
    temperature = args.temperature
    if temperature is None:  # --top-k, --top-p or --seed ask for sampling: at temperature 1 unless told
        temperature = 1.0 if (args.top_k, args.top_p, args.seed) != (None, None, None) else 0.0
    res = generate(model, args.text, max_new_tokens=n, temperature=temperature, top_k=args.top_k,
                   top_p=args.top_p, seed=args.seed, steps=True, crop=args.crop)
    if args.steps:
        vocab = model.vocab
        how = "greedy" if temperature == 0 else f"sampled at temperature {temperature:g}" + (
            f", top-k {args.top_k}" if args.top_k is not None else "") + (
            f", top-p {args.top_p:g}" if args.top_p is not None else "")
        greedy = temperature == 0
        print(f"{how}; each step shows " + ("the model's next-token probabilities" if greedy else
              "the distribution the token was drawn from") + " (largest first)")
        for k, st in enumerate(res.steps):
            dist = st.probs if greedy else st.sampled  # greedy's own distribution is one-hot
            top = np.argsort(-dist, kind="stable")[:5]  # ties by token id
            ps = "  ".join(f"{vocab[v]}: {dist[v]:.4f}" for v in top if greedy or dist[v] > 0)
            model_p = "" if greedy else f"   (model p {st.probs[st.token]:.4f})"
            print(f"step {k}: pos {st.position} -> {st.text!r}   {'p(next)' if greedy else 'from'} {ps}{model_p}")
    print(f"{args.text} -> {res.output}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="continue a prompt (greedy by default)")
    text_arg(p, default=None, positional=True, what="the prompt to continue, e.g. CBABBC")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help=f"tokens to generate (default: fill the context, at most {CLI_NEW_TOKENS})")
    p.add_argument("--temperature", type=float, default=None,
                   help="0 = greedy (the default, unless --top-k, --top-p or --seed ask to sample: then 1)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None, help="seed of the sampler")
    p.add_argument("--steps", action="store_true", help="show each step's token and probabilities")
    p.add_argument("--crop", action="store_true",
                   help="keep the last block_size tokens when the context is full, like nanoGPT")
    model_arg(p)
    p.set_defaults(func=_generate_cmd)
