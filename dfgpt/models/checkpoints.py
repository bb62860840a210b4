"""State dicts and weight files: nanoGPT / minGPT keys to dfgpt names and back, read without pickle.

>>> from dfgpt.models.checkpoints import to_dfgpt_key, to_nanogpt_key
>>> to_dfgpt_key("transformer.h.1.attn.c_attn.weight")
'h[1].attn.c_attn.w'
>>> to_nanogpt_key("h[0].ln_1.g")
'transformer.h.0.ln_1.weight'
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..core.blocks import ROPE
from ..core.config import Config
from ..core.graph import Graph
from ..errors import CheckpointError, OutputError, StateDictError
from .keys import family_params, hf_key

__all__ = [
    "params_from_state_dict",
    "read_model_dir",
    "read_weights",
    "saved_keys",
    "to_dfgpt_key",
    "to_nanogpt_key",
    "write_model_dir",
    "write_weights",
]

_LN = ("ln_1", "ln_2", "ln_f")
IGNORED = re.compile(r".*\.attn\.(bias|masked_bias)$")


def to_dfgpt_key(key: str) -> str:
    """'transformer.h.0.ln_1.weight' -> 'h[0].ln_1.g' (nanoGPT, minGPT and HF GPT-2 keys)."""
    key = key.removeprefix("_orig_mod.").removeprefix("transformer.")
    key = re.sub(r"^h\.(\d+)\.", r"h[\1].", key)
    if key == "lm_head.weight":
        return "lm_head.w"
    if key in ("wte.weight", "wpe.weight"):
        return key.split(".")[0]
    stem, _, leaf = key.rpartition(".")
    is_ln = stem.rsplit(".", 1)[-1] in _LN
    leaf = {"weight": "g" if is_ln else "w", "bias": "b"}.get(leaf, leaf)
    return f"{stem}.{leaf}"


def saved_keys(names: list[str], cfg: Config) -> dict[str, str]:
    """dfgpt parameter name -> its key in the family's checkpoint (nanoGPT's for GPT-2); constants left out."""
    if cfg.family == "gpt2":
        return {n: to_nanogpt_key(n) for n in names if n not in ROPE}
    keys = {n: hf_key(n, cfg) for n in names}
    return {n: k for n, k in keys.items() if k is not None}


def to_nanogpt_key(name: str) -> str:
    """'h[0].ln_1.g' -> 'transformer.h.0.ln_1.weight'."""
    if name == "lm_head.w":
        return "lm_head.weight"
    if name in ("wte", "wpe"):
        return f"transformer.{name}.weight"
    stem, _, leaf = name.rpartition(".")
    stem = re.sub(r"^h\[(\d+)\]", r"h.\1", stem)
    leaf = {"g": "weight", "w": "weight", "b": "bias"}[leaf]
    return f"transformer.{stem}.{leaf}"


def params_from_state_dict(state: dict[str, Any], graph: Graph, copy: bool = True) -> dict[str, np.ndarray]:
    """Map a nanoGPT/minGPT state dict onto the graph's parameters, checking every key and shape.

    Raises StateDictError naming each missing, extra and wrong-shaped tensor; returns
    fresh arrays in the config's dtype (the input is never modified, nor aliased). Loaders
    that just read the arrays from a file own them, and pass copy=False to skip the copy.
    """
    cfg = graph.config
    if cfg.family != "gpt2":  # transformers' own keys, checked the same way
        return family_params(state, graph, copy)
    dtype = np.dtype(cfg.dtype)
    wanted = {n: graph.specs[n].dims for n in graph.parameters}
    got: dict[str, np.ndarray] = {}
    extra: list[str] = []
    for key, value in state.items():
        if not isinstance(key, str):
            raise StateDictError(
                f"state dict keys are tensor names such as 'transformer.wte.weight', got {key!r} "
                f"({type(key).__name__}); pass the dict that model.state_dict() returns."
            )
        if IGNORED.match(key):
            continue
        name = to_dfgpt_key(key)
        if name == "lm_head.w" and cfg.tied:
            continue  # nanoGPT saves the tied head too; it is wte
        if name not in wanted:
            extra.append(key)
            continue
        if hasattr(value, "detach"):  # a torch tensor: bfloat16 has no numpy form, float32 holds it exactly
            value = value.detach().cpu()
            value = value.float() if str(value.dtype) == "torch.bfloat16" else value
            value = value.numpy()
        arr = np.asarray(value)
        got[name] = arr
    missing = [to_nanogpt_key(n) for n in wanted if n not in got]
    shapes = [
        f"{to_nanogpt_key(n)}: got {tuple(a.shape)}, expected {wanted[n]}"
        for n, a in got.items()
        if tuple(a.shape) != wanted[n]
    ]
    # Weights are real numbers: an object array of None would become nan, a complex one would
    # silently lose its imaginary part, and strings or booleans are no weights at all.
    kinds = {"b": "booleans", "c": "complex numbers", "O": "Python objects", "U": "text", "S": "bytes", "V": "records"}
    odd = [f"{to_nanogpt_key(n)} holds {kinds.get(a.dtype.kind, a.dtype.name)}" for n, a in got.items()
           if a.dtype.kind not in "fiu"]
    nonfinite = [to_nanogpt_key(n) for n, a in got.items() if a.dtype.kind == "f" and not np.isfinite(a).all()]
    problems = []
    if odd:
        problems.append(f"tensors that are not real numbers: {'; '.join(odd)} (expected float or integer arrays)")
    if missing:
        problems.append(f"missing tensors: {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected tensors: {', '.join(sorted(extra))}")
    if shapes:
        problems.append(f"wrong shapes: {'; '.join(shapes)}")
    if nonfinite:
        problems.append(f"non-finite values in: {', '.join(nonfinite)}")
    if problems:
        hint = (
            "Check the config against the checkpoint (n_layer, n_head, n_embd, block_size, "
            f"vocab_size, bias={cfg.bias}, tied={cfg.tied}, layout={cfg.layout!r})."
        )
        raise StateDictError("state dict does not fit the config: " + "; ".join(problems) + ". " + hint)
    # Copies: the caller's arrays stay the caller's (writing to them must not change the model).
    if not copy:
        return {n: np.ascontiguousarray(got[n], dtype=dtype) for n in wanted}
    return {n: np.array(got[n], dtype=dtype, order="C", copy=True) for n in wanted}


def read_weights(path: str | Path) -> dict[str, np.ndarray]:
    """Arrays from a .safetensors or .npz file, by key; never unpickles."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no weights file at {path}: give the path of a .safetensors or .npz file.")
    try:
        if path.suffix == ".safetensors":
            return map_safetensors(path)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
    except (ValueError, KeyError, TypeError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise CheckpointError(
            f"cannot read {path}: {e}. The file may be truncated or not a {path.suffix} file; "
            "re-save it from the source model."
        ) from None
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"cannot read {path}: {type(e).__name__}: {e}.") from None
    raise CheckpointError(
        f"{path.name}: unknown weights format {path.suffix!r}; dfgpt reads .safetensors and .npz "
        "(and nanoGPT's ckpt.pt with torch installed)."
    )


