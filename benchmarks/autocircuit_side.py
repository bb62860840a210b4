"""auto-circuit 1.0.1's side of `bench_autocircuit.py`: runs inside its own venv, never imported by dfgpt.

    /work/venvs/ac/bin/python benchmarks/autocircuit_side.py REQUEST.json OUT.json

The venv (no system site packages; this set imports and runs):

    python -m venv /work/venvs/ac
    /work/venvs/ac/bin/pip install torch==2.13.0 auto-circuit==1.0.1 "transformer-lens<3" "transformers<5" \
        "datasets<3" "pyarrow<18" numpy safetensors
    # resolved: auto-circuit 1.0.1, transformer-lens 2.18.0, transformers 4.57.6, torch 2.13.0+cpu,
    #           numpy 1.26.4, datasets 2.21.0, pyarrow 17.0.0, safetensors 0.8.0 (Python 3.11)

REQUEST.json names the folder of a GPT-2 saved by `transformers` ("model"), the pairs ([[clean ids],
[corrupted ids]], one length), the two token ids of the logit difference ("answer", "wrong") and
the jobs to run; OUT.json gets, per job, its seconds and values (edges by auto-circuit's names,
"A0.1->A2.0.Q"). The model is loaded into a `HookedTransformer` with the same weights
(TransformerLens's own GPT-2 weight conversion, no download) and every processing step OFF
(fold_ln, center_writing_weights, center_unembed, fold_value_biases, refactor_factored_attn_matrices):
the same function as the saved model, term for term, so values compare to float32 rounding.
Then `patchable_model(factorized=True, slice_output="last_seq", separate_qkv=True)`, one batch
holding every pair, one torch thread.

Jobs (each optional):
- "eap" (timed best of "eap_repeat"): `mask_gradient_prune_scores(grad_function="logit",
  answer_function="avg_diff", mask_val=0)` (equal to 1.0.1's `edge_attribution_patching_prune_scores`):
  the gradient of −mean(logit[answer] − logit[wrong]) with respect to each edge's mask, corrupted
  activations patched into the clean run.
- "edge_sets": {name: [edge names]}: the clean run with those edges patched from the corrupted run
  (`patch_mode(..., edges=...)`), each pair's logit difference.
- "ks": `run_circuits` with the EAP scores for those edge counts, as auto-circuit runs it
  (EDGE_PATCH: the corrupted input, the top-k edges patched from the clean run) and as TREE_PATCH
  (the clean input, every other edge patched from the corrupted run: ACDC's and dfgpt's
  `keep_only`), each pair's logit difference per k.
- "acdc_sample": [edge names]: `acdc_prune_scores` for one τ restricted to those edges, minus the
  same call with no edge (its setup): seconds per edge tested.
- "acdc_tau": one full `acdc_prune_scores` pass at that τ (tao_exps, tao_bases one value each);
  "acdc_order" gives the visit order (auto-circuit sorts a *set* of edges by layer, so within a
  layer its order follows the string hash seed; the benchmark passes dfgpt's order so both greedy
  passes make their decisions in one order). Writes the removed edges and the seconds.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch as t  # noqa: E402


def load_model(folder: Path) -> Any:
    """The saved GPT-2 as a HookedTransformer with the same weights, no processing, float32."""
    import transformers
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights

    hf = transformers.GPT2LMHeadModel.from_pretrained(folder, attn_implementation="eager").eval()
    c = hf.config
    cfg = HookedTransformerConfig(
        n_layers=c.n_layer, d_model=c.n_embd, n_heads=c.n_head, d_head=c.n_embd // c.n_head,
        d_mlp=4 * c.n_embd if c.n_inner is None else c.n_inner, d_vocab=c.vocab_size, n_ctx=c.n_positions,
        act_fn="gelu_new", normalization_type="LN", eps=c.layer_norm_epsilon, positional_embedding_type="standard",
        default_prepend_bos=False, original_architecture="GPT2LMHeadModel", dtype=t.float32, device="cpu")
    model = HookedTransformer(cfg)
    model.load_and_process_state_dict(
        convert_gpt2_weights(hf, cfg), fold_ln=False, center_writing_weights=False, center_unembed=False,
        fold_value_biases=False, refactor_factored_attn_matrices=False)
    model.set_use_attn_result(True)
    model.set_use_split_qkv_input(True)
    model.set_use_hook_mlp_in(True)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def loader_for(req: dict[str, Any]) -> Any:
    """One batch holding every pair: answers [[answer]], wrong answers [[wrong]]."""
    from auto_circuit.data import PromptDataLoader, PromptDataset

    clean = t.tensor([p[0] for p in req["pairs"]])
    bad = t.tensor([p[1] for p in req["pairs"]])
    n = len(clean)
    ds = PromptDataset(clean, bad, [t.tensor([req["answer"]])] * n, [t.tensor([req["wrong"]])] * n)
    return PromptDataLoader(ds, seq_len=None, diverge_idx=0, batch_size=n, shuffle=False)


def diffs(logits: t.Tensor, req: dict[str, Any]) -> list[float]:
    """Each pair's logit difference, logits [B, V] at the last position."""
    return (logits[:, req["answer"]] - logits[:, req["wrong"]]).double().tolist()


