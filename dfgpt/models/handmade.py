"""The hand-made `aab` model: a 344-parameter transformer whose weights a person designed to continue "aabaab…".

Every weight is written below with the reason it has its value. The residual stream has
8 dimensions: five one-hot positions (0-4, the position inside the 5-token window), two
one-hot tokens (5 = `a`, 6 = `b`) and one scratch dimension (7, a vote for `b` that only
the unembedding reads). The single head looks exactly two positions back (the next letter
of a period-3 stream is the letter two before the current one) and copies that letter,
scaled by the large constant `Lg`, onto the logits.

>>> import dfgpt
>>> m = dfgpt.load("aab")
>>> m.n_params
344
>>> s = m.sheet("aabaa")
>>> m.vocab[int(s.values("logit")[-1].argmax())]
'b'

Reading these weights as formulas in the one symbol `Lg` is dfgpt.toys.aab.
"""

from __future__ import annotations

import math

import numpy as np

from ..core.config import Config
from ..errors import EditError
from .weights import Weights

__all__ = ["AAB", "aab_model", "aab_params"]

AAB = Config(
    n_layer=1,
    n_head=1,
    n_embd=8,
    block_size=5,
    vocab=("a", "b"),
    layer_norm=False,
    mlp=False,
    bias=True,  # zero biases, kept so the checkpoint has nanoGPT's usual keys (344 parameters)
    tied=True,
    name="aab",
)
POS = range(0, 5)  # residual dims 0-4: one-hot position in the window
TOK = {"a": 5, "b": 6}  # residual dims 5-6: one-hot token
SCRATCH = 7  # residual dim 7: a vote for `b`, invisible to attention
C = 8


def aab_params(Lg: float = 1024.0) -> dict[str, np.ndarray]:
    """The weights, in dfgpt names and the out_in layout; every entry is affine in `Lg`."""
    # Token embedding, also the (tied) unembedding: logit[t][v] = x[t] · wte[v].
    wte = np.zeros((2, C))
    wte[0, TOK["a"]] = 1.0  # `a` writes dim 5, and its logit reads dim 5
    wte[1, TOK["b"]] = 1.0  # `b` writes dim 6, and its logit reads dim 6 ...
    wte[1, SCRATCH] = 1.0  # ... and dim 7, the scratch vote for `b`
    # Position embedding: a one-hot of the window position.
    wpe = np.zeros((5, C))
    for p in POS:
        wpe[p, p] = 1.0
    # Window position 1 has nothing two positions back, so the head cannot find the next
    # letter. In a prefix of "aab…" that happens only for "aa", whose next letter is `b`:
    # a vote of 2·Lg on the scratch dim outweighs the Lg the head copies from an `a`.
    # Attention never reads dim 7, so this vote cannot leak into other positions.
    wpe[1, SCRATCH] = 2.0 * Lg
    # c_attn.w is [3C, C]: rows 0-7 make q, rows 8-15 make k, rows 16-23 make v.
    w = np.zeros((3 * C, C))
    # q block: the query of position p points at position p - 2, with strength Lg, so the
    # score of that key is Lg/√8 ≈ 362 and every other key scores 0: a hard one-hot softmax.
    # Positions 0 and 1 have no target (zero query: uniform attention).
    for p in POS:
        if p >= 2:
            w[0 * C + (p - 2), p] = Lg
    # k block: a key is its own position one-hot (identity on dims 0-4).
    for p in POS:
        w[1 * C + p, p] = 1.0
    # v block: a value is its own token one-hot (identity on dims 5-6); positions and the
    # scratch vote are not copied.
    for d in TOK.values():
        w[2 * C + d, d] = 1.0
    # c_proj: the attended token, times Lg, back onto its token dims, where it outweighs the
    # O(1) terms of the current token's own embedding in the logits.
    proj = np.zeros((C, C))
    for d in TOK.values():
        proj[d, d] = Lg
    return {
        "wte": wte,
        "wpe": wpe,
        "h[0].attn.c_attn.w": w,
        "h[0].attn.c_attn.b": np.zeros(3 * C),
        "h[0].attn.c_proj.w": proj,
        "h[0].attn.c_proj.b": np.zeros(C),
    }


def aab_model(Lg: float = 1024.0) -> Weights:
    """The hand-made model that continues "aabaab…" (`dfgpt.load("aab")`)."""
    if isinstance(Lg, bool) or not isinstance(Lg, (int, float, np.floating, np.integer)) or not math.isfinite(Lg):
        raise EditError(f"Lg must be a finite number, got {Lg!r}; the hand-made weights need Lg > 5.06 to work.")
    return Weights(AAB, aab_params(float(Lg)))
