"""The models that ship: `sort` (trained), `sort-random`, `sort-neat`, `aab`; and `load_weights` for paths.

>>> import dfgpt
>>> dfgpt.load("sort-neat").params["h[0].attn.c_attn.w"][0, :4]
array([-0.5,  0.2, -0.2,  0.5])
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import numpy as np

from ..core.builder import build
from ..core.config import Config
from ..core.rope import rope_tables
from ..errors import CheckpointError, suggest
from .checkpoints import read_model_dir
from .handmade import aab_model
from .hub import load_path  # dfgpt folders, GPT-2 and nanoGPT checkpoints
from .weights import Weights

__all__ = ["SORT", "graphs_dir", "load_weights", "neat_params", "random_params", "shipped"]

SORT = Config(
    n_layer=3,
    n_head=3,
    n_embd=48,
    block_size=11,
    vocab=("A", "B", "C"),
    n_inner=192,
    tied=False,
    gelu="tanh",
    name="sort",
)


def graphs_dir() -> Path:
    """The shipped `graphs/` folder, in the source tree or in the installed package."""
    try:
        p = Path(str(resources.files("dfgpt.graphs")))
        if p.is_dir():
            return p
    except ModuleNotFoundError:
        pass
    # dfgpt/models/catalog.py -> the checkout's top folder, where graphs/ sits beside dfgpt/
    return Path(__file__).resolve().parents[2] / "graphs"


def random_params(cfg: Config, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random weights (nanoGPT's init: N(0, 0.02), LayerNorm 1 and 0, zero biases are
    replaced by small random ones so that every cell carries a distinct number)."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = dict(rope_tables(cfg))  # constants of the config
    for name in build(cfg).parameters:
        dims = build_dims(cfg, name)
        if name in out:
            continue
        if name.endswith(".g") or _norm_weight(name, dims):
            a = 1.0 + 0.1 * rng.standard_normal(dims)
        elif name.endswith(".b"):
            a = 0.02 * rng.standard_normal(dims)
        else:
            a = 0.2 * rng.standard_normal(dims)
        out[name] = a.astype(cfg.dtype)
    return out


def neat_params(cfg: Config) -> dict[str, np.ndarray]:
    """Tidy constants, one decimal each, like a spreadsheet's "no weights" tab: w = ((3i + 7j) mod 11 - 5) / 10."""
    out: dict[str, np.ndarray] = dict(rope_tables(cfg))  # constants of the config
    for name in build(cfg).parameters:
        dims = build_dims(cfg, name)
        if name in out:
            continue
        if name.endswith(".g") or _norm_weight(name, dims):
            a = np.ones(dims)
        elif name.endswith(".b"):
            a = np.zeros(dims)
        else:
            i, j = np.indices(dims)
            a = ((3 * i + 7 * j) % 11 - 5) / 10
        out[name] = a.astype(cfg.dtype)
    return out


def _norm_weight(name: str, dims: tuple[int, ...]) -> bool:
    """An RMSNorm's scale (`layers[0].input_layernorm.w`): a vector named .w, not a matrix."""
    return name.endswith(".w") and len(dims) == 1


def build_dims(cfg: Config, name: str) -> tuple[int, ...]:
    return build(cfg).specs[name].dims


def shipped() -> list[str]:
    """Names `load_weights` (and `dfgpt.load`) accept besides paths."""
    return ["sort", "sort-random", "sort-neat", "aab"]


def load_weights(name: str | Path = "sort", dtype: str | None = None) -> Weights:
    """A shipped model by name, or a model folder / checkpoint on disk.

    >>> import dfgpt
    >>> dfgpt.load("sort-random").config.vocab
    ('A', 'B', 'C')
    """
    if not isinstance(name, (str, Path)):
        raise CheckpointError(
            f"a model is named by text (one of {', '.join(shipped())}) or a path, got {type(name).__name__}."
        )
    if dtype is not None and dtype not in ("float64", "float32"):
        raise CheckpointError(f"dtype must be 'float64' or 'float32' (or None), got {dtype!r}.")
    name = str(name)
    model = _shipped(name)
    if model is not None:
        if dtype is not None and dtype != model.config.dtype:
            cfg = model.config.replace(dtype=dtype)
            return Weights(cfg, {k: v.astype(dtype) for k, v in model.params.items()}, model.tokenizer)
        return model
    path = Path(name)
    shown = name if len(name) <= 80 else f"{name[:50]}...{name[-15:]} ({len(name)} characters)"
    try:
        exists = path.exists()
    except (OSError, ValueError) as e:  # a name too long for the file system, an embedded NUL
        raise CheckpointError(
            f"no model named {shown!r}, and it cannot be a path ({getattr(e, 'strerror', None) or e}); "
            f"shipped models are {', '.join(shipped())}, or give the path of a model folder or file."
        ) from None
    if exists:
        return load_path(path, dtype=dtype)
    if _HUB.fullmatch(name):
        raise CheckpointError(
            f"{name!r} is a Hugging Face Hub name, and dfgpt downloads nothing: it loads a local folder. Save "
            f"one once with transformers (GPT2LMHeadModel.from_pretrained({name!r}).save_pretrained('gpt2-local') "
            f"and AutoTokenizer.from_pretrained({name!r}).save_pretrained('gpt2-local')), or point at a folder "
            "the Hub cache already holds (~/.cache/huggingface/hub/models--.../snapshots/<hash>), then "
            "dfgpt.load('gpt2-local'). docs/gpt2.md shows how."
        )
    raise CheckpointError(
        f"no model named {shown!r} and no such path; shipped models are {', '.join(shipped())}."
        + suggest(name, shipped())
    )


# A GPT-2 Hub id: gpt2, gpt2-medium, distilgpt2, openai-community/gpt2 (when no such path exists).
_HUB = re.compile(r"(?:[\w.-]+/)?(?:distil)?gpt2(?:-[\w.]+)?")


def _shipped(name: str) -> Weights | None:
    if name == "sort-random":
        return Weights(SORT.replace(name="sort-random"), random_params(SORT, seed=0))
    if name == "sort-neat":
        return Weights(SORT.replace(name="sort-neat"), neat_params(SORT))
    if name == "aab":
        return aab_model()
    if name == "sort":
        folder = graphs_dir() / "sort"
        if not (folder / "config.json").exists():
            raise CheckpointError(
                f"the trained sort model is not in {folder}; make it with `dfgpt train sort`."
            )
        cfg, state = read_model_dir(folder)
        return Weights.from_state_dict(state, cfg, copy=False)  # read fresh from the file
    return None
