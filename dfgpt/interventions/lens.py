"""The logit lens: every layer's residual stream read through the final norm and the unembedding.

Row 0 is the embedding (`emb`), row l + 1 the output of block l (`h[l].out`, `layers[l].out`). The
last row is the sheet's own `logit` tensor, read as it is (bit for bit, pinned or edited cells
included); the rows before it are the lens's reading, through the model's final norm (GPT-2's
`ln_f`, Llama's RMSNorm `norm`, NeoX's `final_layer_norm`) computed here from its stored
weights. Per row and position: the top tokens, and the rank and probability of a target token
(by default the model's own final prediction there).
Ranks count the tokens with a strictly larger logit, ties broken by token id, so the
order is total and the same on every machine.

>>> import dfgpt
>>> lens = logit_lens(dfgpt.load("sort").sheet("CABACAAAA"))
>>> lens
Lens('CABACAAAA', emb + 3 blocks × 9 positions, target: final prediction)
>>> lens.top_tokens(layer=3, position=8, n=1), int(lens.rank[3, 8])
(['B'], 0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..cells import Cells
from ..core.ops import Linear, LNOut, Op, RMSOut
from ..errors import QueryError, show
from ..html import table as html_table
from .metrics import _token

__all__ = ["Lens", "logit_lens"]


@dataclass(frozen=True)
class Lens:
    """`logits[layer, position, token]`, `prob` (at temperature 1), the target per position, its `rank`."""

    text: str
    layers: tuple[str, ...]
    positions: tuple[str, ...]
    vocab: tuple[str, ...]
    logits: np.ndarray
    target: np.ndarray
    target_name: str

    @property
    def prob(self) -> np.ndarray:  # [L+1, T, V]
        z = self.logits - self.logits.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)

    @property
    def order(self) -> np.ndarray:
        """[L+1, T, V]: token ids by logit, largest first, ties by token id."""
        return np.argsort(-self.logits, axis=-1, kind="stable")

    @property
    def rank(self) -> np.ndarray:
        """[L+1, T]: the target's rank at each layer and position (0: the top token)."""
        tz = np.take_along_axis(self.logits, self.target[None, :, None], axis=-1)  # [L+1, T, 1]
        ids = np.arange(self.logits.shape[-1])
        ahead = (self.logits > tz) | ((self.logits == tz) & (ids < self.target[None, :, None]))
        return ahead.sum(axis=-1)

    @property
    def target_prob(self) -> np.ndarray:  # [L+1, T]
        return np.take_along_axis(self.prob, self.target[None, :, None], axis=-1)[..., 0]

    def top_tokens(self, layer: int, position: int, n: int = 3) -> list[str]:
        return [self.vocab[i] for i in self.order[layer, position, :n]]

    def __repr__(self) -> str:
        L, T = self.logits.shape[:2]  # the embedding's row and one per block
        return f"Lens({self.text!r}, emb + {L - 1} blocks × {T} positions, target: {self.target_name})"

    def _cells(self, n: int) -> list[list[str]]:
        """[layer][position]: the top token(s) and the target's rank in brackets."""
        rank, top = self.rank, self.order[..., :n]
        return [[",".join(self.vocab[i] for i in top[lyr, t]) + f" ({rank[lyr, t]})"
                 for t in range(len(self.positions))] for lyr in range(len(self.layers))]

    def table(self, n: int = 1) -> str:
        """Per layer and position: the top token(s), and the target's rank in brackets.

        Columns are as wide as their widest entry and the row labels as wide as the widest
        of `position`, `target` and the layer names, so each entry sits under its position.
        """
        cells = self._cells(n)
        w = max(len(c) for row in cells for c in row + list(self.positions) + [self.vocab[i] for i in self.target]) + 1
        lw = max(len("position"), *(len(x) for x in self.layers))
        tgt = "".join(self.vocab[i].rjust(w) for i in self.target)
        lines = [f"logit lens of {self.text!r}: top token (rank of the target: {self.target_name})",
                 "position".ljust(lw) + "".join(p.rjust(w) for p in self.positions),
                 "target".ljust(lw) + tgt]
        lines += [name.ljust(lw) + "".join(c.rjust(w) for c in row) for name, row in zip(self.layers, cells)]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = [["target", *(self.vocab[i] for i in self.target)]]
        rows += [[name, *row] for name, row in zip(self.layers, self._cells(1))]
        return html_table(f"logit lens of {self.text!r}: top token (rank of the target: {self.target_name})",
                          ["position", *self.positions], rows, note=repr(self))