def main() -> None:
    from auto_circuit.prune import run_circuits
    from auto_circuit.prune_algos.ACDC import acdc_prune_scores
    from auto_circuit.prune_algos.mask_gradient import mask_gradient_prune_scores
    from auto_circuit.types import PatchType
    from auto_circuit.utils.ablation_activations import src_ablations
    from auto_circuit.utils.graph_utils import patch_mode, patchable_model

    t.set_num_threads(1)
    req = json.loads(Path(sys.argv[1]).read_text())
    out: dict[str, Any] = {"key": req.get("key"), "versions": versions()}
    t0 = time.perf_counter()
    model = patchable_model(load_model(Path(req["model"])), factorized=True, slice_output="last_seq",
                            separate_qkv=True)
    out["load_seconds"] = time.perf_counter() - t0
    by_name = {e.name: e for e in model.edges}
    out["edges"] = len(by_name)
    loader = loader_for(req)
    batch = next(iter(loader))
    with t.inference_mode():
        out["clean"] = diffs(model(batch.clean)[model.out_slice], req)
        out["corrupted"] = diffs(model(batch.corrupt)[model.out_slice], req)

    scores = None
    if req.get("eap"):
        best = float("inf")
        for _ in range(int(req.get("eap_repeat", 1))):  # best of n
            t0 = time.perf_counter()
            scores = mask_gradient_prune_scores(model, loader, None, grad_function="logit",
                                                answer_function="avg_diff", mask_val=0.0)
            best = min(best, time.perf_counter() - t0)
        out["eap_seconds"] = best
        out["eap"] = {name: float(e.prune_score(scores)) for name, e in by_name.items()}

    if req.get("edge_sets"):
        res: dict[str, Any] = {}
        corrupt_outs = src_ablations(model, batch.corrupt)
        for key, names in req["edge_sets"].items():
            t0 = time.perf_counter()
            with patch_mode(model, corrupt_outs, edges=set(names)), t.inference_mode():
                logits = model(batch.clean)[model.out_slice]
            res[key] = {"values": diffs(logits, req), "seconds": time.perf_counter() - t0}
        out["edge_sets"] = res

    if req.get("ks"):
        assert scores is not None, "ks needs eap"
        res = {}
        for kind in (PatchType.EDGE_PATCH, PatchType.TREE_PATCH):
            t0 = time.perf_counter()
            outs = run_circuits(model, loader, list(req["ks"]), scores, patch_type=kind)
            secs = time.perf_counter() - t0
            res[kind.name] = {"seconds": secs, "values": {str(k): diffs(v[batch.key], req) for k, v in outs.items()}}
        out["topk"] = res

    if req.get("acdc_sample"):
        sample = [by_name[n] for n in req["acdc_sample"]]
        tau = float(req.get("acdc_sample_tau", 1e-3))
        secs = {}
        for key, edges in (("setup", []), ("sample", sample), ("setup2", [])):
            model.edges = edges  # type: ignore[assignment]  # acdc sorts model.edges by layer: a list works
            t0 = time.perf_counter()
            acdc_prune_scores(model, loader, None, tao_exps=[0], tao_bases=[tau])
            secs[key] = time.perf_counter() - t0
        model.edges = set(by_name.values())
        per = (secs["sample"] - min(secs["setup"], secs["setup2"])) / len(sample)
        out["acdc_sample"] = {"edges": len(sample), "seconds": secs, "per_edge": per}

    if req.get("acdc_tau") is not None:
        tau = float(req["acdc_tau"])
        order = [by_name[n] for n in req["acdc_order"]] if req.get("acdc_order") else sorted(by_name.values(),
                                                                                             key=lambda e: e.name)
        model.edges = order  # type: ignore[assignment]  # visited in this order (stable sort by layer)
        t0 = time.perf_counter()
        ps = acdc_prune_scores(model, loader, None, tao_exps=[0], tao_bases=[tau])  # type: ignore[list-item]
        secs = time.perf_counter() - t0
        model.edges = set(by_name.values())
        removed = [n for n, e in by_name.items() if float(e.prune_score(ps)) != float("inf")]
        out["acdc"] = {"tau": tau, "seconds": secs, "removed": sorted(removed),
                       "kept": sorted(set(by_name) - set(removed))}
    Path(sys.argv[2]).write_text(json.dumps(out))


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("auto-circuit", "transformer-lens", "transformers", "torch", "numpy")}


if __name__ == "__main__":
    main()
