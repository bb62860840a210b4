"""Circuits on every family dfgpt loads: the component graph from `graph.roles`, exact edge patching,
EAP against finite differences and ACDC, on small random checkpoints made with transformers."""

from __future__ import annotations

import families
import numpy as np
import pytest
import torch

import dfgpt
from dfgpt.circuits import discovery
from dfgpt.circuits.components import Components
from dfgpt.circuits.runs import Runs

FAMILIES = ["llama", "mistral", "qwen2", "gemma", "gpt_neox"]
CLEAN = [3, 17, 5, 40, 22, 9, 31]
BAD = [3, 17, 8, 40, 22, 1, 31]
PAIRS = [(CLEAN, BAD), ([7, 2, 30, 11, 4, 45, 6], [7, 2, 30, 12, 4, 45, 26])]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each family's small random checkpoint (transformers, float32) and its torch model in float64."""
    out = {}
    for fam in FAMILIES:
        folder = tmp_path_factory.mktemp(fam)
        hf = families.make(fam, folder)
        out[fam] = (folder, hf.double())
    return out


def _model(saved, fam):
    return dfgpt.load(str(saved[fam][0]), dtype="float64")


# -- the component graph ----------------------------------------------------------------------
def test_the_component_graph_follows_each_familys_blocks(saved):
    llama = Components(_model(saved, "llama").config)  # 4 query heads, 2 key/value heads, sequential
    neox = Components(_model(saved, "gpt_neox").config)  # 4 heads, parallel attention and MLP
    # Llama: per layer 4 q + 2 · (k, v) destinations; an MLP reads its own block's heads.
    assert [d.name for d in llama.dests[:7]] == [
        "layers[0].head[0].q", "layers[0].head[1].q", "layers[0].kv_head[0].k", "layers[0].kv_head[0].v",
        "layers[0].head[2].q", "layers[0].head[3].q", "layers[0].kv_head[1].k"]
    assert [s.name for s in llama.reads[llama.nodes["layers[0].mlp"]]] == ["emb", *[f"layers[0].head[{h}]"
                                                                                 for h in range(4)]]
    assert len(llama) == 8 * 1 + 5 + 8 * 6 + 10 + 11  # layer 0 heads, MLP 0, layer 1 heads, MLP 1, logits
    # NeoX: q, k and v per head; MLP l reads what attention l reads, never head l.
    assert [s.name for s in neox.reads[neox.nodes["layers[1].mlp"]]] == [
        "emb", *[f"layers[0].head[{h}]" for h in range(4)], "layers[0].mlp"]
    with pytest.raises(dfgpt.errors.UnknownNameError, match="parallel"):
        neox.edge("layers[1].head[0] -> layers[1].mlp")
    # A head without its part means its destinations: q, k, v (MHA), q alone (grouped-query).
    assert [e.name for e in neox.select("emb -> layers[0].head[1]")] == [
        "emb -> layers[0].head[1].q", "emb -> layers[0].head[1].k", "emb -> layers[0].head[1].v"]
    assert [e.name for e in llama.select("emb -> layers[0].head[1]")] == ["emb -> layers[0].head[1].q"]
    assert [e.name for e in llama.select("emb -> layers[0].kv_head[1]")] == [
        "emb -> layers[0].kv_head[1].k", "emb -> layers[0].kv_head[1].v"]


# -- exact edge patching -----------------------------------------------------------------------
@pytest.mark.parametrize("fam", [*FAMILIES, "sort", "aab"])
def test_every_edge_patched_is_the_corrupted_run_and_no_edge_changes_nothing(saved, fam):
    if fam in ("sort", "aab"):
        model = dfgpt.load(fam)
        clean, bad = ("CABACAAAA", "CACACAAAA") if fam == "sort" else ("aabaa", "abbaa")
    else:
        model, clean, bad = _model(saved, fam), CLEAN, BAD
    plain = model.sheet(clean).values("logit")
    c = dfgpt.CircuitSheet(model, clean)
    before = c.values("logit").copy()
    # every switch off: the model's logits, to the rounding of its sums taken in another order
    np.testing.assert_allclose(before, plain, rtol=0, atol=1e-12 * np.abs(plain).max())
    # patched from its own input: nothing changes, bit for bit
    c.patch_edges(clean, [e.name for e in c.components.edges])
    assert np.array_equal(c.values("logit"), before)
    c.undo()
    # every edge from the corrupted run: a from-scratch corrupted sheet's logits
    c.patch_edges(bad, [e.name for e in c.components.edges])
    want = dfgpt.CircuitSheet(model, bad).values("logit")
    assert np.array_equal(c.values("logit"), want)
    np.testing.assert_allclose(want, model.sheet(bad).values("logit"), rtol=0, atol=1e-12 * np.abs(want).max())
    c.undo()
    assert np.array_equal(c.values("logit"), before) and c.switched() == []


def _blocks(hf, fam):
    if fam == "gpt_neox":
        return hf.gpt_neox.layers, hf.gpt_neox.final_layer_norm
    return hf.model.layers, hf.model.norm