def _final_norm(op: Op | None, values: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The model's final norm (LayerNorm or RMSNorm, its stored weights) on the last axis: [..., C] -> [..., C]."""
    if isinstance(op, LNOut):
        _, _, _, g, *b = op.ins
        mu = x.mean(axis=-1, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
        y = (x - mu) / np.sqrt(var + op.eps) * values[g]
        return y + values[b[0]] if b else y
    if isinstance(op, RMSOut):
        w = values[op.ins[2]]
        return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + op.eps) * (w + op.offset)
    return x


def logit_lens(sheet: Cells, target: str | int | Sequence[str | int] | None = None) -> Lens:
    """Every layer's residual stream through `ln_f` and the unembedding (see the module).

    `target`: one token for every position, one per position, or None for the model's own
    final prediction at each position.
    """
    if not isinstance(sheet, Cells):
        how = "model.sheet(text)" if hasattr(sheet, "sheet") else "dfgpt.load('sort').sheet('CABACA')"
        raise QueryError(f"logit_lens takes a sheet, got {show(sheet)} ({type(sheet).__name__}); "
                         f"pass one, e.g. logit_lens({how}).")
    cfg, T, eng, graph = sheet.config, sheet.T, sheet.engine, sheet.graph
    roles = graph.roles
    if roles is None:  # a graph assembled by hand, not by core.builder
        raise QueryError("the logit lens needs the model's roles (its residual stream and final norm), which this "
                         "graph does not record; build the model with dfgpt.core.builder.")
    x = np.stack([sheet.values(lr.resid_pre) for lr in roles.layers])  # [L, T, C]
    head = graph.ops[roles.logit]
    if not isinstance(head, Linear):  # the builder makes logit a Linear: a broken graph otherwise
        raise TypeError(f"{roles.logit} is computed by {type(head).__name__}, expected a Linear")
    normed = _final_norm(graph.ops.get(roles.final_norm), eng.values, x)  # [L, T, C]
    lensed = normed @ head.weight_t(eng)  # [L, T, C] @ [C, V] -> [L, T, V]
    # The last row is the sheet's own logits, not a second ln_f of h[L-1].out: equal bit for bit to
    # what the sheet answers, and a pinned ln_f or logit cell shows as the sheet has it.
    logits = np.concatenate([lensed, sheet.values("logit")[None]])  # [L+1, T, V]
    if target is None:
        tgt = np.argsort(-logits[-1], axis=-1, kind="stable")[:, 0]
        name = "final prediction"
    elif isinstance(target, (str, int)) and not isinstance(target, bool):
        tgt = np.full(T, _token(sheet, str(target), "lens target"))
        name = sheet.token_label(int(tgt[0]))
    elif isinstance(target, (list, tuple)) and len(target) == T:
        tgt = np.array([_token(sheet, str(t), "lens target") for t in target])
        name = "per position"
    else:
        raise QueryError(f"target must be a token, a list of {T} tokens (one per position) or None, got {target!r}.")
    labels = tuple([roles.layers[0].resid_pre] + [lr.resid_post.rsplit(".", 1)[0] for lr in roles.layers])
    positions = tuple(f"{t}:{sheet.token_label(tok)}" for t, tok in enumerate(sheet.tokens))
    vocab = tuple(sheet.token_label(i) for i in range(cfg.vocab_size))
    return Lens(sheet.text, labels, positions, vocab, np.asarray(logits, np.float64), tgt.astype(np.int64), name)
