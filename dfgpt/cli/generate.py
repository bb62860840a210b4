"""`dfgpt generate PROMPT`: continue a prompt, greedy or sampled."""

from __future__ import annotations

import argparse

import numpy as np

from ..generation.generate import CLI_NEW_TOKENS, generate
from ..model import load
from .options import model_arg

__all__ = ["register"]

def _generate_cmd(args: argparse.Namespace) -> int:
    model = load(args.model)
    n = args.max_new_tokens  # None: generate() fills the context, at most CLI_NEW_TOKENS
    res = generate(model, args.prompt, max_new_tokens=n, temperature=args.temperature, top_k=args.top_k,
                   top_p=args.top_p, seed=args.seed, steps=True, crop=args.crop)
    if args.steps:
        vocab = model.vocab
        for k, st in enumerate(res.steps):
            ps = "  ".join(f"{vocab[v]}: {st.probs[v]:.4f}" for v in np.argsort(-st.probs, kind="stable")[:5])
            print(f"step {k}: pos {st.position} -> {st.text!r}   p(next) {ps}")
    print(f"{args.prompt} -> {res.output}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="continue a prompt (greedy by default)")
    p.add_argument("prompt", help="the text to continue, e.g. CBABBC")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help=f"tokens to generate (default: fill the context, at most {CLI_NEW_TOKENS})")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None, help="seed of the sampler")
    p.add_argument("--steps", action="store_true", help="show each step's token and probabilities")
    p.add_argument("--crop", action="store_true",
                   help="keep the last block_size tokens when the context is full, like nanoGPT")
    model_arg(p)
    p.set_defaults(func=_generate_cmd)
