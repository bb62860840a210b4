"""A TinyLlama-1.1B-shaped model from a bfloat16 checkpoint: load + forward memory, and `why` on 24 GiB.

    python benchmarks/bench_tinyllama.py [--folder DIR]

A seeded random Llama at TinyLlama-1.1B's shape (22 layers, 2,048 hidden, 32 heads, 4 KV heads,
5,632 MLP, 32,000 vocab, untied head; 1,100,048,384 parameters) is written once as a Hugging Face
folder with a bfloat16 `model.safetensors` (~2.2 GB) under DIR (default /work/cache/tinyllama-bf16,
reused when present). The writer makes one tensor at a time (numpy normal(0, 0.02), rounded to
bfloat16 to nearest even; norms 1, as transformers initialises them): never a float32 model.

Then, each in a fresh process, one thread:

- dfgpt: `dfgpt.load(DIR).sheet(ids).values("logit")` at T = 64; its peak RSS (ru_maxrss, the
  whole process: interpreter, imports, weights, activations) against issue 29's goal,
  1.2 × the float32 weight bytes (4 × n_params);
- transformers: the same folder read as float32 (`from_pretrained(..., dtype=torch.float32)`: the
  same bf16 -> f32 widening), the same forward; the logits must agree to LOGIT_TOL of the largest
  and the top token at the last position must be the same;
- `dfgpt why "logit[63][x]" --top 5` through the CLI (x the top token), its peak RSS and wall
  time, and it must answer (exit 0, 5 ranked cells printed).

Asserts real work (finite logits of shape [64, 32000], the same top token, agreement), never the
goal: the figures are printed for docs/families.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

T, TOP = 64, 5
LOGIT_TOL = 1e-4  # relative to the largest logit: float32 through 22 layers, two implementations
SHAPE = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
             num_key_value_heads=4, vocab_size=32000, tie_word_embeddings=False, max_position_embeddings=2048,
             rope_theta=10000.0, rms_norm_eps=1e-5, hidden_act="silu")
DEFAULT_FOLDER = Path("/work/cache/tinyllama-bf16")
STD = 0.02  # LlamaConfig's initializer_range


def prompt() -> list[int]:
    return np.random.default_rng(0).integers(0, SHAPE["vocab_size"], T).tolist()


def tensors() -> list[tuple[str, tuple[int, ...]]]:
    """(transformers key, shape) of every weight, in the order they are written."""
    C, F, V = SHAPE["hidden_size"], SHAPE["intermediate_size"], SHAPE["vocab_size"]
    kv = C // SHAPE["num_attention_heads"] * SHAPE["num_key_value_heads"]
    out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (V, C))]
    for i in range(SHAPE["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (C,)), (p + "self_attn.q_proj.weight", (C, C)),
                (p + "self_attn.k_proj.weight", (kv, C)), (p + "self_attn.v_proj.weight", (kv, C)),
                (p + "self_attn.o_proj.weight", (C, C)), (p + "post_attention_layernorm.weight", (C,)),
                (p + "mlp.gate_proj.weight", (F, C)), (p + "mlp.up_proj.weight", (F, C)),
                (p + "mlp.down_proj.weight", (C, F))]
    return [*out, ("model.norm.weight", (C,)), ("lm_head.weight", (V, C))]


def n_params() -> int:
    return sum(math.prod(s) for _, s in tensors())


def bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 [n] -> its bfloat16 bits [n] (uint16), rounded to nearest even (finite inputs)."""
    u = a.view(np.uint32)
    return ((u + (np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1)))) >> 16).astype(np.uint16)


