"""Spreadsheet formula text for every op: plain formulas over cell references that every engine evaluates.

Only functions that Excel, LibreOffice, Google Sheets and the `formulas` package all
implement: SUM, SUMPRODUCT, MMULT (1×1 results only), MAX, EXP, SQRT, TANH, ERF, INDEX,
MATCH. No volatile functions, no array (Ctrl-Shift-Enter) formulas: the only array
arithmetic is inside SUMPRODUCT (`SUMPRODUCT(row-m, row-m)`), which evaluates its
arguments as arrays in every engine.

Conventions (they match the engine's values to rounding):

- LayerNorm variance is the population variance written out:
  `var = SUMPRODUCT(x - mean, x - mean) / C` (not VAR, the sample variance).
- Masked attention: `score[h][t][s]` for `s > t` is an empty cell (the engine holds
  -inf there); `att[h][t][s]` for `s > t` is the constant 0; `score_max`, `exp_sum`
  and `y` read only keys `s ≤ t`.
- `[in, out]` weights are read as a column with `MMULT(x_row, w_col)`, a 1×1 product.

>>> import dfgpt
>>> from dfgpt.export.workbook_formulas import op_formulas
>>> s = dfgpt.load("sort-random").sheet("CAB")
>>> ref = lambda t, i: t + str(list(i))
>>> rng = lambda t, a, b: f"{t}{list(a)}:{list(b)}"
>>> shape = s.engine.shape
>>> next(op_formulas(s.graph.ops["h[0].ln_1.mean"], s.config, shape, ref, rng))
((0,), 'SUM(emb[0, 0]:[0, 47])/48')
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import product

from ..core.config import Config
from ..core.ops import GELU_C, Op

__all__ = ["Formula", "op_formulas"]

# One output cell: its index and a formula (str, no '='), a constant (float) or None (empty).
Formula = tuple[tuple[int, ...], "str | float | None"]
Ref = Callable[[str, tuple[int, ...]], str]
Span = Callable[[str, tuple[int, ...], tuple[int, ...]], str]


def _num(x: float) -> str:
    return repr(float(x)).upper()


def op_formulas(
    op: Op, cfg: Config, shape: Callable[[str], tuple[int, ...]], R: Ref, S: Span
) -> Iterator[Formula]:
    """(index, formula) for every cell of the op's output, in index order.

    `R(tensor, idx)` is one cell's reference, `S(tensor, first, last)` the reference of
    the contiguous range between two cells of one display row or column.
    """
    kind, ins = op.kind, op.ins
    out_shape = shape(op.out)
    if kind == "embed":
        tok, wte, wpe = ins
        V, C = shape(wte)
        table = S(wte, (0, 0), (V - 1, C - 1))
        for t, c in product(range(out_shape[0]), range(C)):
            yield (t, c), f"INDEX({table},{R(tok, (t,))}+1,{c + 1})+{R(wpe, (t, c))}"
    elif kind in ("ln_mean", "ln_var", "ln_out"):
        yield from _layer_norm(op, shape, R, S)
    elif kind == "linear":
        yield from _linear(op, shape, R, S)
    elif kind in ("score", "softmax_max", "softmax_sum", "softmax", "weighted"):
        yield from _attention(op, shape, R, S)
    elif kind == "add":
        a, b = ins
        for idx in product(*map(range, out_shape)):
            yield idx, f"{R(a, idx)}+{R(b, idx)}"
    elif kind == "gelu":
        (x,) = ins
        for idx in product(*map(range, out_shape)):
            r = R(x, idx)
            if getattr(op, "approx", "tanh") == "tanh":
                yield idx, f"0.5*{r}*(1+TANH({_num(GELU_C)}*({r}+0.044715*{r}^3)))"
            else:
                yield idx, f"0.5*{r}*(1+ERF({r}/SQRT(2)))"
    else:  # pragma: no cover - a new op kind needs its formula here
        raise NotImplementedError(f"no spreadsheet formula for op kind {kind!r} ({op.out})")


def _layer_norm(op: Op, shape: Callable[[str], tuple[int, ...]], R: Ref, S: Span) -> Iterator[Formula]:
    x = op.ins[0]
    T, C = shape(x)
    for t in range(T):
        row = S(x, (t, 0), (t, C - 1))
        if op.kind == "ln_mean":
            yield (t,), f"SUM({row})/{C}"
            continue
        m = R(op.ins[1], (t,))
        if op.kind == "ln_var":
            yield (t,), f"SUMPRODUCT({row}-{m},{row}-{m})/{C}"
            continue
        v = R(op.ins[2], (t,))
        eps = _num(op.params()["eps"])
        for c in range(C):
            f = f"({R(x, (t, c))}-{m})/SQRT({v}+{eps})*{R(op.ins[3], (c,))}"
            if len(op.ins) > 4:
                f += f"+{R(op.ins[4], (c,))}"
            yield (t, c), f


def _linear(op: Op, shape: Callable[[str], tuple[int, ...]], R: Ref, S: Span) -> Iterator[Formula]:
    p = op.params()
    x, w = op.ins[:2]
    b = op.ins[2] if len(op.ins) > 2 else None
    T, K = shape(x)
    n, off, heads = p["n_out"], p["offset"], p["heads"]
    hs = n // heads if heads else n
    for t in range(T):
        row = S(x, (t, 0), (t, K - 1))
        for o in range(n):
            j = off + o
            if p["layout"] == "out_in":
                f = f"SUMPRODUCT({row},{S(w, (j, 0), (j, K - 1))})"
            else:
                f = f"MMULT({row},{S(w, (0, j), (K - 1, j))})"
            if b is not None:
                f += f"+{R(b, (j,))}"
            yield ((o // hs, t, o % hs) if heads else (t, o)), f


def _attention(op: Op, shape: Callable[[str], tuple[int, ...]], R: Ref, S: Span) -> Iterator[Formula]:
    kind, ins = op.kind, op.ins
    if kind == "score":
        q, k = ins
        H, T, hs = shape(q)
        for h, t, s in product(range(H), range(T), range(T)):
            if s > t:
                yield (h, t, s), None
            else:
                qr, kr = S(q, (h, t, 0), (h, t, hs - 1)), S(k, (h, s, 0), (h, s, hs - 1))
                yield (h, t, s), f"SUMPRODUCT({qr},{kr})/SQRT({hs})"
        return
    if kind == "weighted":
        att, v = ins
        H, T, hs = shape(v)
        for t, h, d in product(range(T), range(H), range(hs)):
            terms = [f"{R(att, (h, t, s))}*{R(v, (h, s, d))}" for s in range(t + 1)]
            yield (t, h * hs + d), "+".join(terms)
        return
    src = ins[0]
    causal = len(shape(src)) == 3
    lead = list(product(*map(range, shape(src)[:-1])))  # (h, t) or (t,)
    k_temp = {"softmax_sum": 2, "softmax": 3}.get(kind)  # the logits' softmax reads temperature
    temp = R(ins[k_temp], ()) if k_temp is not None and len(ins) > k_temp else None
    for pre in lead:
        last = pre[-1] if causal else shape(src)[-1] - 1  # keys s ≤ t, or the whole vocab row
        row = S(src, (*pre, 0), (*pre, last))
        if kind == "softmax_max":
            yield pre, f"MAX({row})"
            continue
        mx = R(ins[1], pre)
        if kind == "softmax_sum":
            z = f"({row}-{mx})/{temp}" if temp else f"{row}-{mx}"
            yield pre, f"SUMPRODUCT(EXP({z}))"
            continue
        total = R(ins[2], pre)
        for s in range(shape(src)[-1]):
            if causal and s > last:
                yield (*pre, s), 0.0
                continue
            cell = R(src, (*pre, s))
            z = f"({cell}-{mx})/{temp}" if temp else f"{cell}-{mx}"
            yield (*pre, s), f"EXP({z})/{total}"