def _contributions(hf, fam, ids):
    """transformers' own run: the embedding, each MLP's output and each head's output through its
    columns of the output projection (no bias), as {component name: [T, C]}."""
    layers, _ = _blocks(hf, fam)
    got, handles = {}, []
    H = hf.config.num_attention_heads
    for i, layer in enumerate(layers):
        attn = layer.attention if fam == "gpt_neox" else layer.self_attn
        o = attn.dense if fam == "gpt_neox" else attn.o_proj

        def heads(mod, args, i=i):
            z = args[0][0]  # [T, H·hs]
            hs = z.shape[-1] // H
            for h in range(H):
                got[f"layers[{i}].head[{h}]"] = z[:, h * hs:(h + 1) * hs] @ mod.weight[:, h * hs:(h + 1) * hs].T

        def mlp(mod, args, out, i=i):
            got[f"layers[{i}].mlp"] = out[0]

        handles += [o.register_forward_pre_hook(heads), layer.mlp.register_forward_hook(mlp)]
    with torch.no_grad():
        out = hf(torch.tensor([ids]), output_hidden_states=True)
    for hd in handles:
        hd.remove()
    got["emb"] = out.hidden_states[0][0]
    return got


def _hf_patched(hf, fam, clean, bad, src, dest):
    """transformers' logits of `clean` with the edge src -> dest patched from `bad`: the destination's
    input (the residual stream it reads) plus the source's corrupted minus clean contribution, through
    the model's own modules (hooks), every other input as it is."""
    delta = _contributions(hf, fam, bad)[src] - _contributions(hf, fam, clean)[src]  # [T, C]
    layers, final = _blocks(hf, fam)
    handles = []

    def shifted(mod, args, out):
        return mod.forward(args[0] + delta)

    if dest == "logits":
        handles.append(final.register_forward_hook(shifted))
    else:
        layer = layers[int(dest.split("[")[1].split("]")[0])]
        if dest.endswith(".mlp"):
            handles.append(layer.post_attention_layernorm.register_forward_hook(shifted))
        else:
            seen = {}
            handles.append(layer.input_layernorm.register_forward_hook(
                lambda mod, args, out: seen.__setitem__("x", args[0])))
            part, h = dest[-1], int(dest.rsplit("[", 1)[1].split("]")[0])
            H = hf.config.num_attention_heads
            hs = hf.config.hidden_size // H
            if fam == "gpt_neox":  # head h's q, k, v side by side
                lin, lo = layer.attention.query_key_value, h * 3 * hs + "qkv".index(part) * hs
            else:
                attn = layer.self_attn
                lin, lo = {"q": attn.q_proj, "k": attn.k_proj, "v": attn.v_proj}[part], h * hs

            def rows(mod, args, out):
                new = mod.forward(layer.input_layernorm.forward(seen["x"] + delta))
                out = out.clone()
                out[..., lo:lo + hs] = new[..., lo:lo + hs]
                return out

            handles.append(lin.register_forward_hook(rows))
    with torch.no_grad():
        logits = hf(torch.tensor([clean])).logits[0].numpy()
    for hd in handles:
        hd.remove()
    return logits


EDGES = {
    "llama": ["emb -> layers[1].head[2].q", "layers[0].mlp -> layers[1].kv_head[1].k",
              "layers[0].head[1] -> layers[1].kv_head[0].v", "emb -> layers[1].mlp", "layers[0].mlp -> logits",
              "layers[1].head[3] -> layers[1].mlp"],
    "gpt_neox": ["emb -> layers[1].head[3].q", "layers[0].mlp -> layers[1].head[1].k",
                 "layers[0].head[2] -> layers[1].head[0].v", "emb -> layers[0].mlp",
                 "layers[0].head[0] -> layers[1].mlp",
                 "layers[1].head[1] -> logits"],
}


@pytest.mark.parametrize("fam, edge", [(f, e) for f, es in EDGES.items() for e in es])
def test_an_edge_patch_is_transformers_run_with_that_edges_delta_added(saved, fam, edge):
    hf = saved[fam][1]
    src, dest = (p.strip() for p in edge.split("->"))
    want = _hf_patched(hf, fam, CLEAN, BAD, src, dest)
    c = dfgpt.CircuitSheet(_model(saved, fam), CLEAN)
    plain = c.values("logit").copy()
    c.patch_edges(BAD, edge)
    got = c.values("logit")
    # transformers makes the rotary tables in float32 even in a float64 model: its unpatched logits are
    # dfgpt's to ~1e-6, so the edge (which moves them by 1e-2 or more) is checked to 1e-5 of the largest
    assert np.abs(got - plain).max() > 1e-2
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


