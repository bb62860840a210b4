"""What a patch is measured by: a callable of a sheet, or a short spec read at one position.

Specs (position: the last one unless `@t` or `position=` says otherwise):

    logit_diff:A,C    logit[t][A] - logit[t][C]  (a token text, an id, or '#id' for an id always)
    logit:A           logit[t][A]
    prob:A            prob[t][A] (at the sheet's temperature)
    logprob:A         log prob[t][A]
    kl                KL(clean ‖ patched) of the next-token distributions at t

A spec metric also gives its gradient with respect to the logit row (attribution patching).

>>> import dfgpt
>>> m = dfgpt.load("sort-random")
>>> clean = m.sheet("CABACA")
>>> metric = parse_metric("logit_diff:A,C", clean)
>>> metric.name, metric(clean) == clean.value("logit[5][A]") - clean.value("logit[5][C]")
('logit_diff:A,C@5', True)
>>> parse_metric("kl", clean)(clean)
0.0
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DfgptError, IndexError_, QueryError, show, suggest

if TYPE_CHECKING:
    from ..cells import Cells

__all__ = ["KINDS", "Metric", "Outside", "Reads", "parse_metric", "read_in", "record_reads"]

KINDS = ("logit_diff", "logit", "prob", "logprob", "kl")
_ARITY = {"logit_diff": 2, "logit": 1, "prob": 1, "logprob": 1, "kl": 0}


def _log_softmax(z: np.ndarray) -> np.ndarray:  # [V] -> [V]
    z = z - z.max()
    return z - np.log(np.exp(z).sum())


def _logp(row: np.ndarray, tau: float) -> np.ndarray:
    """log prob of a logit row [V] at temperature τ; at 0 (greedy) 0 on the first largest logit, −∞ elsewhere."""
    if tau == 0:
        out = np.full(row.shape, -np.inf)
        out[int(np.argmax(row))] = 0.0
        return out
    return _log_softmax(np.asarray(row, np.float64) / tau)


@dataclass(frozen=True)
class Metric:
    """A named number of a sheet; spec metrics also know their gradient with respect to `logit[position]`."""

    name: str
    fn: Callable[[Any], float] = field(repr=False)
    kind: str | None = None
    position: int | None = None
    tokens: tuple[int, ...] = ()
    clean_logp: np.ndarray | None = field(default=None, repr=False)  # [V]: the clean distribution (kl)
    of_row: Callable[[np.ndarray], float] | None = field(default=None, repr=False)  # of logit[position] ([V])

    def __call__(self, sheet: Any) -> float:
        """The metric of a sheet, as a float; a callable that raises or returns no real number is refused."""
        try:
            got = self.fn(sheet)
        except (DfgptError, Outside):
            raise  # already says what was wrong; or a replay's read beyond the recorded ones
        except Exception as e:  # a user's callable: say which metric and what it raised
            raise QueryError(f"metric {self.name!r} raised {type(e).__name__}: {show(str(e), 200)}. "
                             "Expected a callable of a sheet that returns a number; fix the callable.") from e
        if isinstance(got, (bool, np.bool_)) or not (
                isinstance(got, (int, float, np.integer, np.floating))
                or (isinstance(got, np.ndarray) and got.ndim == 0 and got.dtype.kind in "iuf")):
            raise QueryError(
                f"metric {self.name!r} returned {show(got)} ({type(got).__name__}); expected one real number, "
                "e.g. s.value('logit[5][A]') - s.value('logit[5][C]') (a slice's array: reduce it, e.g. .sum())."
            )
        return float(got)

    def dlogit(self, sheet: Cells) -> tuple[int, np.ndarray]:
        """(position, ∂metric/∂logit[position] as [V]) at the sheet's values."""
        if self.kind is None or self.position is None:
            raise QueryError(
                f"metric {self.name!r} is a Python callable: it has no gradient; use a spec such as "
                "'logit_diff:A,C', 'prob:A', 'logprob:A' or 'kl' for attribution patching."
            )
        t = self.position
        V = sheet.config.vocab_size
        g = np.zeros(V)
        if self.kind == "logit_diff":
            g[self.tokens[0]] += 1.0
            g[self.tokens[1]] -= 1.0
            return t, g
        if self.kind == "logit":
            g[self.tokens[0]] = 1.0
            return t, g
        tau = float(sheet.engine.values["temperature"])
        if tau == 0:  # greedy probabilities are a step function of the logits: flat almost everywhere
            return t, g
        p = np.exp(_log_softmax(np.asarray(sheet.value(f"logit[{t}]"), np.float64) / tau))
        if self.kind == "kl":
            if self.clean_logp is None:  # parse_metric sets it for every "kl" metric
                raise QueryError("a KL metric needs the clean run's distribution; make it with parse_metric.")
            return t, (p - np.exp(self.clean_logp)) / tau
        g[self.tokens[0]] = 1.0
        g = (g - p) / tau  # ∂ log p_A / ∂ logit
        return t, g * p[self.tokens[0]] if self.kind == "prob" else g


