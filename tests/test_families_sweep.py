"""A `resid_pre` sweep on a Llama and a GPT-NeoX folder, site by site against transformers itself.

Each site of `dfgpt.sweep(clean, corrupted, metric, over="resid_pre")` is checked against
transformers' own forward of the corrupted ids with a forward pre-hook on decoder layer l that
writes the clean run's hidden state (its `hidden_states[l]`) into row p; and in exact mode against
dfgpt's own `patch` of that site, bit for bit. Tiny random models (tests/families.py), three layers
and ten tokens, the token at CORRUPT changed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import dfgpt

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).parent))
import families  # noqa: E402

FAMILIES = ["llama", "gpt_neox"]
CORRUPT = 4
CLEAN = [3, 17, 5, 40, 22, 9, 31, 8, 12, 27]
BAD = [*CLEAN[:CORRUPT], 11, *CLEAN[CORRUPT + 1:]]
A, B = 3, 4
METRIC = f"logit_diff:{A},{B}"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """{family: (the torch model, the dfgpt model)}, three layers each, made once."""
    out = {}
    for fam in FAMILIES:
        folder = tmp_path_factory.mktemp(fam)
        hf = families.make(fam, folder, num_hidden_layers=3)
        out[fam] = (hf, dfgpt.load(str(folder)))
    return out


def hooked_metric(hf, family: str, layer: int, position: int, row) -> float:
    """transformers' logit[-1][A] - logit[-1][B] of the corrupted ids, decoder layer `layer`'s input
    row `position` replaced by `row` (a forward pre-hook)."""
    base = hf.gpt_neox if family == "gpt_neox" else hf.model

    def pre(module, args, kwargs):
        h = args[0].clone() if args else kwargs["hidden_states"].clone()
        h[0, position] = row
        return ((h, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})

    hook = base.layers[layer].register_forward_pre_hook(pre, with_kwargs=True)
    try:
        z = families.logits(hf, BAD).logits[0, -1]
    finally:
        hook.remove()
    return float(z[A] - z[B])


@pytest.mark.parametrize("family", FAMILIES)
def test_every_resid_pre_site_is_transformers_with_a_forward_hook(saved, family):
    hf, model = saved[family]
    clean, corrupted = model.sheet(CLEAN), model.sheet(BAD)
    r = dfgpt.sweep(clean, corrupted, METRIC, over="resid_pre")
    L, T = len(model.graph.roles.layers), len(CLEAN)
    assert r.values.shape == (L, T) and r.axes == ("layer", "position")
    hidden = families.logits(hf, CLEAN, output_hidden_states=True).hidden_states  # [l]: decoder layer l's input
    scale = float(np.abs(families.logits(hf, BAD).logits.numpy()).max())  # the largest logit
    want = np.array([[hooked_metric(hf, family, layer, p, hidden[layer][0, p]) for p in range(T)]
                     for layer in range(L)])
    assert float(np.abs(r.values - want).max()) <= 1e-5 * scale
    # real work: the corrupted token's own site restores the clean metric, later sites move it, earlier ones do not
    assert r.value(layer=0, position=CORRUPT) == pytest.approx(r.clean, abs=1e-5 * scale)
    assert (r.values[:, :CORRUPT] == r.corrupted).all()
    assert (r.values[0, CORRUPT + 1:] == r.corrupted).all()  # the embeddings after it are the same tokens
    moved = np.abs(r.values[1:, CORRUPT + 1:] - r.corrupted)
    assert (moved > 1e-4 * scale).mean() > 0.5, moved
    assert abs(r.clean - r.corrupted) > 1e-3 * scale


@pytest.mark.parametrize("family", FAMILIES)
def test_an_exact_sweep_is_the_sheets_own_patch_bit_for_bit(saved, family):
    _, model = saved[family]
    clean, corrupted = model.sheet(CLEAN, exact=True), model.sheet(BAD, exact=True)
    r = dfgpt.sweep(clean, corrupted, METRIC, over="resid_pre")
    roles = model.graph.roles
    for layer, p in [(0, CORRUPT), (1, CORRUPT), (1, 7), (2, CORRUPT + 1), (2, len(CLEAN) - 1)]:
        corrupted.patch(clean, f"{roles.layers[layer].resid_pre}[{p}]")
        got = corrupted.value(f"logit[{len(CLEAN) - 1}][{A}]") - corrupted.value(f"logit[{len(CLEAN) - 1}][{B}]")
        corrupted.undo()
        assert r.value(layer=layer, position=p) == got, (layer, p)


def test_a_replay_takes_a_row_of_pins_as_one_entry_bit_for_bit():
    """A row pinned as one entry (index arrays and values) replays as its 576 single-cell pins do,
    also when a pinned row lies below another (the replay puts it back after computing its tensor)."""
    from dfgpt.interventions.replay import Replay

    m = dfgpt.load("sort-random")
    clean, bad = m.sheet("CABACACBA", exact=True), m.sheet("CACACACBA", exact=True)
    need = {"logit": np.arange(9) == 8}
    rows = [("emb", 2), ("h[0].mid", 4)]  # h[0].mid reads emb: computed after it, then pinned again
    single = Replay(bad, need)
    single.run([(t, (p, i), float(v)) for t, p in rows for i, v in enumerate(clean.values(t)[p])])
    bulk = Replay(bad, need)
    bulk.run([(t, (np.full(clean.values(t).shape[1], p), np.arange(clean.values(t).shape[1])), clean.values(t)[p])
              for t, p in rows])
    assert np.array_equal(bulk.values["logit"][8], single.values["logit"][8])
    assert np.array_equal(bulk.values["h[0].mid"][4], clean.values("h[0].mid")[4])
    patched = m.sheet("CACACACBA", exact=True)
    patched.patch(clean, ["emb[2]", "h[0].mid[4]"])
    assert np.array_equal(bulk.values["logit"][8], patched.values("logit")[8])
    assert not np.array_equal(bulk.values["logit"][8], bad.values("logit")[8])
    bulk.restore()
    assert np.array_equal(bulk.values["logit"][8], bad.values("logit")[8])
