"""Every query works on a GPT-2 checkpoint: BPE tokens, float32, Conv1D layout, tied head."""

from __future__ import annotations

import numpy as np
import pytest

import dfgpt

pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def gpt2(hf_dir):
    return dfgpt.load(str(hf_dir[0]))


def test_value_formula_precedents_use_bpe_names(gpt2):
    s = gpt2.sheet("the cat sat")
    tok = gpt2.vocab[s.tokens[-1]]
    t = s.T - 1
    assert s.value(f"logit[{t}][{tok}]") == pytest.approx(float(s.values("logit")[t, s.tokens[-1]]))
    f = s.formula(f"h[1].attn.q[2][{t}][3]")
    assert f.startswith(f"h[1].attn.q[2][{t}][3] = Σ_{{i=0..15}} h[1].ln_1.out[{t}][i] · h[1].attn.c_attn.w[i][11]")
    assert len(s.precedents(f"logit[{t}][{tok}]")) == 2 * 16  # ln_f row and the tied wte row
    assert f"wte[{tok.replace('Ġ', '␣')}][0]" in s.precedents(f"logit[{t}][{tok}]")  # printed as displayed


def test_provenance_and_influence(gpt2):
    s = gpt2.sheet("the cat sat on the")
    target = f"logit[{s.T - 1}][0]"
    prov = s.provenance(target)
    by = prov.by_tensor()
    assert by["wpe"].cells == s.T * 16 and by["wte"].cells > 0
    assert by["wpe"].ranges == f"rows 0–{s.T - 1} of 32"
    infl = s.influence(target, top=10)
    assert len(infl) == 10 and abs(infl[0].score) >= abs(infl[-1].score)
    heads = infl.by_head()
    assert len(heads) >= 8  # 2 layers x 4 heads
    g = s.grad(target)
    # gradient w.r.t. a weight agrees with a finite difference (float32: loose)
    cell = "h[1].mlp.c_proj.b[3]"
    moved = gpt2.sheet("the cat sat on the", exact=False)
    moved.set(cell, moved.value(cell) + 1e-2)
    fd = (moved.value(target) - s.value(target)) / 1e-2
    assert g[cell] == pytest.approx(fd, rel=1e-3, abs=1e-4)


def test_edit_receipt_and_undo(gpt2):
    s = gpt2.sheet("the cat sat on the mat")
    before = s.values("logit").copy()
    r = s.set("h[1].mlp.c_fc.w[2][5]", 3.0)
    s.values("logit")
    assert 0 < r.recomputed < sum(np.prod(s.engine.shape(t)) for t in s.graph.computed)
    s.undo()
    np.testing.assert_allclose(s.values("logit"), before, atol=1e-6)


def test_generation_with_sampling_controls(gpt2):
    a = gpt2.generate("the cat", max_new_tokens=5, temperature=0.8, top_k=20, top_p=0.9, seed=3)
    b = gpt2.generate("the cat", max_new_tokens=5, temperature=0.8, top_k=20, top_p=0.9, seed=3)
    assert a == b and isinstance(a, str)
    greedy = gpt2.generate([5, 9, 44], max_new_tokens=4)
    assert len(greedy) == 4 and all(isinstance(i, int) for i in greedy)


@pytest.mark.parametrize("target, level", [(None, None), ("h[0]", "block"), ("h[1].attn", "head")])
def test_diagrams_at_model_block_and_head_level(gpt2, target, level):
    obj = gpt2 if target is None else gpt2.sheet("the cat")
    dot = dfgpt.draw(obj) if target is None else dfgpt.draw(obj, target, level=level)
    assert "digraph" in dot.source and ("h[" in dot.source)


def test_cell_level_slice_within_budget(gpt2):
    s = gpt2.sheet("the cat sat")
    dot = dfgpt.draw(s, f"logit[{s.T - 1}][0]", level="cell", depth=3, max_nodes=25)
    assert dot.source.count("label=") <= 25 + 5  # nodes plus graph/cluster labels


def test_bpe_tokens_display_with_visible_spaces(gpt2):
    s = gpt2.sheet("the cat sat")
    shown = [gpt2.token_text(t) for t in s.tokens]
    assert "".join(shown).replace("␣", " ") == "the cat sat"  # nothing lost, nothing run together
    assert any(t.startswith("␣") for t in shown[1:])
    summary = s.provenance(f"logit[{s.T - 1}][0]").summary()
    assert f"(tokens {' '.join(shown)})" in summary and "  " not in summary.split("(tokens ")[1].split(")")[0]