def _token(sheet: Cells, text: str, spec: str) -> int:
    return sheet.token_id(text, f"metric {show(spec)}")


def parse_metric(metric: str | Callable[[Any], float] | Metric, clean: Cells, position: int | None = None) -> Metric:
    """A `Metric` from a spec string (see the module), a callable of a sheet, or a Metric."""
    if isinstance(metric, Metric):
        return metric
    if callable(metric):
        return Metric(getattr(metric, "__name__", "metric"), metric)
    if not isinstance(metric, str):
        raise QueryError(f"metric must be a spec like 'logit_diff:A,C' or a callable of a sheet, got {metric!r}.")
    spec = metric.strip()
    head, _, at = spec.partition("@")
    kind, _, args = head.partition(":")
    kind = kind.strip()
    if kind not in KINDS:
        raise QueryError(
            f"unknown metric {show(spec)}: expected one of logit_diff:A,C  logit:A  prob:A  logprob:A  kl "
            "(optionally @position), or a callable of a sheet." + suggest(kind, KINDS)
        )
    names = [a.strip() for a in args.split(",")] if args.strip() else []
    if len(names) != _ARITY[kind]:
        example = {"logit_diff": "logit_diff:A,C", "kl": "kl"}.get(kind, f"{kind}:A")
        raise QueryError(f"metric {show(spec)}: {kind} takes {_ARITY[kind]} token(s), e.g. {example!r}.")
    T = clean.T
    if position is not None and (isinstance(position, bool) or not isinstance(position, (int, np.integer))
                                 or not -T <= position < T):
        raise IndexError_(f"metric {show(spec)}: position {show(position)} is out of range 0..{T - 1}.")
    if at.strip():
        digits = at.strip().lstrip("-")
        if not digits.isdigit() or len(digits) > 20 or not -T <= int(at) < T:
            raise IndexError_(f"metric {show(spec)}: the position after '@', {show(at.strip())}, is not a number "
                              f"or out of range: expected 0..{T - 1} (or -{T}..-1 from the end).")
        if position is not None and int(position) % T != int(at) % T:
            raise QueryError(f"metric {show(spec)} reads position {int(at) % T} but position={int(position)} was "
                             "given too: say the position once (in the spec after '@', or as position=).")
        position = int(at)
    t = int(T - 1 if position is None else position) % T
    toks = tuple(_token(clean, n, spec) for n in names)
    names = [clean.token_spelling(n, i) for n, i in zip(names, toks)]  # one spelling: ĠJohn prints ␣John
    name = f"{kind}{':' + ','.join(names) if names else ''}@{t}"
    tau = float(clean.engine.values["temperature"])

    def logp(row: np.ndarray) -> np.ndarray:  # logit row [V] -> log-probabilities [V]
        return _logp(row, tau)

    clean_logp = ref = logp(clean.value(f"logit[{t}]")) if kind == "kl" else None
    if kind == "logit_diff":
        def of_row(row: np.ndarray) -> float:
            return float(row[toks[0]]) - float(row[toks[1]])
    elif kind == "logit":
        def of_row(row: np.ndarray) -> float:
            return float(row[toks[0]])
    elif kind == "prob":
        def of_row(row: np.ndarray) -> float:
            return float(np.exp(logp(row)[toks[0]]))
    elif kind == "logprob":
        def of_row(row: np.ndarray) -> float:
            return float(logp(row)[toks[0]])
    else:
        if ref is None:  # kl: the clean distribution is read above
            raise QueryError("a KL metric needs the clean run's distribution.")
        clean_ref = ref

        def of_row(row: np.ndarray) -> float:
            if tau == 0:  # one-hot distributions: 0 when the greedy picks agree, +inf when not
                return 0.0 if int(np.argmax(clean_ref)) == int(np.argmax(logp(row))) else float("inf")
            return max(0.0, float(np.sum(np.exp(clean_ref) * (clean_ref - logp(row)))))

    def fn(sheet: Any) -> float:
        return of_row(sheet.value(f"logit[{t}]"))

    return Metric(name, fn, kind, t, toks, clean_logp, of_row)


# -- what a callable reads ------------------------------------------------------------------------
Reads = dict[str, np.ndarray]  # {computed tensor: bool[T] rows read}; inputs and weights are not listed

# What a sheet's name lookups read of its engine besides values: the same whatever a site holds.
_SAFE = frozenset({"T", "tokens", "graph", "specs", "shape", "row_size", "exact", "dtype", "cap"})


class Outside(Exception):
    """A callable read something its recorded reads do not hold (or the engine beyond its reads)."""


