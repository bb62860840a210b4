"""Training the sort model with dfgpt's own gradients: AdamW on random sequences, deterministic.

A training sequence is 6 random letters followed by the first 5 of them sorted (11
tokens); the loss is the cross-entropy of the 6 positions that predict the sorted
letters (positions 5..10). Everything random comes from one seeded numpy Generator, so
the same seed gives the same weights bit for bit. Training stops when greedy decoding
sorts all 729 inputs. The task itself (data, greedy decoding, score) is dfgpt.toys.sort_task.

>>> from dfgpt.toys.training import init_params
>>> from dfgpt.models.catalog import SORT
>>> import numpy as np
>>> p = init_params(SORT, np.random.default_rng(0))
>>> p["wte"].shape, float(p["h[0].ln_1.g"][0]), float(p["h[0].attn.c_attn.b"][0])
((3, 48), 1.0, 0.0)
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np

from ..core.autodiff import backward, forward
from ..core.blas import machine, one_blas_thread
from ..core.builder import build
from ..core.config import Config
from ..core.graph import Graph
from ..errors import DfgptError
from ..models.catalog import SORT
from ..models.weights import Weights
from .sort_task import N_IN, all_inputs, greedy_sort, sort_batch

__all__ = [
    "TrainResult",
    "init_params",
    "train_sort",
]

SEED = 0  # the seed graphs/sort/ was trained with


class TrainError(DfgptError):
    """Training arguments out of their domain."""


@dataclass(frozen=True)
class TrainResult:
    """A trained model and how it got there."""

    model: Weights
    seed: int
    steps: int
    accuracy: float  # fraction of the 729 inputs greedy decoding sorts
    loss: float
    seconds: float
    machine: str  # the CPU and BLAS kernel: the weights are bit for bit the same only on the same one

    def notes(self, max_steps: int) -> str:
        """TRAINING.md for the folder the weights are saved in: how they were made, and where."""
        return (
            "# The trained sort model\n\n"
            f"Made by `dfgpt train sort --seed {self.seed} --max-steps {max_steps}` "
            f"(dfgpt.toys.training.train_sort): {self.steps} AdamW steps, batch 64, "
            f"greedy decoding sorts {round(self.accuracy * 729)}/729 inputs.\n\n"
            "Hyperparameters: lr 2e-3 after a linear warmup of 100 steps, betas (0.9, 0.95), weight decay "
            "0.1 on matrices only, gradient clip 1.0, nanoGPT init; loss on positions 5..10; greedy "
            "accuracy on all 729 inputs checked every 100 steps.\n\n"
            f"Trained in {self.seconds:.1f} s on: {self.machine}.\n\n"
            "Reproducibility: everything random comes from the seed, and BLAS runs on one thread, so "
            "the same seed on the same CPU and BLAS kernel gives the same weights bit for bit "
            "(tests/test_train.py trains twice and compares). Another CPU kernel (AVX2 instead of "
            "AVX-512, say) rounds sums in another order; over hundreds of steps the weights then differ "
            "and the number of steps may too, but a full run still sorts all 729 inputs (tests/test_train.py "
            "checks that on whatever machine runs the tests).\n"
        )


def init_params(cfg: Config, rng: np.random.Generator, graph: Graph | None = None) -> dict[str, np.ndarray]:
    """nanoGPT's init: N(0, 0.02) weights and embeddings, c_proj scaled by 1/√(2·n_layer), biases 0, LN 1/0."""
    graph = graph or build(cfg)
    out = {}
    for name in graph.parameters:
        dims = graph.specs[name].dims
        if name.endswith(".g"):
            a = np.ones(dims)
        elif name.endswith(".b"):
            a = np.zeros(dims)
        else:
            std = 0.02 / np.sqrt(2 * cfg.n_layer) if name.endswith("c_proj.w") else 0.02
            a = std * rng.standard_normal(dims)
        out[name] = a.astype(cfg.dtype)
    return out


def _loss_grad(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, float]:
    """Mean cross-entropy over positions 5..10, its gradient w.r.t. the logits, token accuracy."""
    z = logits[:, N_IN - 1 :]  # [B, 6, V]
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    B, n, _ = p.shape
    picked = np.take_along_axis(p, y[..., None], axis=-1)[..., 0]
    loss = float(-np.log(picked).mean())
    g = p.copy()
    np.put_along_axis(g, y[..., None], np.take_along_axis(g, y[..., None], axis=-1) - 1.0, axis=-1)
    full = np.zeros_like(logits)
    full[:, N_IN - 1 :] = g / (B * n)
    acc = float((p.argmax(axis=-1) == y).mean())
    return loss, full, acc


def train_sort(
    seed: int = SEED,
    max_steps: int = 20000,
    batch: int = 64,
    lr: float = 2e-3,
    warmup: int = 100,
    betas: tuple[float, float] = (0.9, 0.95),
    weight_decay: float = 0.1,
    clip: float = 1.0,
    eval_every: int = 100,
    progress: bool = True,
    config: Config = SORT,
) -> TrainResult:
    """Train the sort model from a seed until greedy decoding sorts all 729 inputs (or max_steps)."""
    if not (isinstance(seed, int) and seed >= 0):
        raise TrainError(f"seed must be an integer >= 0, got {seed!r}.")
    if not (isinstance(max_steps, int) and max_steps >= 1):
        raise TrainError(f"max_steps must be an integer >= 1, got {max_steps!r}.")
    from tqdm import tqdm

    t0 = time.perf_counter()
    graph = build(config)
    rng = np.random.default_rng(seed)
    params = init_params(config, rng, graph)
    decay = {n for n, a in params.items() if a.ndim >= 2}  # matrices only, as nanoGPT does
    m1 = {n: np.zeros_like(a) for n, a in params.items()}
    m2 = {n: np.zeros_like(a) for n, a in params.items()}
    inputs = all_inputs(config.vocab_size)
    want = np.sort(inputs, axis=1)
    b1, b2 = betas
    step, loss, acc, solved = 0, float("nan"), 0.0, 0.0
    bar = tqdm(total=max_steps, disable=not progress, desc="train sort", unit="step")
    with contextlib.ExitStack() as stack:
        stack.enter_context(one_blas_thread())
        stack.callback(bar.close)
        while step < max_steps:
            x, y = sort_batch(rng, batch, config.vocab_size)
            V = forward(graph, params, x, until="logit")
            loss, g_logit, acc = _loss_grad(V["logit"], y)
            G = backward(graph, V, {"logit": g_logit})
            norm = float(np.sqrt(sum(float((G[n] * G[n]).sum()) for n in params)))
            scale = min(1.0, clip / (norm + 1e-6))
            step += 1
            rate = lr * min(1.0, step / warmup)
            for n, p in params.items():
                g = G[n] * scale
                m1[n] = b1 * m1[n] + (1 - b1) * g
                m2[n] = b2 * m2[n] + (1 - b2) * g * g
                mh = m1[n] / (1 - b1**step)
                vh = m2[n] / (1 - b2**step)
                if n in decay:
                    p *= 1 - rate * weight_decay
                p -= rate * mh / (np.sqrt(vh) + 1e-8)
            bar.update(1)
            if step % eval_every == 0:
                solved = float((greedy_sort(graph, params, inputs) == want).all(axis=1).mean())
                bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.3f}", sorted=f"{solved * 729:.0f}/729")
                if solved == 1.0:
                    break
            else:
                bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.3f}", sorted=f"{solved * 729:.0f}/729",
                                refresh=False)
    model = Weights(config, params, graph=graph)
    return TrainResult(model, seed, step, solved, loss, time.perf_counter() - t0, machine())
