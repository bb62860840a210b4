"""Generation: greedy sorts all 729 inputs, seeded sampling, cropping, steps, bad input, CLI."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import reference
from conftest import TINY, random_model, ref_cfg

import dfgpt
import dfgpt.generation.generate as generation
from dfgpt.cli import main
from dfgpt.errors import DfgptError, SequenceLengthError, TokenError
from dfgpt.generation.generate import GenerateError, Generation, generate, sample_dist


@pytest.fixture(scope="module")
def sort_model() -> dfgpt.Model:
    return dfgpt.load("sort")


def test_golden(sort_model):
    assert sort_model.generate("CBABBC", max_new_tokens=6) == "ABBBCC"
    assert sort_model.generate([2, 1, 0, 1, 1, 2], max_new_tokens=6) == [0, 1, 1, 1, 2, 2]


def test_greedy_sorts_all_729_inputs(sort_model):
    wrong = []
    for letters in itertools.product("ABC", repeat=6):
        text = "".join(letters)
        if generate(sort_model, text, max_new_tokens=6) != "".join(sorted(text)):
            wrong.append(text)
    assert wrong == []


def test_same_seed_same_samples_different_seeds_differ(sort_model):
    a = [sort_model.generate("CBABBC", 6, temperature=1.5, seed=s) for s in range(4)]
    b = [sort_model.generate("CBABBC", 6, temperature=1.5, seed=s) for s in range(4)]
    assert a == b
    # the trained model is confident: some seeds still pick a less likely letter somewhere
    outs = [sort_model.generate(p, 6, temperature=1.5, seed=s) for p in ("CBABBC", "ACBCAB") for s in range(20)]
    assert len(set(outs)) >= 2
    rand = dfgpt.load("sort-random")  # flat distributions: different seeds, different samples
    assert len({rand.generate("CBABBC", 6, temperature=1.5, seed=s) for s in range(10)}) >= 5


def _ref_greedy(state, cfg, ids, n):
    """nanoGPT's loop: crop to block_size, recompute every position, take the argmax."""
    ids = list(ids)
    for _ in range(n):
        ctx = ids[-cfg.block_size :]
        ids.append(int(np.argmax(reference.forward(state, ref_cfg(cfg), ctx)["logits"][-1])))
    return ids


def test_cropping_matches_nanogpt_loop():
    model, state = random_model(TINY, seed=4)
    prompt = [0, 2, 1, 1]
    got = model.generate(prompt, max_new_tokens=9, crop=True)  # 4 + 9 > block_size 6: crops, new sheets
    assert got == _ref_greedy(state, TINY, prompt, 9)[4:]
    long = [1, 0, 2, 2, 1, 0, 1, 2]  # longer than the context: cropped first
    assert model.generate(long, max_new_tokens=3, crop=True) == _ref_greedy(state, TINY, long, 3)[8:]


def test_only_the_fed_back_tokens_must_fit_for_every_model(sort_model):
    """prompt + max_new_tokens - 1 <= block_size: the last new token is predicted, never read."""
    tiny, state = random_model(TINY, seed=4)  # block_size 6, not a sort model: the same rule
    for model, block in ((sort_model, 11), (tiny, TINY.block_size)):
        assert model.config.block_size == block
        for n_prompt in (1, 3, block):
            prompt = [0] * n_prompt
            fits = block + 1 - n_prompt
            assert len(model.generate(prompt, max_new_tokens=fits)) == fits
            with pytest.raises(SequenceLengthError, match=f"at most {fits} new tokens.*crop=True"):
                model.generate(prompt, max_new_tokens=fits + 1)
        with pytest.raises(SequenceLengthError, match=f"shorten the prompt to at most {block}"):
            model.generate([0] * (block + 1), max_new_tokens=0)
    # the fitting case is exactly nanoGPT's loop (which never had to crop)
    assert tiny.generate([1, 2], max_new_tokens=5) == _ref_greedy(state, TINY, [1, 2], 5)[2:]
    # the sort task: 6 letters + 6 new tokens reads positions 0..10, all of block_size 11
    assert sort_model.generate("CBABBC", max_new_tokens=6) == "ABBBCC"


def test_a_cropped_prompt_is_still_checked():
    tiny, _ = random_model(TINY, seed=4)
    with pytest.raises(TokenError, match=r"token id 7 is out of range"):
        tiny.generate([7, 0, 1, 2, 0, 1, 2, 0], max_new_tokens=1, crop=True)  # 7 would be cropped away
    with pytest.raises(GenerateError, match="crop must be True or False"):
        tiny.generate([0], max_new_tokens=1, crop=None)


def test_sampling_matches_the_distribution():
    model, state = random_model(TINY, seed=2)
    # one step at temperature 1: the empirical frequencies follow softmax(logits)
    logits = reference.forward(state, ref_cfg(TINY), [0, 1])["logits"][-1]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    draws = [model.generate("ab", 1, temperature=1.0, seed=s) for s in range(200)]
    freq = np.array([draws.count(t) for t in "abc"]) / 200
    assert np.abs(freq - p).max() < 0.1