class _Engine:
    """An engine stand-in for a callable metric's sheet: reads are recorded (nothing served) or served
    from a replay's arrays within `allowed`; any other use of the engine makes the reads opaque."""

    __slots__ = ("_allowed", "_cols", "_opaque", "_reads", "_real", "_served")

    def __init__(self, real: Any, allowed: Reads | None = None, served: dict[str, np.ndarray] | None = None,
                 cols: frozenset[int] | None = None) -> None:
        self._real, self._allowed, self._served = real, allowed, served
        self._reads: Reads = {}
        self._opaque: str | None = None
        # The logit columns read (None: every column); served, the columns a replay computes.
        self._cols: set[int] | None = set() if served is None else (set(cols) if cols is not None else None)

    def _column(self, idx: Any) -> None:
        """A read of `logit[idx]`: one column by number, or every column."""
        col = idx[1] if isinstance(idx, tuple) and len(idx) == 2 else None
        c = int(col) % self._real.graph.specs["logit"].dims[1] \
            if isinstance(col, (int, np.integer)) and not isinstance(col, bool) else None
        if self._served is None:
            if self._cols is not None:
                if c is None:
                    self._cols = None
                else:
                    self._cols.add(c)
        elif self._cols is not None and c not in self._cols:
            raise Outside("logit")

    def _read(self, name: str, rows: np.ndarray) -> None:  # rows: bool[T]
        if name not in self._real.graph.computed:
            return
        if self._allowed is not None:
            ok = self._allowed.get(name)
            if ok is None or (rows & ~ok).any():
                raise Outside(name)
        got = self._reads.get(name)
        self._reads[name] = rows.copy() if got is None else got | rows

    def ensure(self, need: dict[str, np.ndarray], plan: Any = None) -> None:
        for name, rows in need.items():
            self._read(name, np.asarray(rows, bool))
        if self._served is None:
            self._real.ensure(need)

    def ensure_whole(self, name: str) -> None:
        if name == "logit":
            self._column(None)
        self._read(name, np.ones(self._real.T, bool))
        if self._served is None:
            self._real.ensure_whole(name)

    def view(self, name: str) -> np.ndarray:
        if name not in self._reads and name in self._real.graph.computed:
            self._read(name, np.ones(self._real.T, bool))  # a view with no read before it: every row
        if self._served is None:
            got: np.ndarray = self._real.view(name)
        else:
            spec, T = self._real.specs[name], self._real.T
            got = self._served[name][:T] if name == "tokens" else \
                self._served[name][tuple(slice(0, T) if a in ("pos", "key") else slice(None) for a in spec.axes)]
        if name == "logit":  # which columns are read: a logit difference needs two of 50k
            watched = got.view(_Watched)
            watched.on_index = self._column
            return watched
        return got

    def __getattr__(self, name: str) -> Any:
        if name not in _SAFE:
            if self._served is not None:
                raise Outside(name)
            self._opaque = self._opaque or name
        return getattr(self._real, name)


class _Watched(np.ndarray):
    """A logit array that reports each index it is read at (the columns a callable reads)."""

    on_index: Callable[[Any], None]

    def __getitem__(self, idx: Any) -> Any:
        self.on_index(idx)
        return np.asarray(self)[idx]

    def __array_finalize__(self, obj: Any) -> None:
        self.on_index = getattr(obj, "on_index", lambda idx: None)


def record_reads(metric: Metric, sheet: Cells) -> tuple[float, Reads | None, tuple[int, ...] | None]:
    """The metric of a sheet, the rows it read ({computed tensor: bool[T]}; None when it reached the
    engine in a way not recorded: `engine.values`, a gradient, ...), and the logit columns it read
    (None: every column, or none).

    >>> import dfgpt
    >>> s = dfgpt.load("sort").sheet("CABACA")
    >>> v, reads, cols = record_reads(parse_metric(lambda c: c.value("logit[5][0]"), s), s)
    >>> v == s.value("logit[5][0]"), {k: np.flatnonzero(r).tolist() for k, r in reads.items()}, cols
    (True, {'logit': [5]}, (0,))
    """
    rec = _Engine(sheet.engine)
    view = copy.copy(sheet)
    view.engine = rec  # type: ignore[assignment]
    value = metric(view)
    cols = tuple(sorted(rec._cols)) if rec._cols and "logit" in rec._reads else None
    return value, None if rec._opaque else rec._reads, cols


def read_in(metric: Metric, sheet: Cells, values: dict[str, np.ndarray], allowed: Reads,
            cols: tuple[int, ...] | None = None) -> float:
    """The metric of a sheet whose values are `values` (a replay's arrays), reading only `allowed`
    (and of the logits only `cols`, unless None); raises `Outside` when the callable reads anything else."""
    view = copy.copy(sheet)
    view.engine = _Engine(sheet.engine, allowed, values, None if cols is None else frozenset(cols))  # type: ignore[assignment]
    return metric(view)
