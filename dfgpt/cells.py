"""The cells of one input run through one model, read by name, evaluated lazily.

>>> from dfgpt.models.catalog import load_weights
>>> cells = Cells(load_weights("sort-random"), [2, 0, 1])
>>> cells.select("logit[2]")
[('logit', (2, slice(None, None, None)))]
>>> cells.dependents("wpe[1][0]")[:1], cells.state("logit[2][A]")
(['emb[1][0]'], 'unset')
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .core.evaluate import Engine, Mask
from .core.names import ALL, Index, parse, path_matches
from .errors import EditError, IndexError_, TokenError, UnknownNameError, show, suggest
from .models.checkpoints import saved_keys

if TYPE_CHECKING:
    from .models.weights import Weights

__all__ = ["ALIASES", "Cells", "mask_indices"]

ALIASES = {"logits": "logit", "probs": "prob", "probabilities": "prob"}
_PLAIN_TOKEN = re.compile(r"[^\[\]\s:*.]+")


def mask_indices(m: Mask) -> Any:
    """The True cells of a mask as index tuples, in index order: flat indices, then unravelled
    (np.argwhere over GPT-2's 38.6M-cell lm_head mask costs ~65 ms, this ~2 ms).

    >>> list(mask_indices(np.array([[False, True], [True, False]]))), list(mask_indices(np.array(True)))
    ([(0, 1), (1, 0)], [()])
    """
    if not m.ndim:
        return [()] if m else []
    return zip(*(a.tolist() for a in np.unravel_index(np.flatnonzero(m), m.shape)))


class Cells:
    """Cells of one input: values, precedents and dependents, by name (the analysis layers' view).

    `dfgpt.Sheet` is this plus the verbs of the layers above (formula, provenance, set, ...);
    the analysis, edit and export layers take a `Cells`, so they never need the façade.
    """

    def __init__(
        self, model: Weights, ids: str | Sequence[int], temperature: float = 1.0, exact: bool | None = None
    ) -> None:
        self.model = model
        self.config = model.config
        self.graph = model.graph
        # 0 is greedy: `prob` is one-hot on each row's largest logit, ties to the lowest id
        if isinstance(temperature, bool) or not (isinstance(temperature, (int, float, np.integer, np.floating))
                                                 and math.isfinite(temperature) and temperature >= 0):
            raise EditError(f"temperature must be a finite number >= 0 (0 = greedy), got {show(temperature)}.")
        exact = model.config.dtype == "float64" if exact is None else exact
        ids = model.encode(ids)  # ids in range and within the context, checked (a -1 must not wrap)
        self.engine = Engine(self.graph, model.params, np.array(ids), float(temperature), exact)

    # -- names ----------------------------------------------------------------------------
    @property
    def T(self) -> int:
        return self.engine.T

    @property
    def tokens(self) -> list[int]:
        return [int(t) for t in self.engine.tokens]

    @property
    def text(self) -> str:
        return self.model.decode(self.tokens)

    def token_label(self, i: int) -> str:
        """How a vocabulary index prints in a cell name: the token's displayed spelling (`␣John`, one
        spelling for BPE's `Ġ` and SentencePiece's `▁`) when it reads back, else the id."""
        shown = self.model.shown
        t = shown[i] if i < len(shown) else ""
        plain = _PLAIN_TOKEN.fullmatch(t) and not re.fullmatch(r"-?[0-9]+", t)
        return t if plain and self.model.token_ids.get(t) == i else str(i)

    _token_label = token_label

    def token_spelling(self, text: str, i: int) -> str:
        """How a token the user wrote prints back: the displayed spelling when they wrote the tokenizer's
        own (`ĠJohn` prints `␣John`); what they wrote otherwise (an id stays an id)."""
        vocab = self.model.vocab
        return self.token_label(i) if i < len(vocab) and text == vocab[i] else text

    def token_id(self, text: str, where: str = "token") -> int:
        """The id of a token written as its text, its id, or `#id` (an id even where the digits are a text)."""
        ids, V = self.model.token_ids, self.config.vocab_size
        short = len(text) <= 20  # an id has a few digits: never convert thousands (Python refuses past 4,300)
        if short and text.startswith("#") and text[1:].isdigit() and int(text[1:]) < V:
            return int(text[1:])
        if text in ids:
            return int(ids[text])
        if short and text.isdigit() and int(text) < V:
            return int(text)
        vocab = self.model.vocab
        raise TokenError(
            f"{where}: {show(text)} is not a token of the vocabulary"
            + (f" ({' '.join(vocab)})" if len(vocab) <= 20 else "")
            + f"; give a token text or an id 0..{V - 1}." + suggest(text, vocab[:5000])
        )

    def name(self, tensor: str, idx: tuple[int, ...]) -> str:
        """The printed name of one cell: `logit[5][A]`."""
        spec = self.graph.specs.get(tensor) if isinstance(tensor, str) else None
        if spec is None:
            raise UnknownNameError(
                f"{show(tensor)} is not a tensor of this model; name(tensor, index) takes a tensor name "
                "such as 'logit' (sheet.tensors() lists them)." + (suggest(tensor, self.graph.specs)
                                                                     if isinstance(tensor, str) else "")
            )
        if not isinstance(idx, tuple) or len(idx) != len(spec.axes):
            raise IndexError_(f"{tensor} takes {len(spec.axes)} indices ({', '.join(spec.axes)}), got {show(idx)}.")
        axes = spec.axes
        parts = [self._token_label(int(i)) if a == "vocab" else str(int(i)) for a, i in zip(axes, idx)]
        return tensor + "".join(f"[{p}]" for p in parts)

    def names(self, masks: dict[str, Mask], limit: int | None = None) -> list[str]:
        """Cell names of boolean masks, in graph order then index order."""
        out: list[str] = []
        for tensor in self.graph.order:
            m = masks.get(tensor)
            if m is None:
                continue
            for idx in mask_indices(m):
                out.append(self.name(tensor, idx))
                if limit is not None and len(out) >= limit:
                    return out
        return out

    def _index_one(self, tensor: str, axis: int, i: Index, n: int) -> Any:
        spec = self.graph.specs[tensor]
        aname = spec.axes[axis]
        if i is ALL:
            return slice(None)
        if isinstance(i, slice):
            return i
        if isinstance(i, str):
            if aname != "vocab":
                raise IndexError_(
                    f"axis {axis} ({aname}) of {tensor} takes a number 0..{n - 1}, got {i!r}."
                )
            vocab = self.model.vocab
            got = self.model.token_ids.get(i)
            if got is None:
                raise TokenError(
                    f"token {i!r} is not in the vocabulary ({' '.join(vocab[:20])}"
                    f"{' ...' if len(vocab) > 20 else ''}); write a token or an id 0..{n - 1}."
                    + suggest(i, vocab[:5000])
                )
            return got
        if not isinstance(i, int):  # parse gives int, str, slice or ALL: only int is left
            raise IndexError_(f"cannot index axis {axis} of {tensor} with {i!r}.")
        if not -n <= i < n:
            raise IndexError_(
                f"index {i} is out of range for axis {axis} ({aname}) of {tensor}, which has "
                f"size {n} (0..{n - 1})."
                + (" Positions past the input do not exist yet." if aname in ("pos", "key") else "")
            )
        return i % n

    def select(self, text: str) -> list[tuple[str, tuple[Any, ...]]]:
        """Resolve a name, slice or wildcard to [(tensor, numpy index)]."""
        sel = parse(text)
        specs = self.graph.specs
        path = ALIASES.get(sel.path, sel.path)
        index = sel.index
        if path in specs:
            tensors = [path]
        else:
            tensors = [n for n in specs if path_matches(path, n)]
            if not tensors and index:  # a stage such as 'h[0]' parses as path 'h', index [0]
                stage = str(sel)
                tensors = [n for n in specs if path_matches(stage, n)]
                index = ()
            if not tensors:
                raise UnknownNameError(
                    f"{text!r} names no tensor of this model." + (suggest(path, specs) or
                    " Tensors are named like 'logit', 'h[0].attn.att', 'wte'; see sheet.tensors().")
                )
        out = []
        for tensor in tensors:
            spec = specs[tensor]
            shape = spec.shape(self.T)
            if len(index) > len(shape):
                raise IndexError_(
                    f"{tensor} has {len(shape)} axes ({', '.join(spec.axes) or 'scalar'}) but "
                    f"{text!r} gives {len(index)} indices."
                )
            idx = tuple(self._index_one(tensor, a, i, shape[a]) for a, i in enumerate(index))
            out.append((tensor, idx + (slice(None),) * (len(shape) - len(idx))))
        return out

    def cell(self, text: str) -> tuple[str, tuple[int, ...]]:
        """Resolve a name that must be exactly one cell."""
        sel = self.select(text)
        tensor, idx = sel[0]
        if len(sel) != 1 or not all(isinstance(i, int) for i in idx):
            spec = self.graph.specs[tensor]
            raise IndexError_(
                f"{text!r} selects more than one cell; name one cell with {len(spec.axes)} "
                f"indices ({', '.join(spec.axes)}), e.g. {self.name(tensor, (0,) * len(spec.axes))!r}."
            )
        return tensor, idx  # type: ignore[return-value]

    def masks(self, text: str) -> dict[str, Mask]:
        """The selected cells as {tensor: bool mask}."""
        out: dict[str, Mask] = {}
        for tensor, idx in self.select(text):
            m = np.zeros(self.engine.shape(tensor), bool)
            m[idx] = True
            out[tensor] = m
        return out

    def tensors(self, pattern: str = "*") -> list[str]:
        """Tensor names matching a pattern (all of them by default)."""
        if pattern == "*":
            return list(self.graph.order)
        return [n for n in self.graph.order if path_matches(pattern, n)]

    def cells(self, pattern: str) -> list[str]:
        """Every cell name a pattern selects."""
        return self.names(self.masks(pattern))

    # -- values -----------------------------------------------------------------------------
    def compute(self, masks: dict[str, Mask]) -> None:
        """Bring the rows these cells live in up to date.

        `masks` maps tensor names to boolean arrays of the tensor's current shape
        (`sheet.masks(text)` gives them).
        """
        if not isinstance(masks, dict):
            raise IndexError_(
                f"compute takes {{tensor name: boolean mask}}, got {type(masks).__name__}; "
                "build one with sheet.masks('logit[5]')."
            )
        for tensor, m in masks.items():
            if not isinstance(tensor, str) or tensor not in self.graph.specs:
                shown = repr(tensor)[:100]
                raise UnknownNameError(
                    f"compute: {shown} is not a tensor of this model; expected one of the names "
                    "sheet.graph.order lists." + (suggest(tensor, self.graph.specs) if isinstance(tensor, str) else "")
                )
            shape = tuple(self.engine.shape(tensor))
            if not isinstance(m, (np.ndarray, np.generic)) or m.dtype != bool or m.shape != shape:
                got = f"{m.dtype} array of shape {m.shape}" if isinstance(m, np.ndarray) else type(m).__name__
                raise IndexError_(
                    f"compute: the mask of {tensor} must be a boolean array of shape {shape} (the tensor's "
                    f"shape), got a {got}; build it with sheet.masks({tensor!r})."
                )
        self.engine.ensure(self.engine.rows_of(masks))

    def value(self, text: str) -> Any:
        """A cell's value (float), a slice's values (ndarray); a wildcard's tensors stacked on a leading axis.

        `value("h[*].attn.att")` is `[layer, head, T, T]`: the tensors a wildcard selects, in layer
        order, when they all have one shape; tensors of different shapes (`h[0]`, `h[0].*`) are
        refused with the names to read one at a time.
        """
        sel = self.select(text)
        need: dict[str, Any] = {}
        for tensor, idx in sel:  # the rows alone: no full-size mask for one logit of 50k
            ra = self.graph.specs[tensor].row_axis
            if self.graph.specs[tensor].kind == "computed" and ra is not None:
                rows = np.zeros(self.T, bool)
                rows[idx[ra]] = True
                need[tensor] = rows
        self.engine.ensure(need)
        out = {}
        for tensor, idx in sel:
            v = self.engine.view(tensor)[idx]
            out[tensor] = (int(v) if tensor == "tokens" else float(v)) if np.ndim(v) == 0 else np.array(v)
        if len(sel) == 1:
            return out[sel[0][0]]
        shapes = {np.shape(v) for v in out.values()}
        if len(shapes) > 1:
            listed = ", ".join(f"{t} {tuple(np.shape(v))}" for t, v in list(out.items())[:6])
            raise IndexError_(
                f"{text!r} selects {len(out)} tensors of different shapes ({listed}"
                f"{', ...' if len(out) > 6 else ''}), which do not stack into one array. Expected a wildcard "
                "over tensors of one shape, such as 'h[*].attn.att'; read the others one at a time: "
                f"[sheet.values(t) for t in sheet.tensors({text!r})]."
            )
        return np.stack([out[t] for t, _ in sel])  # [selected tensor, *the selection's shape]

    def values(self, tensor: str) -> np.ndarray:
        """The whole current value of one tensor (computed as needed)."""
        spec = self.graph.specs.get(tensor) if isinstance(tensor, str) else None
        if spec is None or not spec.axes:  # a pattern, an alias, or a scalar: `value` reads it
            return np.asarray(self.value(tensor))
        # A tensor by its own name: every row, with no name parsing or masks (what `value` does
        # for it, in fewer steps: a small model's forward is mostly such steps).
        if spec.kind == "computed" and spec.row_axis is not None:
            self.engine.ensure_whole(tensor)
        return np.array(self.engine.view(tensor))

    # -- structure --------------------------------------------------------------------------
    def precedents(self, text: str) -> list[str]:
        """The cells the selected cells read directly."""
        out: dict[str, Mask] = {}
        for tensor, m in self.masks(text).items():
            if self.graph.specs[tensor].kind == "computed":
                for k, v in self.engine.precedents(tensor, self._unpinned(tensor, m)).items():
                    out[k] = out[k] | v if k in out else v
        return self.names(out)

    def dependents(self, text: str) -> list[str]:
        """The cells that read the selected cells directly."""
        out: dict[str, Mask] = {}
        for tensor, m in self.masks(text).items():
            for k, v in self.engine.dependents(tensor, m).items():
                v = self._unpinned(k, v)
                out[k] = out[k] | v if k in out else v
        return self.names(out)

    def _unpinned(self, tensor: str, m: Mask) -> Mask:
        pins = self.engine.pins.get(tensor)
        if pins:
            m = m.copy()
            for idx in pins:
                m[idx] = False
        return m

    def state(self, text: str) -> str:
        """'fresh', 'stale', 'unset', 'pinned' (computed cells) or 'fresh' / 'edited' (parameters)."""
        tensor, idx = self.cell(text)
        return self.engine.state(tensor, idx)

    def kind(self, text: str) -> str:
        """'parameter', 'input' or 'computed'."""
        return self.graph.specs[self.select(text)[0][0]].kind

    def state_dict(self) -> dict[str, np.ndarray]:
        """The checkpoint's keys (nanoGPT's; another family's: transformers'), with the sheet's current weights."""
        keys = saved_keys(self.graph.parameters, self.config)
        return {k: self.engine.values[n].copy() for n, k in keys.items()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.text!r}, T={self.T}, model={self.config.name or 'gpt'})"