def write_folder(folder: Path) -> None:
    """config.json + a bf16 model.safetensors written tensor by tensor (one float32 tensor in memory at a time)."""
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    cfg = transformers.LlamaConfig(**SHAPE, architectures=["LlamaForCausalLM"], torch_dtype="bfloat16")
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    at = 0
    for key, shape in tensors():
        n = 2 * math.prod(shape)
        header[key] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [at, at + n]}
        at += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    part = folder / "model.safetensors.part"
    with open(part, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        for j, (key, shape) in enumerate(tensors()):
            if key.endswith("norm.weight"):
                f.write(np.full(shape, 0x3F80, np.uint16).tobytes())  # 1.0 in bfloat16
                continue
            rng = np.random.default_rng([29, j])
            rows = shape[0]
            step = max(1, (1 << 24) // math.prod(shape[1:]))
            for r in range(0, rows, step):  # 16M values at a time
                a = rng.standard_normal((min(step, rows - r), *shape[1:]), dtype=np.float32)
                a *= np.float32(STD)
                f.write(bf16_bits(a.reshape(-1)).tobytes())
    cfg.save_pretrained(folder)
    part.rename(folder / "model.safetensors")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_dfgpt(folder: str, out: str) -> dict:
    from threadpoolctl import threadpool_limits

    import dfgpt

    start = peak_mib()
    with threadpool_limits(limits=1, user_api="blas"):
        t = time.perf_counter()
        model = dfgpt.load(folder)
        loaded, after_load = time.perf_counter() - t, peak_mib()
        t = time.perf_counter()
        logits = model.sheet(prompt()).values("logit")
        fwd = time.perf_counter() - t
    np.save(Path(out) / "logits-dfgpt.npy", logits)
    return {"load": loaded, "forward": fwd, "start_mib": start, "load_mib": after_load, "peak_mib": peak_mib(),
            "n_params": model.n_params - sum(model.params[n].size for n in ("rope.cos", "rope.sin")),
            "repr": repr(model)}


def run_torch(folder: str, out: str) -> dict:
    import torch
    import transformers

    torch.set_num_threads(1)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager",
                                                           dtype=torch.float32).eval()
    with torch.no_grad():
        logits = hf(torch.tensor([prompt()])).logits[0].numpy()
    np.save(Path(out) / "logits-torch.npy", logits)
    return {"peak_mib": peak_mib()}


def run_why(folder: str, x: int) -> dict:
    """`dfgpt why` in its own process: its answer, peak RSS (of that child alone) and wall time."""
    cmd = [sys.executable, "-m", "dfgpt", "why", f"logit[{T - 1}][{x}]", "--top", str(TOP), "--model", folder,
           "--text", " ".join(map(str, prompt()))]
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode:
        sys.exit(f"dfgpt why failed:\n{done.stderr}")
    return {"wall": wall, "peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "stdout": done.stdout, "cmd": " ".join(cmd[1:4]) + f" --top {TOP} --model {folder} --text '<64 ids>'"}


def child(which: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, which, *args], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{which} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(folder: Path) -> None:
    if not (folder / "model.safetensors").exists() or not (folder / "config.json").exists():
        t = time.perf_counter()
        write_folder(folder)
        print(f"wrote {folder} ({(folder / 'model.safetensors').stat().st_size / 2**30:.2f} GiB) "
              f"in {time.perf_counter() - t:.0f} s")
    n = n_params()
    goal = 1.2 * 4 * n / 2**20
    with tempfile.TemporaryDirectory() as out:
        d = child("--dfgpt", str(folder), out)
        t = child("--torch", str(folder), out)
        ld, lt = np.load(Path(out) / "logits-dfgpt.npy"), np.load(Path(out) / "logits-torch.npy")
    assert d["n_params"] == n, (d["n_params"], n)
    assert ld.shape == (T, SHAPE["vocab_size"]) and np.isfinite(ld).all(), ld.shape
    err = float(np.abs(ld - lt).max() / np.abs(lt).max())
    x = int(np.argmax(ld[-1]))
    assert err <= LOGIT_TOL and x == int(np.argmax(lt[-1])), (err, x, int(np.argmax(lt[-1])))
    w = child("--why", str(folder), str(x))
    lines = w["stdout"].splitlines()
    head = next(i for i, s in enumerate(lines) if s.startswith(f"top {TOP} cells for logit[{T - 1}][{x}]"))
    ranked = [s for s in lines[head + 2:] if s.strip()]
    assert len(ranked) == TOP, w["stdout"][-2000:]
    print(f"TinyLlama-1.1B shape ({n:,} parameters, seeded random, bfloat16 checkpoint), 1 thread, "
          f"load avg {os.getloadavg()[0]:.1f}:")
    print(f"  {d['repr']}")
    print(f"  dfgpt.load {d['load']:.1f} s + forward T={T} {d['forward']:.1f} s: peak RSS {d['peak_mib']:,.0f} MiB "
          f"(after imports {d['start_mib']:,.0f}, after load {d['load_mib']:,.0f}) = "
          f"{d['peak_mib'] / (4 * n / 2**20):.3f}x the float32 weight bytes ({4 * n / 2**20:,.0f} MiB; "
          f"goal <= 1.2x = {goal:,.0f} MiB)")
    print(f"  transformers float32 from the same folder: peak RSS {t['peak_mib']:,.0f} MiB; logits agree to "
          f"{err:.1e} of the largest; top token at {T - 1}: {x} on both")
    print(f"  {w['cmd']}: answered in {w['wall']:.1f} s, peak RSS {w['peak_mib']:,.0f} MiB "
          f"({w['peak_mib'] / (4 * n / 2**20):.2f}x the float32 weight bytes)")
    print("\n".join("    " + s for s in lines[head:head + 2 + TOP]))


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--dfgpt":
        print(json.dumps(run_dfgpt(sys.argv[2], sys.argv[3])))
    elif len(sys.argv) > 3 and sys.argv[1] == "--torch":
        print(json.dumps(run_torch(sys.argv[2], sys.argv[3])))
    elif len(sys.argv) > 3 and sys.argv[1] == "--why":
        print(json.dumps(run_why(sys.argv[2], int(sys.argv[3]))))
    else:
        ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        ap.add_argument("--folder", type=Path, default=DEFAULT_FOLDER,
                        help="where the bf16 checkpoint is written once and reused")
        main(ap.parse_args().folder)