# safetensors dtype names -> numpy (little-endian, as the format stores them)
_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
              "U8": "u1", "BOOL": "?"}


def map_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a .safetensors file, memory-mapped read-only: nothing is copied or read yet.

    The format is an 8-byte header length, a JSON header of {name: {dtype, shape, data_offsets}},
    then the bytes. Mapping instead of reading keeps a 124M-parameter load at the weights' size
    (the page cache, shared) instead of twice it; an edit copies only the tensor it writes.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if not 2 <= n <= size - 8:
            raise ValueError(f"header length {n} does not fit the file's {size} bytes")
        header = json.loads(f.read(n))
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    base, out = 8 + n, {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        bf16 = info.get("dtype") == "BF16"  # no numpy dtype: read as its bits, widened to float32 below
        known = info.get("dtype") in _ST_DTYPES
        dtype = np.dtype("<u2") if bf16 else np.dtype(_ST_DTYPES[info["dtype"]]) if known else None
        shape = tuple(int(d) for d in info["shape"])
        begin, end = (int(x) for x in info["data_offsets"])
        if dtype is None or not 0 <= begin <= end <= size - base or end - begin != dtype.itemsize * math.prod(shape):
            raise ValueError(f"tensor {key!r}: dtype {info.get('dtype')!r}, shape {shape} and bytes "
                             f"{begin}..{end} do not fit (the file has {size - base} data bytes)")
        if end == begin:
            out[key] = np.zeros(shape, np.float32 if bf16 else dtype)
        elif bf16:  # bfloat16 is float32's top 16 bits: shifted into place, the same numbers exactly
            bits = np.memmap(path, dtype=dtype, mode="r", offset=base + begin, shape=shape)
            wide = bits.astype(np.uint32)  # the one float32-sized array of this tensor, shifted in place
            wide <<= 16
            out[key] = wide.view(np.float32)
            del bits  # unmapped now: the file's pages of this tensor leave the process before the next
        else:  # [..] read-only pages of the file; np.asarray drops the memmap subclass, keeps the map
            out[key] = np.asarray(np.memmap(path, dtype=dtype, mode="r", offset=base + begin, shape=shape))
    return out


def write_weights(params: dict[str, np.ndarray], path: str | Path, cfg: Config | None = None) -> None:
    """Save arrays under nanoGPT keys as .safetensors or .npz (another family's under transformers' keys, without
    the rotary tables, which its config makes)."""
    path = Path(path)
    if cfg is not None and cfg.family != "gpt2":
        keys = {n: hf_key(n, cfg) for n in params}
        state = {k: np.ascontiguousarray(params[n]) for n, k in keys.items() if k is not None}
    else:
        state = {to_nanogpt_key(n): np.ascontiguousarray(a) for n, a in params.items() if n not in ROPE}
    if path.suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file(state, str(path))
    elif path.suffix == ".npz":
        np.savez(path, **state)  # type: ignore[arg-type]
    else:
        raise CheckpointError(f"cannot write {path.name}: use a .safetensors or .npz file name.")


def read_model_dir(path: str | Path) -> tuple[Config, dict[str, np.ndarray]]:
    """A dfgpt model folder: config.json (every field of the architecture) and model.safetensors (or model.npz)."""
    path = Path(path)
    cfg_file = path / "config.json"
    try:
        d = json.loads(cfg_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {cfg_file}: {e}.") from None
    cfg = Config.from_file(d, cfg_file)  # every field named: a missing one is an error, never GPT-2's default
    for name in ("model.safetensors", "model.npz"):
        if (path / name).exists():
            return cfg, read_weights(path / name)
    raise CheckpointError(f"{path} has a config.json but no model.safetensors or model.npz.")


def write_model_dir(cfg: Config, params: dict[str, np.ndarray], path: str | Path) -> None:
    """A folder with config.json and model.safetensors; an OutputError if it cannot be made or written."""
    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise OutputError(
                f"cannot save a model into {str(path)!r}: it exists and is not a folder. Expected a "
                "folder (new or existing) to write config.json and model.safetensors into; choose another path."
            )
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(cfg.to_json())
        write_weights(params, path / "model.safetensors", cfg)
    except OSError as e:
        raise OutputError.wrap(path, e, "save a model into") from None