def test_sample_dist_top_k_top_p_brute_force():
    logits = np.array([1.0, 3.0, 0.5, 2.0, -1.0])
    p = np.exp(logits) / np.exp(logits).sum()
    k2 = sample_dist(logits, 1.0, 2, None)
    np.testing.assert_allclose(k2, np.where(np.isin(np.arange(5), [1, 3]), p, 0) / p[[1, 3]].sum())
    # nucleus: the smallest set of top tokens whose mass reaches top_p
    order = np.argsort(-p)
    for top_p in (0.3, 0.7, 0.9, 0.99, 1.0):
        keep = order[: int(np.searchsorted(np.cumsum(p[order]), top_p) + 1)]
        want = np.where(np.isin(np.arange(5), keep), p, 0)
        np.testing.assert_allclose(sample_dist(logits, 1.0, None, top_p), want / want.sum(), atol=1e-15)
    hot = sample_dist(logits, 0.5, None, None)
    np.testing.assert_allclose(hot, np.exp(2 * logits) / np.exp(2 * logits).sum())


def test_top_k_1_is_greedy(sort_model):
    assert sort_model.generate("CBABBC", 6, temperature=1.5, top_k=1, seed=0) == "ABBBCC"


def test_steps(sort_model):
    g = sort_model.generate("CBABBC", 6, steps=True)
    assert isinstance(g, Generation) and g.output == "ABBBCC"
    assert [s.text for s in g.steps] == list("ABBBCC")
    assert [s.position for s in g.steps] == [5, 6, 7, 8, 9, 10]
    s = sort_model.sheet("CBABBCABBBC")
    for st in g.steps:
        np.testing.assert_allclose(st.probs, s.value(f"prob[{st.position}]"), rtol=1e-9)
        assert st.sampled[st.token] == 1.0


@pytest.mark.parametrize(
    "prompt, kw, err, words",
    [
        ("", {}, SequenceLengthError, "empty"),
        ([], {}, SequenceLengthError, "empty"),
        ("CBXBBC", {}, TokenError, "vocabulary"),
        ([0, 5], {}, TokenError, "out of range"),
        ("CBA", {"temperature": -1.0}, GenerateError, "temperature"),
        ("CBA", {"temperature": float("nan")}, GenerateError, "temperature"),
        ("CBA", {"top_k": 0}, GenerateError, "top_k"),
        ("CBA", {"top_p": 0.0}, GenerateError, "top_p"),
        ("CBA", {"top_p": 1.5}, GenerateError, "top_p"),
        ("CBA", {"max_new_tokens": -1}, GenerateError, "max_new_tokens"),
        ("CBABBC", {"max_new_tokens": 7}, SequenceLengthError, "at most 6"),
        ("CBABBCABBBCC", {"max_new_tokens": 1}, SequenceLengthError, "shorten"),
    ],
)
def test_bad_input(sort_model, prompt, kw, err, words):
    before = {k: v.copy() for k, v in sort_model.params.items()}
    with pytest.raises(err, match=words) as e:
        sort_model.generate(prompt, **kw)
    assert isinstance(e.value, DfgptError)
    assert all(np.array_equal(before[k], v) for k, v in sort_model.params.items())


def test_sort_model_can_crop_when_asked(sort_model):
    out = sort_model.generate("CBABBC", max_new_tokens=8, crop=True)
    assert out[:6] == "ABBBCC" and len(out) == 8


def test_cli(capsys):
    assert main(["generate", "CBABBC", "--steps"]) == 0
    out = capsys.readouterr().out
    assert "CBABBC -> ABBBCC" in out and "step 5: pos 10 -> 'C'" in out
    assert main(["generate", "CBABBC", "--temperature", "-1"]) == 2
    assert "temperature" in capsys.readouterr().err


def test_each_new_token_computes_one_new_row_per_tensor(sort_model, monkeypatch):
    made = []
    original = generation.Cells

    def spy(*a, **kw):
        made.append(original(*a, **kw))
        return made[-1]

    monkeypatch.setattr(generation, "Cells", spy)
    assert sort_model.generate("CBABBC", max_new_tokens=6) == "ABBBCC"
    (sheet,) = made  # one sheet, grown by appends
    rec = sheet.engine.total_recomputed
    assert sheet.T == 11
    assert rec["h[0].ln_1.out"] == 11 * 48  # every row once, never recomputed
    # an attention row has 3 heads x T keys; the first read computes the 6 prompt rows at T = 6
    assert rec["h[0].attn.att"] == 3 * 6 * 6 + sum(3 * T for T in range(7, 12))
    assert rec["h[2].attn.att"] == sum(3 * T for T in range(6, 12))  # only the queried rows
    assert rec["logit"] == 6 * 3  # only the rows that chose a token
