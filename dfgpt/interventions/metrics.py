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

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DfgptError, IndexError_, QueryError, show, suggest

if TYPE_CHECKING:
    from ..cells import Cells

__all__ = ["KINDS", "Metric", "parse_metric"]

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
        except DfgptError:
            raise  # already says what was wrong
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
