"""The sort task: batched greedy decoding against the reference forward and the whole-sequence forward."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import reference
from conftest import random_model, ref_cfg

import dfgpt
from dfgpt import Config
from dfgpt.core.autodiff import forward
from dfgpt.errors import QueryError
from dfgpt.toys.sort_task import all_inputs, greedy_sort, sort_ids, task_score

# Sort-shaped models that exercise every switch of the forward: bias, LayerNorm, MLP, tied
# head, erf GELU, in_out layout; the last has a larger vocabulary with A/B/C in it.
CONFIGS = {
    "plain": Config(n_layer=2, n_head=2, n_embd=8, block_size=11, vocab=("A", "B", "C"), n_inner=16),
    "tied-erf-in_out": Config(n_layer=2, n_head=2, n_embd=8, block_size=11, vocab=("A", "B", "C"), n_inner=16,
                              tied=True, gelu="erf", layout="in_out", bias=False),
    "no-mlp-no-ln": Config(n_layer=1, n_head=1, n_embd=6, block_size=12, vocab=("x", "C", "A", "B"),
                           mlp=False, layer_norm=False),
}


def _whole_sequence_greedy(model: dfgpt.Model, ids: np.ndarray) -> np.ndarray:
    """Greedy decoding that recomputes every position each step (no cache)."""
    seq = ids
    for _ in range(6):
        nxt = forward(model.graph, model.params, seq, until="logit")["logit"][:, -1].argmax(axis=-1)
        seq = np.concatenate([seq, nxt[:, None]], axis=1)
    return seq[:, 6:]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_greedy_sort_matches_the_reference_and_the_uncached_forward(name):
    cfg = CONFIGS[name]
    model, state = random_model(cfg, seed=2)
    ids = sort_ids(cfg)[all_inputs()]
    got = greedy_sort(model.graph, model.params, ids)
    assert got.shape == (729, 6)
    np.testing.assert_array_equal(got, _whole_sequence_greedy(model, ids))
    for i in np.random.default_rng(0).choice(729, 8, replace=False):  # the independent plain-numpy forward
        seq = ids[i].tolist()
        for _ in range(6):
            seq.append(int(np.argmax(reference.forward(state, ref_cfg(cfg), seq)["logits"][-1])))
        assert seq[6:] == got[i].tolist()


def test_task_score_counts_against_brute_force():
    cfg = CONFIGS["no-mlp-no-ln"]  # A/B/C are ids 2, 3, 1 here
    model, state = random_model(cfg, seed=5)
    score = task_score(model.sheet("ABC"))
    want_broken = []
    for letters in itertools.product("ABC", repeat=6):
        text = "".join(letters)
        seq = model.encode(text)
        for _ in range(6):
            seq.append(int(np.argmax(reference.forward(state, ref_cfg(cfg), seq)["logits"][-1])))
        out = model.decode(seq[6:])
        if out != "".join(sorted(text)):
            want_broken.append(f"{text} -> {out}")
    assert score.broken == tuple(want_broken)
    assert score.correct == 729 - len(want_broken) and score.newly_broken == ()


def test_the_shipped_model_scores_729():  # its speed is benchmarks/bench_task.py's
    s = dfgpt.load("sort").sheet("CABACA")
    score = s.task_score()
    assert score.correct == 729 and str(score) == "sort task: 729/729 inputs sorted (100.0%)"


@pytest.mark.parametrize("cfg", [CONFIGS["plain"].replace(block_size=10), dfgpt.load("aab").config])
def test_models_that_cannot_hold_the_task_are_refused(cfg):
    with pytest.raises(QueryError, match="sort task.*block_size >= 11"):
        sort_ids(cfg)
