"""The hand-made `aab` model: 344 parameters, 27/27 on "aab"*10, and Lg kept as a symbol."""

from __future__ import annotations

import contextlib
import io
import re

import numpy as np
import pytest
import reference
import sympy
from conftest import ref_cfg

import dfgpt
from dfgpt.models.catalog import graphs_dir
from dfgpt.models.handmade import AAB, aab_model, aab_params
from dfgpt.toys.aab import aab_flip, aab_symbolic, greedy_next

STREAM = "aab" * 10
PREFIXES = range(2, 29)  # the 27 prefixes of length 2..28


def test_shape_and_parameter_count() -> None:
    m = dfgpt.load("aab")
    c = m.config
    assert (c.n_layer, c.n_head, c.n_embd, c.block_size, c.vocab) == (1, 1, 8, 5, ("a", "b"))
    assert (c.layer_norm, c.mlp, c.tied) == (False, False, True)
    assert m.n_params == 344
    assert m.params["h[0].attn.c_attn.w"][0, 2] == 1024.0 and m.params["h[0].attn.c_proj.w"][5, 5] == 1024.0


def test_27_of_27_by_greedy_sheets() -> None:
    m = dfgpt.load("aab")
    hits = [greedy_next(m, STREAM[:n]) == STREAM[n] for n in PREFIXES]
    assert sum(hits) == 27 == len(hits)
    assert greedy_next(m, STREAM[:29]) == STREAM[29]


def test_27_of_27_by_the_reference_forward() -> None:
    """An independent numpy nanoGPT forward on the saved state dict agrees on every prefix."""
    m = dfgpt.load("aab")
    state, cfg = m.state_dict(), ref_cfg(AAB)
    for n in PREFIXES:
        ids = m.encode(STREAM[:n][-5:])
        logits = reference.forward(state, cfg, ids)["logits"]
        assert m.vocab[int(np.argmax(logits[-1]))] == STREAM[n]
        assert np.allclose(logits, m.sheet(ids).values("logit"), rtol=1e-12, atol=1e-9)


def test_generation_continues_the_stream() -> None:
    m = dfgpt.load("aab")  # a sliding window over the last 5 letters: cropping is what it is made for
    assert m.generate("aa", max_new_tokens=28, crop=True) == STREAM[2:30]
    assert all(m.generate(STREAM[:n], max_new_tokens=1, crop=True) == STREAM[n] for n in PREFIXES)


def test_shipped_folder_is_the_same_model() -> None:
    folder = graphs_dir() / "aab"
    saved = dfgpt.load(str(folder))
    assert saved.config == AAB
    for name, a in aab_params().items():
        assert np.array_equal(saved.params[name], a), name
    assert (folder / "README.md").exists()


def test_lg_as_a_symbol_matches_models_built_with_each_value() -> None:
    e = aab_symbolic("aabaa", "logit[4][b]")
    Lg = sympy.Symbol("Lg")
    assert e.free_symbols == {Lg}
    # The closed form the README derives by hand.
    c = sympy.exp(sympy.sqrt(2) * Lg / 4)
    for lg in (0.5, 3.0, 5.055, 40.0, 1024.0):
        got = float(e.subs(Lg, lg))
        want = dfgpt.Model.of(aab_model(lg)).sheet("aabaa").value("logit[4][b]")
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
        assert got == pytest.approx(float((Lg * c / (c + 4)).subs(Lg, lg)), rel=1e-12)


@pytest.mark.parametrize("prefix", ["aa", "aab", "aabaa", "aabaab"])
def test_flip_points_are_where_the_engine_changes_its_mind(prefix: str) -> None:
    (root,) = aab_flip(prefix)
    right = greedy_next(aab_model(1024.0), prefix)
    assert greedy_next(aab_model(root * 1.01), prefix) == right
    assert greedy_next(aab_model(root * 0.99), prefix) != right


def test_aaba_never_flips() -> None:
    assert aab_flip("aaba") == []
    assert all(greedy_next(aab_model(lg), "aaba") == "a" for lg in (0.1, 1.0, 10.0))


def test_bad_lg() -> None:
    with pytest.raises(dfgpt.DfgptError, match="finite"):
        aab_model(float("nan"))
    with pytest.raises(dfgpt.DfgptError, match="finite number"):
        aab_model("big")  # type: ignore[arg-type]


def test_readme_code_runs_and_prints_what_it_says() -> None:
    text = (graphs_dir() / "aab" / "README.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", text, re.S)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md", "exec"), {})
    printed = out.getvalue().splitlines()
    claims = [line.split("# ", 1)[1].split(":")[0].strip() for line in block.splitlines() if "print(" in line]
    assert len(printed) == len(claims)
    for got, claim in zip(printed, claims):
        assert got == claim
