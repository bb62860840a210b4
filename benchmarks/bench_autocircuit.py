"""dfgpt's circuit discovery against auto-circuit 1.0.1, measured in the same run, values compared.

    python benchmarks/bench_autocircuit.py [--layers 4 12] [--ac-python /work/venvs/ac/bin/python]
                                           [--acdc-tau 1e-4] [--full-acdc] [--reuse]

Issue 30's setting: seeded random GPT-2-shaped models (768 wide, 12 heads; 4 and 12 layers) saved
by `transformers` (no download), float32, T = 16, 8 (clean, corrupted) pairs one or two tokens
apart (`bench_circuits.pairs_for`), the logit difference of two tokens at the last position, one
thread on each side. auto-circuit runs in its own venv (see `autocircuit_side.py` for the
install line and the versions) by subprocess, on the same saved weights; dfgpt runs here. Edge
names map one to one: auto-circuit's "A0.1->A2.0.Q", "Resid Start->MLP 1", "MLP 3->Resid End"
are dfgpt's `h[0].head[1] -> h[2].head[0].q`, `emb -> h[1].mlp`, `h[3].mlp -> logits`.

Conventions (read from auto-circuit's source, and made to match):
- EAP: auto-circuit's score is the gradient of the *loss* −mean(logit diff) with respect to each
  edge's mask at 0, corrupted activations patched into the clean run; dfgpt's (`Runs.gradient(0)`,
  what `dfgpt.eap` ranks) is the gradient of +mean(logit diff): the same numbers, signs flipped.
- Edge patching: both take the clean input and give the listed edges the corrupted run's
  contributions (`patch_mode(edges=...)`; `CircuitSheet(clean).patch_edges(corrupted, edges)`).
- Top k: auto-circuit's `run_circuits` by default (EDGE_PATCH) runs the *corrupted* input and
  patches the k edges from the clean run, every other edge carrying the corrupted run's current
  values; dfgpt's `keep_only` and ACDC (and auto-circuit's TREE_PATCH and ACDC) run the *clean*
  input and patch every other edge from the corrupted run. The two differ (a kept edge out of a
  component whose own inputs are patched carries its clean value in the one, the recomputed
  value in the other); both are compared, EDGE_PATCH against dfgpt on the swapped pairs
  (`discovery.evaluate` of the complement), TREE_PATCH against `discovery.evaluate` of the k edges
  (what `Circuit.curve` reads). Means over the pairs, on both sides.
- ACDC: both use KL(clean ‖ patched) at the last position, mean over the pairs, and remove an
  edge when the KL grows by less than τ (signed: a drop removes it too). auto-circuit visits a
  *set* of edges sorted by layer (its order within a layer follows the string hash seed); the
  benchmark hands it dfgpt's visit order (destinations from the logits back, each one's edges
  last source first) so both greedy passes decide in one order.

Asserts the values agree (EAP scores to 1e-4 of the largest; edge patching and top-k logit
differences to 1e-4 absolute) and that the work was real (scores not all zero, patching moved
the metric); prints times and ratios (goals, issue 30: EAP ≤ 1.0×, top-k ≥ 10× faster, ACDC per
edge and full pass ≥ 10× faster with the same kept edges), never asserts a speed.

The full ACDC pass at 4 layers (`--full-acdc 4`) takes auto-circuit 15–25 minutes on an idle
machine: its result is saved under /work/cache/ac-acdc-4.json, and `--reuse` reads it back when its key (the sha256 of
the weights file, the pairs, τ and the visit order) matches, saying so.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

import dfgpt  # noqa: E402
from dfgpt.circuits.circuit_graph import input_name  # noqa: E402
from dfgpt.circuits.discovery import evaluate  # noqa: E402
from dfgpt.circuits.runs import Runs  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_circuits import A, B, pairs_for  # noqa: E402
from bench_patching import save_gpt2  # noqa: E402

AC_PYTHON = "/work/venvs/ac/bin/python"
CACHE = Path("/work/cache")
METRIC = f"logit_diff:#{A},#{B}"


def ac_node(name: str) -> str:
    """dfgpt's component name -> auto-circuit's node name ('h[2].head[0].q' -> 'A2.0.Q')."""
    if name in ("emb", "logits"):
        return {"emb": "Resid Start", "logits": "Resid End"}[name]
    m = re.fullmatch(r"h\[(\d+)\]\.mlp", name)
    if m:
        return f"MLP {m[1]}"
    m = re.fullmatch(r"h\[(\d+)\]\.head\[(\d+)\](?:\.([qkv]))?", name)
    if not m:
        raise ValueError(f"no auto-circuit node for {name!r}")
    return f"A{m[1]}.{m[2]}" + (f".{m[3].upper()}" if m[3] else "")


def ac_edge(name: str) -> str:
    """'h[0].head[1] -> h[2].head[0].q' -> 'A0.1->A2.0.Q'."""
    src, dest = name.split(" -> ")
    return f"{ac_node(src)}->{ac_node(dest)}"


def weights_sha(folder: Path) -> str:
    return hashlib.sha256((folder / "model" / "model.safetensors").read_bytes()).hexdigest()


def acdc_order(runs: Runs) -> list[int]:
    """dfgpt.acdc's visit order: destinations from the logits back, each one's edges last source first."""
    comps = runs.components
    return [e.index for d in reversed(comps.dests) for e in reversed(comps.into(d))]


def acdc_request(folder: Path, pairs: list[Any], names: list[str], order: list[int], tau: float) -> dict[str, Any]:
    req = {"model": str(folder / "model"), "weights_sha256": weights_sha(folder), "pairs": pairs, "answer": A,
           "wrong": B, "acdc_tau": tau, "acdc_order": [ac_edge(names[i]) for i in order]}
    keyed = {k: v for k, v in req.items() if k != "model"}
    req["key"] = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()
    return req


def run_side(python: str, req: dict[str, Any], out: Path | None = None) -> dict[str, Any]:
    """auto-circuit's side in its venv (one thread, a fixed hash seed); its JSON answer."""
    if not Path(python).exists():
        raise SystemExit(f"no auto-circuit python at {python}: make the venv (see benchmarks/autocircuit_side.py) "
                         "or pass --ac-python")
    with tempfile.TemporaryDirectory() as tmp:
        rq, res = Path(tmp) / "req.json", out or Path(tmp) / "out.json"
        res.parent.mkdir(parents=True, exist_ok=True)
        rq.write_text(json.dumps(req))
        env = {**os.environ, "PYTHONHASHSEED": "0", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1", "PYTHONPATH": ""}
        done = subprocess.run([python, str(HERE / "autocircuit_side.py"), str(rq), str(res)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode:
            raise SystemExit(f"auto-circuit's side failed:\n{done.stderr[-3000:]}")
        return json.loads(res.read_text())


def edge_sets(E: int, rng: np.random.Generator) -> dict[str, list[int]]:
    """Random edge sets of several sizes, every edge, and none (indices)."""
    sizes = [n for n in sorted({1, 10, 100, E // 4}) if n < E]
    sets = {f"random {n}": sorted(rng.choice(E, n, replace=False).tolist()) for n in sizes}
    return {**sets, "every edge": list(range(E)), "no edge": []}


def patched_values(model: dfgpt.Model, pairs: list[Any], names: list[str], picked: list[int]) -> list[float]:
    """Each pair's logit difference with `picked` edges patched from its corrupted run (CircuitSheet.patch_edges)."""
    out = []
    for clean, bad in pairs:
        s = dfgpt.CircuitSheet(model, clean)
        if picked:
            s.patch_edges(bad, [names[i] for i in picked])
        row = np.asarray(s.values("logit"))[-1]  # [V]: the last position
        out.append(float(row[A]) - float(row[B]))
    return out


def switched_values(runs: Runs, picked: list[int]) -> list[float]:
    """The same through the runs' switches (every pair's clean run, `picked` switched to the corrupted
    contributions): for large sets, where a sheet's edit would name every patched cell."""
    s = np.zeros(len(runs.components))
    s[picked] = 1.0
    runs.set_all(s)
    out = [float(m(c)) for m, c in zip(runs.metrics, runs.cells)]
    runs.set_all(np.zeros(len(runs.components)))
    return out


def ks_for(E: int) -> list[int]:
    """10 edge counts from 1 to every edge, spaced geometrically."""
    return sorted({round(float(k)) for k in np.geomspace(1, E, 10)})


class Rows(list[str]):
    """The table's rows, each printed as it comes (a long run shows its progress)."""

    def append(self, row: str) -> None:
        print(row, flush=True)
        super().append(row)


def table_row(what: str, diff: float | None, ac: float | None, df: float | None, goal: str = "") -> str:
    d = "" if diff is None else f"{diff:.1e}"
    a = "" if ac is None else f"{ac:.3f} s"
    f = "" if df is None else f"{df:.3f} s"
    r = "" if not (ac and df) else f"{ac / df:.2f}x"
    return f"  {what:<34} {d:>9} {a:>11} {f:>11} {r:>8}  {goal}"


def bench(n_layer: int, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_gpt2(folder, n_layer)
        model = dfgpt.load(folder / "model")
        pairs = pairs_for(model)
        t0 = time.perf_counter()
        runs = Runs(model, pairs, METRIC)
        setup = time.perf_counter() - t0
        comps = runs.components
        E = len(comps)
        names = [e.name for e in comps.edges]
        ac_names = [ac_edge(n) for n in names]
        sets = edge_sets(E, np.random.default_rng(1))
        ks = ks_for(E)
        kl_runs = Runs(model, pairs, "kl")
        order = acdc_order(kl_runs)
        n_sample = args.sample or (36 if n_layer <= 4 else 12)
        sample = [order[i] for i in np.linspace(0, E - 1, n_sample).astype(int)]  # spread over the depth
        req = {"model": str(folder / "model"), "pairs": pairs, "answer": A, "wrong": B, "eap": True,
               "eap_repeat": args.repeat, "edge_sets": {k: [ac_names[i] for i in v] for k, v in sets.items()},
               "ks": ks, "acdc_sample": [ac_names[i] for i in sample], "acdc_sample_tau": args.acdc_tau}
        ac = run_side(args.ac_python, req, args.save / f"ac-{n_layer}.json" if args.save else None)
        assert ac["edges"] == E and set(ac["eap"]) == set(ac_names), "the edge sets of the two sides differ"
        print(f"GPT-2 shape, {n_layer} layers: {E:,} edges, T = 16, {len(pairs)} pairs, float32, one thread; "
              f"auto-circuit {ac['versions']['auto-circuit']} (TransformerLens {ac['versions']['transformer-lens']}, "
              f"torch {ac['versions']['torch']}) by subprocess; load {os.getloadavg()[0]:.1f}", flush=True)
        rows = Rows()
        rows.append(f"  {'comparison':<34} {'max diff':>9} {'auto-circ.':>11} {'dfgpt':>11} {'ac/dfgpt':>8}  goal")
        clean_diff = max(abs(a - b) for a, b in zip(ac["clean"], patched_values(model, pairs, names, [])))
        assert clean_diff <= 1e-4, f"the two models differ on the clean runs by {clean_diff:.1e}"

        # EAP: dfgpt's Runs (set up once per dataset) and its batched gradient, best of `repeat`.
        best = np.inf
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            scores = runs.gradient(0.0)
            best = min(best, time.perf_counter() - t0)
        theirs = -np.array([ac["eap"][n] for n in ac_names])  # the gradient of the loss −logit diff
        top = float(np.abs(theirs).max())
        err = float(np.abs(scores - theirs).max()) / top
        assert top > 0 and np.count_nonzero(scores) > E // 2, "EAP scored nothing"
        assert err <= 1e-4, f"EAP scores differ by {err:.1e} of the largest"
        rows.append(table_row("EAP scores (rel. to largest)", err, ac["eap_seconds"], best, "<= 1.0x dfgpt/ac"))
        rows.append(table_row("  dfgpt with its Runs setup", None, ac["eap_seconds"], best + setup))

        # Edge patching: each pair's logit difference, every set.
        moved = 0.0
        for key, picked in sets.items():
            t0 = time.perf_counter()
            sheet = len(picked) <= args.sheet_max
            mine = patched_values(model, pairs, names, picked) if sheet else switched_values(runs, picked)
            secs = time.perf_counter() - t0
            got = ac["edge_sets"][key]
            d = max(abs(a - b) for a, b in zip(got["values"], mine))
            assert d <= 1e-4, f"edge patching of {key} differs by {d:.1e}"
            moved = max(moved, max(abs(a - b) for a, b in zip(mine, ac["clean"])))
            rows.append(table_row(f"patch {key} ({'sheets' if sheet else 'runs'})", d, got["seconds"], secs))
        assert moved > 0, "no edge set moved the metric"

        # Top k by the EAP scores (auto-circuit's ranking, so both sides keep the same k edges).
        rank = np.argsort(-np.abs(theirs), kind="stable")
        swapped = Runs(model, [(b, a) for a, b in pairs], METRIC)
        for kind, label in (("TREE_PATCH", "keep only top k (10 k)"), ("EDGE_PATCH", "run_circuits default (10 k)")):
            got = ac["topk"][kind]
            diffs, secs = [], 0.0
            for k in ks:
                kept = rank[:k].tolist()
                t0 = time.perf_counter()
                if kind == "TREE_PATCH":
                    mine = evaluate(runs, kept)
                else:
                    mine = evaluate(swapped, sorted(set(range(E)) - set(kept)))
                secs += time.perf_counter() - t0
                diffs.append(abs(mine - float(np.mean(got["values"][str(k)]))))
            d = max(diffs)
            assert d <= 1e-4, f"{kind} top-k values differ by {d:.1e}"
            rows.append(table_row(f"{label}", d, got["seconds"], secs, ">= 10x" if kind == "TREE_PATCH" else ""))
        sem = max(abs(float(np.mean(ac["topk"]["TREE_PATCH"]["values"][str(k)]))
                      - float(np.mean(ac["topk"]["EDGE_PATCH"]["values"][str(k)]))) for k in ks)

        # ACDC edge tests on a sample spread over the depth (KL metric, as ACDC runs them).
        rows_of = [m.of_row for m in kl_runs.metrics]
        t0 = time.perf_counter()
        if kl_runs.is_stacked:  # the path dfgpt.acdc takes in fast mode: every pair stacked, one update an edge
            for i in sample:
                e = comps.edges[i]
                for st, idx in kl_runs.groups():
                    s = st.switches[input_name(e.dest)].copy()
                    s[e.slot] = 1.0
                    z = st.update({e.dest: s})  # [P, V]
                    for j, k in enumerate(idx):
                        rows_of[k](z[j])  # type: ignore[misc]
                    st.revert()
        else:  # exact mode: each pair's replay
            reps = kl_runs.replays()
            for i in sample:
                e = comps.edges[i]
                for f, r in zip(rows_of, reps):
                    f(r.try_edge(e, 1.0))  # type: ignore[misc]
                    r.revert()
        per = (time.perf_counter() - t0) / len(sample)
        rows.append(table_row(f"ACDC per edge ({len(sample)}-edge sample)", None, ac["acdc_sample"]["per_edge"], per,
                              ">= 10x"))
        if n_layer in args.full_acdc:
            rows.append(full_acdc(model, folder, pairs, names, order, args))
        print(f"  top-k: auto-circuit's default (EDGE_PATCH) and keep-only (TREE_PATCH) differ by up to {sem:.2e} "
              f"in the mean logit difference (clean {np.mean(ac['clean']):.4f}, corrupted "
              f"{np.mean(ac['corrupted']):.4f}); dfgpt matches each")
        print(f"  dfgpt Runs setup (once per dataset) {setup:.2f} s; auto-circuit's load {ac['load_seconds']:.2f} s")


def full_acdc(model: dfgpt.Model, folder: Path, pairs: list[Any], names: list[str], order: list[int],
              args: argparse.Namespace) -> str:
    """One full ACDC pass at τ on both sides (auto-circuit's from the cache with --reuse); the kept edges must agree."""
    req = acdc_request(folder, pairs, names, order, args.acdc_tau)
    cached = CACHE / f"ac-acdc-{model.config.n_layer}.json"
    ac = json.loads(cached.read_text()) if args.reuse and cached.exists() else None
    if ac is not None and ac.get("key") == req["key"]:
        print(f"  auto-circuit's full ACDC pass read from {cached} (an earlier run on this machine, the same weights, "
              f"pairs, τ and order: key {req['key'][:12]})")
    else:
        CACHE.mkdir(parents=True, exist_ok=True)
        ac = run_side(args.ac_python, req, cached)
    t0 = time.perf_counter()
    circuit = dfgpt.acdc(model, pairs, "kl", threshold=args.acdc_tau)
    secs = time.perf_counter() - t0
    ac_kept = set(ac["acdc"]["kept"])
    mine, theirs = set(circuit.kept), {n for n in names if ac_edge(n) in ac_kept}
    print(f"  ACDC τ = {args.acdc_tau:g}: dfgpt keeps {len(mine)}, auto-circuit {len(theirs)}; "
          f"only dfgpt {sorted(mine - theirs)[:5]}, only auto-circuit {sorted(theirs - mine)[:5]}")
    assert mine == theirs, "ACDC kept different edges"
    return table_row(f"ACDC full pass τ={args.acdc_tau:g} (kept =)", 0.0, ac["acdc"]["seconds"], secs, ">= 10x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, nargs="+", default=[4, 12])
    ap.add_argument("--ac-python", default=AC_PYTHON, help="the python of auto-circuit's venv")
    ap.add_argument("--acdc-tau", type=float, default=1e-4, help="ACDC's threshold τ on the KL divergence")
    ap.add_argument("--full-acdc", type=int, nargs="*", default=[], metavar="LAYERS",
                    help="one full ACDC pass on both sides at these depths (e.g. --full-acdc 4)")
    ap.add_argument("--reuse", action="store_true",
                    help="read auto-circuit's full pass from /work/cache/ac-acdc-LAYERS.json when its key matches")
    ap.add_argument("--repeat", type=int, default=2, help="EAP timed best of this many")
    ap.add_argument("--sheet-max", type=int, default=10,
                    help="edge sets up to this size patched on CircuitSheets, larger ones through Runs' switches")
    ap.add_argument("--save", type=Path, help="write auto-circuit's answers here (ac-L.json)")
    ap.add_argument("--sample", type=int, default=0, help="edges in the ACDC per-edge sample")
    args = ap.parse_args()
    for n in args.layers:
        bench(n, args)


if __name__ == "__main__":
    main()
