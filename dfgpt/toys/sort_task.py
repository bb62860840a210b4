"""The sort task: every 6-letter input, training batches, batched greedy decoding of all 729, the score.

A sort model reads 6 letters of A/B/C and writes them sorted, one letter at a time; the
first 5 outputs are fed back, so it needs a context (block_size) of 11. Greedy decoding
runs the whole batch of inputs through the per-op batched forward of dfgpt.analysis.gradients
(the one forward training differentiates), one new position per step, keeping the keys
and values of earlier positions: each position is computed once.

>>> import dfgpt, numpy as np
>>> x, y = sort_batch(np.random.default_rng(0), 2)
>>> x.shape, y.shape, bool((np.sort(x[:, :6], axis=1)[:, :5] == x[:, 6:]).all())
((2, 11), (2, 6), True)
>>> m = dfgpt.load("sort")
>>> bool((greedy_sort(m.graph, m.params, all_inputs()) == np.sort(all_inputs(), axis=1)).all())
True
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.graph import Graph
from ..errors import QueryError
from ..html import table

if TYPE_CHECKING:
    from ..cells import Cells

__all__ = ["LETTERS", "N_IN", "TaskScore", "all_inputs", "greedy_sort", "sort_batch", "sort_ids", "task_score"]

N_IN = 6  # letters to sort
LETTERS = ("A", "B", "C")


def sort_batch(rng: np.random.Generator, batch: int, vocab: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Inputs [B, 11] (6 letters + 5 sorted) and targets [B, 6] (the 6 sorted letters)."""
    x = rng.integers(0, vocab, size=(batch, N_IN))
    y = np.sort(x, axis=1)
    return np.concatenate([x, y[:, :-1]], axis=1), y


def all_inputs(vocab: int = 3) -> np.ndarray:
    """All vocab^6 inputs, [729, 6] for A/B/C, in lexicographic order."""
    return np.array(list(itertools.product(range(vocab), repeat=N_IN)), dtype=np.int64)


def sort_ids(cfg: Any) -> np.ndarray:
    """The ids of A, B, C in a model's vocabulary; a QueryError for a model that cannot hold the task."""
    vocab = tuple(cfg.vocab)
    if not set(LETTERS) <= set(vocab) or cfg.block_size < 2 * N_IN - 1:
        raise QueryError(
            "task_score scores the sort task (6 letters A/B/C, 5 fed back): it needs a model "
            f"with tokens A, B, C and block_size >= 11, not vocab {vocab[:10]} / block_size "
            f"{cfg.block_size}; load it with dfgpt.load('sort')."
        )
    return np.array([vocab.index(c) for c in LETTERS], dtype=np.int64)


class _Decoder:
    """Batched incremental forward over each op's `batched_rows`: new positions in, their logits out.

    Attention reads every earlier position through its keys and values (the inputs an op
    reads as a `prefix`: the second of `score` and of `weighted`), so those tensors are kept
    and grown; every other tensor is computed for the new rows only. The first step feeds a whole prompt (queries and
    keys are the same positions); each later step feeds one position, which sees every
    key, so the batched forward's causal mask (sized by the query rows) is right in both cases.
    """

    def __init__(self, graph: Graph, params: dict[str, np.ndarray], until: str = "logit") -> None:
        import networkx as nx

        need = nx.ancestors(graph.nx, until) | {until}
        self.ops = [graph.ops[n] for n in graph.computed if n in need]
        self.params = params
        self.until = until
        self.dtype = np.dtype(graph.config.dtype)
        # name -> the position axis of its batched array (keys, values: [B, H, T, hs])
        self.keyed = {inp: graph.specs[inp].axes.index("pos") + 1
                      for op in self.ops for inp, how in zip(op.ins, op.row_reads) if how == "prefix"}
        self.cache: dict[str, np.ndarray] = {}
        self.cap = graph.config.block_size
        self.T = 0

    def step(self, ids: np.ndarray) -> np.ndarray:
        """[B, n] token ids at positions T..T+n-1 -> [B, n, V] logits."""
        n = ids.shape[1]
        if self.T and n != 1:
            raise ValueError("after the prompt, the decoder takes one position per step")
        V = dict(self.params)
        V["wpe"] = self.params["wpe"][self.T :]  # the embed op reads wpe[:n]: these positions
        V["tokens"] = ids
        V["temperature"] = np.array(1.0, dtype=self.dtype)
        T0, T1 = self.T, self.T + n
        for op in self.ops:
            out = op.batched_rows(V)
            axis = self.keyed.get(op.out)
            if axis is not None:  # keys and values: written into a cache as long as the context
                buf = self.cache.get(op.out)
                if buf is None:
                    shape = list(out.shape)
                    shape[axis] = self.cap
                    buf = self.cache[op.out] = np.empty(shape, out.dtype)  # [B, H, cap, hs]
                at = [slice(None)] * out.ndim
                at[axis] = slice(T0, T1)
                buf[tuple(at)] = out
                at[axis] = slice(0, T1)
                out = buf[tuple(at)]  # [B, H, T1, hs]: rows 0..T1-1, a view, no copy per step
            V[op.out] = out
        self.T = T1
        return V[self.until]