# -- discovery -------------------------------------------------------------------------------
@pytest.mark.parametrize("fam", FAMILIES)
def test_eap_is_the_finite_difference_of_the_metric_in_each_switch(saved, fam):
    model = _model(saved, fam)
    runs = Runs(model, PAIRS, "logit_diff:3,7")
    g = runs.gradient()
    assert np.abs(g).max() > 1e-3
    h = 1e-6
    for i in range(0, len(runs.components), 7):
        runs.set(i, h)
        up = runs.measure()
        runs.set(i, -h)
        down = runs.measure()
        runs.set(i, 0.0)
        assert (up - down) / (2 * h) == pytest.approx(g[i], rel=1e-5, abs=1e-7), runs.components.edges[i].name
    np.testing.assert_allclose(g, runs.gradient_by_autodiff(), rtol=0, atol=1e-12 * np.abs(g).max())


@pytest.mark.parametrize("fam", FAMILIES)
def test_acdc_runs_on_every_family_and_its_circuit_is_checked_by_keeping_only_it(saved, fam):
    model = _model(saved, fam)
    c = dfgpt.acdc(model, PAIRS, "logit_diff:3,7", threshold=0.05)
    assert isinstance(c, dfgpt.Circuit) and c.edges == [e.name for e in Components(model.config).edges]
    assert 0 < len(c.kept) < len(c.edges)
    total = 0.0
    for clean, bad in PAIRS:
        cs = dfgpt.CircuitSheet(model, clean)
        cs.keep_only(c.kept, source=bad)
        total += cs.value("logit[6][3]") - cs.value("logit[6][7]")
    assert c.value == pytest.approx(total / len(PAIRS), rel=1e-9)


class Interrupt(KeyboardInterrupt):
    pass


@pytest.mark.parametrize("fam", ["llama", "gpt_neox"])
def test_every_sheet_is_as_it_was_after_a_discovery_interrupted_by_keyboard_or_error(saved, fam, monkeypatch):
    model = _model(saved, fam)
    sheets = [(model.sheet(a), model.sheet(b)) for a, b in PAIRS]
    sheets[0][0].set("layers[0].mlp.up_proj.w[0][0]" if fam == "llama" else "layers[0].mlp.dense_h_to_4h.w[0][0]",
                     0.25)
    circ = dfgpt.CircuitSheet(model, CLEAN)
    circ.patch_edges(BAD, "emb -> logits")
    every = [s for pair in sheets for s in pair] + [circ]

    def state(s):
        log = s.__dict__.get("_edit_log")
        return (s.engine.revision, s.values("logit").copy(), dict(s.engine.values), len(log.undo) if log else 0,
                len(log.redo) if log else 0)

    snap = [state(s) for s in every]
    params = {k: v.copy() for k, v in model.params.items()}
    pairs = [(s, b) for s, b in sheets] + [(circ, BAD)]
    real = discovery.evaluate
    for exc, n in ((Interrupt, 3), (Interrupt, 30), (ValueError, 3), (ValueError, 30)):
        raised = Interrupt if exc is Interrupt else dfgpt.errors.QueryError
        calls = [0]

        def flaky(sheet, exc=exc, n=n, calls=calls):  # raises on its n-th call: as the runs are made, or later
            calls[0] += 1
            if calls[0] > n:
                raise exc("interrupted")
            return sheet.value("logit[6][3]")

        calls[0] = 0
        with pytest.raises(raised):
            dfgpt.acdc(model, pairs, flaky)

        def evaluate(runs, kept, exc=exc, n=n, calls=calls):  # the circuit's curve interrupted after n // 3 points
            calls[0] += 1
            if calls[0] > n // 3:
                raise exc("interrupted")
            return real(runs, kept)

        monkeypatch.setattr(discovery, "evaluate", evaluate)
        for method in (dfgpt.acdc, dfgpt.eap, dfgpt.eap_ig):
            calls[0] = 0
            with pytest.raises(exc):
                method(model, pairs, "logit_diff:3,7")
        monkeypatch.setattr(discovery, "evaluate", real)
    for s, (rev, logit, vals, undo, redo) in zip(every, snap):
        now = state(s)
        assert now[0] == rev and np.array_equal(now[1], logit) and now[3:] == (undo, redo)
        assert vals.keys() == now[2].keys() and all(np.array_equal(vals[k], now[2][k]) for k in vals)
    assert all(np.array_equal(params[k], v) for k, v in model.params.items())
    assert circ.switched() == ["emb -> logits"]


def test_a_family_circuit_draws_its_blocks_in_order(saved):
    model = _model(saved, "llama")
    c = dfgpt.eap(model, PAIRS, "logit_diff:3,7", top=12)
    dot = c.dot()
    kv = next(e for e in c.edges if ".kv_head[" in e.split("->")[1])
    c2 = dfgpt.Circuit(c.method, c.metric, c.pairs, c.edges, c.scores, [kv, "layers[1].mlp -> logits"])
    assert '"layers[0].kv_head[' in c2.dot() and 'label="' in c2.dot()  # a key/value head with its part
    ranks = [line for line in c2.dot().splitlines() if "rank=same" in line]
    assert ranks[0].count("emb") == 1 and "layers[1].mlp" in ranks[-2] and "logits" in ranks[-1]
    assert dot.startswith("digraph circuit") and c.picture().pipe(format="svg").startswith(b"<?xml")
