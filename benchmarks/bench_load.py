"""Load time and memory of a GPT-2-small-shaped checkpoint (124M parameters, float32).

    python benchmarks/bench_load.py

Writes a Hugging Face-style folder (config.json + model.safetensors) of seeded random
weights to a temporary folder, then loads it with `dfgpt.load` in a fresh process and
reports the time and the peak resident memory above the interpreter's baseline, as a
ratio to the bytes of the weights (goal, DESIGN §6: ≤ 1.5×).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CONFIG = {
    "model_type": "gpt2", "n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024,
    "vocab_size": 50257, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
}

PROBE = r"""
import resource, sys, time
import numpy, networkx, safetensors.numpy, dfgpt, dfgpt.hub  # imports are not the model
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
model = dfgpt.load(sys.argv[1])
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
weights = sum(a.nbytes for a in model.params.values())
print(weights, (peak - base) * 1024, dt, model.n_params)
"""


def write_checkpoint(folder: Path) -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    C, V, P, L = 768, 50257, 1024, 12
    state = {"transformer.wte.weight": rng.standard_normal((V, C), dtype=np.float32) * 0.02,
             "transformer.wpe.weight": rng.standard_normal((P, C), dtype=np.float32) * 0.01}
    shapes = {"ln_1.weight": (C,), "ln_1.bias": (C,), "attn.c_attn.weight": (C, 3 * C), "attn.c_attn.bias": (3 * C,),
              "attn.c_proj.weight": (C, C), "attn.c_proj.bias": (C,), "ln_2.weight": (C,), "ln_2.bias": (C,),
              "mlp.c_fc.weight": (C, 4 * C), "mlp.c_fc.bias": (4 * C,), "mlp.c_proj.weight": (4 * C, C),
              "mlp.c_proj.bias": (C,)}
    for layer in range(L):
        for key, shape in shapes.items():
            state[f"transformer.h.{layer}.{key}"] = rng.standard_normal(shape, dtype=np.float32) * 0.02
    state["transformer.ln_f.weight"] = np.ones(C, np.float32)
    state["transformer.ln_f.bias"] = np.zeros(C, np.float32)
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(CONFIG))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_checkpoint(folder)
        out = subprocess.run([sys.executable, "-c", PROBE, str(folder)], capture_output=True, text=True, check=True)
        weights, extra, seconds, n = out.stdout.split()
        ratio = int(extra) / int(weights)
        print(f"GPT-2 small shape: {int(n):,} parameters, {int(weights) / 2**20:.0f} MiB of weights; "
              f"load {float(seconds):.2f} s; peak memory above baseline {int(extra) / 2**20:.0f} MiB "
              f"= {ratio:.2f}x the weights (goal <= 1.5x)")


if __name__ == "__main__":
    main()