def greedy_sort(graph: Graph, params: dict[str, np.ndarray], inputs: np.ndarray) -> np.ndarray:
    """Greedy continuation of each input by 6 tokens (5 fed back), batched: [N, 6] -> [N, 6]."""
    dec = _Decoder(graph, params)
    logits = dec.step(np.asarray(inputs))[:, -1]  # [N, V]
    outs = []
    for k in range(N_IN):
        nxt = logits.argmax(axis=-1)
        outs.append(nxt)
        if k + 1 < N_IN:
            logits = dec.step(nxt[:, None])[:, -1]
    return np.stack(outs, axis=1)


@dataclass(frozen=True)
class TaskScore:
    """Greedy sorting of all 3^6 inputs under a sheet's weights."""

    correct: int
    total: int
    broken: tuple[str, ...]  # "input -> output" for every input not sorted
    newly_broken: tuple[str, ...]  # of those, the ones the model's own weights sort

    @property
    def accuracy(self) -> float:
        return self.correct / self.total

    def __repr__(self) -> str:
        return f"TaskScore({self.correct}/{self.total} sorted, {len(self.newly_broken)} broken by the edits)"

    def _repr_html_(self) -> str:
        rows = [[*b.split(" -> "), "yes" if b in self.newly_broken else "no"] for b in self.broken[:20]]
        more = f"{len(self.broken) - 20:,} more not sorted" if len(self.broken) > 20 else ""
        return table(str(self), ["input", "output", "broken by the edits"], rows, more)

    def __str__(self) -> str:
        s = f"sort task: {self.correct}/{self.total} inputs sorted ({self.accuracy:.1%})"
        if self.newly_broken:
            s += f"; broken by the edits: {len(self.newly_broken)}, e.g. {', '.join(self.newly_broken[:5])}"
        return s


def task_score(sheet: Cells) -> TaskScore:
    """Re-score all 729 sort inputs under the sheet's current weights (one batched decode).

    >>> import dfgpt
    >>> dfgpt.load("sort-random").sheet("CABACA").task_score().total
    729
    """
    ids = sort_ids(sheet.config)[all_inputs()]  # [729, 6] in the model's ids
    want = np.sort(ids, axis=1)
    P = {n: sheet.engine.values[n] for n in sheet.graph.parameters}
    out = greedy_sort(sheet.graph, P, ids)
    ok = (out == want).all(axis=1)
    base_ok = ok
    if any(P[n] is not sheet.model.params[n] for n in P):
        base_ok = (greedy_sort(sheet.graph, sheet.model.params, ids) == want).all(axis=1)
    dec = sheet.model.decode

    def show(i: int) -> str:
        return f"{dec(ids[i].tolist())} -> {dec(out[i].tolist())}"

    return TaskScore(
        int(ok.sum()),
        len(ok),
        tuple(show(i) for i in np.flatnonzero(~ok).tolist()),
        tuple(show(i) for i in np.flatnonzero(~ok & base_ok).tolist()),
    )
