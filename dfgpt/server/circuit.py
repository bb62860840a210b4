"""The explorer's circuit view: a circuit found over pairs (ACDC, EAP, EAP-IG) or loaded from a file, as one answer.

One request per interaction (`POST /api/circuit`): the pairs, the metric, the method and its
threshold or top-k are checked field by field (a bad one is a 4xx JSON answer whose `field`
says where the page shows it), the circuit is found on the served model's weights (the page's
edits do not apply: discovery reads the model, never a sheet) and remembered, so that a toggle
or a reload costs nothing; the answer holds the kept edges with their scores, the picture
(`Circuit.picture`, the same SVG as `dfgpt circuit -o circuit.svg`), the faithfulness curve
(`Circuit.curve_svg`) and, with `keep`, each pair's metric with only the circuit's edges kept
(`CircuitSheet.keep_only`, every other edge patched from the corrupted run).

>>> import dfgpt
>>> model = dfgpt.load("sort")
>>> got = circuit_json(model, {"pairs": [["CABACAAAA", "CACACAAAA"]], "metric": "kl", "method": "acdc"})
>>> got["circuit"]["kept"][0]["edge"], got["picture"].startswith("<svg")
('emb -> h[0].head[1].v', True)
>>> try:
...     circuit_json(model, {"metric": "kll"})
... except dfgpt.DfgptError as e:
...     print(e.field, str(e).split(":")[0])  # type: ignore[attr-defined]
metric unknown metric 'kll'
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..circuits.circuit import Circuit
from ..circuits.circuit_sheet import CircuitSheet
from ..circuits.components import Components
from ..circuits.discovery import acdc, eap, eap_ig
from ..errors import DfgptError, OutputError, QueryError
from ..interventions.metrics import parse_metric
from ..model import Model
from .sessions import encode

__all__ = ["ACDC_LIMIT", "METHODS", "SORT_PAIRS", "circuit_json", "load_circuits", "matching"]

METHODS = ("acdc", "eap", "eap-ig")
# docs/circuits.md's pairs: after the three As it wrote, sort must write B when the input holds a B, C when not
SORT_PAIRS = (("BACACAAAA", "CACACAAAA"), ("CABACAAAA", "CACACAAAA"), ("ACABCAAAA", "ACACCAAAA"),
              ("CAACABAAA", "CAACACAAA"))
ACDC_LIMIT = 5_000  # edges ACDC may test while the page waits (seconds); past it: eap, or the CLI and --circuit
MAX_PAIRS = 64
# circuits by (model, fields): pure functions of the weights, so shared by the sessions; bounded. Each entry holds
# its model, so that the id in its key cannot be reused by another model while the entry lives.
_FOUND: OrderedDict[tuple[Any, ...], tuple[Model, Circuit]] = OrderedDict()
_MADE: OrderedDict[tuple[Any, ...], tuple[Model, Circuit, Any]] = OrderedDict()  # pictures, keep-only rows
_LOCK = threading.Lock()


def _at(field: str, e: DfgptError) -> DfgptError:
    """The error, marked with the form field it belongs to (the app sends it as `field`)."""
    e.field = field  # type: ignore[attr-defined]
    return e


def _fail(field: str, message: str) -> DfgptError:
    return _at(field, QueryError(f"{field}: {message}"))


def _number(p: Mapping[str, Any], key: str, whole: bool) -> float | int | None:
    v = p.get(key)
    if v is None or v == "":
        return None
    want = "a whole number >= 0" if whole else "a finite number"
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise _fail(key, f"expected {want}, got {v!r}.")
    try:
        x = int(v) if whole else float(v)
    except ValueError:
        raise _fail(key, f"expected {want}, got {v!r}.") from None
    if (whole and x < 0) or not math.isfinite(x):
        raise _fail(key, f"expected {want}, got {v!r}.")
    return x


def _pairs(model: Model, p: Mapping[str, Any], name: str) -> list[tuple[list[int], list[int]]]:
    """The pairs as token ids: a list of [clean, corrupted] texts (JSON text in a GET); sort's task pairs by default."""
    v = p.get("pairs")
    example = 'e.g. [["CABACAAAA", "CACACAAAA"]]'
    if v is None or v == "" or v == []:
        if name.startswith("sort") and model.vocab:
            v = [list(x) for x in SORT_PAIRS]
        else:
            raise _fail("pairs", f"give at least one (clean, corrupted) pair of inputs of one length, {example}.")
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except (json.JSONDecodeError, RecursionError, ValueError):
            raise _fail("pairs", f"expected a list of [clean, corrupted] pairs, {example}.") from None
    if not isinstance(v, list) or not all(isinstance(x, list) and len(x) == 2 and all(isinstance(y, str) for y in x)
                                          for x in v):
        raise _fail("pairs", f"expected a list of [clean, corrupted] pairs of texts, {example}.")
    if len(v) > MAX_PAIRS:
        raise _fail("pairs", f"{len(v)} pairs are more than the page runs ({MAX_PAIRS}); use `dfgpt circuit --pairs`.")
    out: list[tuple[list[int], list[int]]] = []
    for i, (clean, bad) in enumerate(v):
        ids = []
        for text, what in ((clean, "clean"), (bad, "corrupted")):
            try:
                ids.append(encode(model, text.strip()))
            except DfgptError as e:
                raise _at("pairs", type(e)(f"pairs: pair {i + 1}'s {what} input {text!r}: {e}")) from None
        if len(ids[0]) != len(ids[1]) or len(ids[0]) != len(out[0][0] if out else ids[0]):
            raise _fail("pairs", f"pair {i + 1} has {len(ids[0])} and {len(ids[1])} tokens"
                        f"{f', pair 1 {len(out[0][0])}' if out else ''}: every input of the pairs must have one "
                        "length (an edge carries every position).")
        if len(ids[0]) > model.config.block_size:
            raise _fail("pairs", f"pair {i + 1} has {len(ids[0])} tokens; the model reads at most "
                        f"{model.config.block_size}.")
        out.append((ids[0], ids[1]))
    return out


def _metric(model: Model, p: Mapping[str, Any], clean: list[int]) -> str:
    spec = p.get("metric") or "kl"
    if not isinstance(spec, str):
        raise _fail("metric", f"expected a text such as kl or logit_diff:B,C, got {spec!r}.")
    try:
        parse_metric(spec, model.sheet(clean))
    except DfgptError as e:
        raise _at("metric", e) from None
    return spec.strip()


def matching(model: Model, circuit: Circuit) -> bool:
    """Whether a circuit's edges are this model's (a saved circuit names no model: its edges tell)."""
    return [e.name for e in Components(model.config).edges] == list(circuit.edges)


def load_circuits(paths: Sequence[str | Path], models: Mapping[str, Model]) -> dict[str, Circuit]:
    """Saved circuits by the name the page uses (the file's stem), each checked against the served models' edges."""
    out: dict[str, Circuit] = {}
    for path in paths:
        c = Circuit.load(path)
        if not any(matching(m, c) for m in models.values()):
            raise QueryError(f"--circuit {str(path)!r}: its {len(c.edges):,} edges are not those of any served model "
                             f"({', '.join(models)}); serve the model it was found on with --model.")
        name, n = Path(path).stem or "circuit", 2
        while name in out:
            name, n = f"{Path(path).stem}-{n}", n + 1
        out[name] = c
    return out


def _found(model: Model, name: str, p: Mapping[str, Any]) -> tuple[Circuit, dict[str, Any], list[Any]]:
    """The circuit the fields ask for (remembered), the fields as understood, and the pairs' ids."""
    method = p.get("method") or "acdc"
    if method not in METHODS:
        raise _fail("method", f"expected one of {', '.join(METHODS)}, got {method!r}.")
    pairs = _pairs(model, p, name)
    metric = _metric(model, p, pairs[0][0])
    threshold, top, steps = _number(p, "threshold", False), _number(p, "top", True), _number(p, "steps", True)
    if method == "acdc":
        if top is not None:
            raise _fail("top", "acdc keeps the edges whose test moves the metric by at least the threshold; "
                        "clear top, or choose eap or eap-ig.")
        threshold = 0.1 if threshold is None else threshold
        n = len(Components(model.config))
        if n > ACDC_LIMIT:
            raise _fail("method", f"acdc tests each of this model's {n:,} edges, too many to wait for here (at most "
                        f"{ACDC_LIMIT:,}): choose eap or eap-ig, or run `dfgpt circuit --method acdc ... -o c.json` "
                        "and open it with `dfgpt serve --circuit c.json`.")
    elif threshold is None and top is None:
        top = 20
    elif threshold is not None and top is not None:
        raise _fail("threshold", f"{method} keeps the top-k edges or those with |score| >= threshold: "
                    "give one of them.")
    if method != "eap-ig":
        steps = None
    elif steps is None:
        steps = 5
    elif not 1 <= steps <= 50:
        raise _fail("steps", f"expected 1..50 points on the path from clean to corrupted, got {steps}.")
    fields = {"pairs": [[_text(model, a), _text(model, b)] for a, b in pairs], "metric": metric, "method": method,
              "threshold": threshold, "top": top, "steps": steps}
    key = (id(model), tuple((tuple(a), tuple(b)) for a, b in pairs), metric, method, threshold, top, steps)
    with _LOCK:
        hit = _FOUND.get(key)
    got = hit[1] if hit is not None and hit[0] is model else None
    if got is None:
        both = [(a, b) for a, b in pairs]
        if method == "acdc":
            got = acdc(model, both, metric, threshold=threshold)  # type: ignore[arg-type]
        elif method == "eap":
            got = eap(model, both, metric, top=top, threshold=threshold)  # type: ignore[arg-type]
        else:
            got = eap_ig(model, both, metric, steps=steps or 5, top=top, threshold=threshold)  # type: ignore[arg-type]
        with _LOCK:
            _FOUND[key] = (model, got)
            while len(_FOUND) > 8:
                _FOUND.popitem(last=False)
    return got, fields, pairs


def _text(model: Model, ids: list[int]) -> str:
    return model.decode(ids) if model.vocab else " ".join(map(str, ids))


def _kept_only(model: Model, c: Circuit, pairs: list[Any]) -> dict[str, Any]:
    """Each pair's metric at its clean run, its corrupted run and with only the circuit's edges from the clean run."""
    rows = []
    for clean, bad in pairs:
        sheet = CircuitSheet(model, clean)
        metric = parse_metric(c.metric, sheet)  # a KL reads the clean distribution here, before the patch
        at = metric.position or 0
        row = {"clean": _text(model, clean), "corrupted": _text(model, bad), "clean_metric": _finite(metric(sheet)),
               "corrupted_metric": _finite(metric(model.sheet(bad))),
               "clean_prediction": sheet.token_label(int(np.argmax(sheet.value(f"logit[{at}]"))))}
        sheet.keep_only(c.kept, source=bad)
        kept = metric(sheet)
        row["circuit_metric"] = _finite(kept)
        row["circuit_prediction"] = sheet.token_label(int(np.argmax(sheet.value(f"logit[{at}]"))))
        rows.append((row, kept))
    return {"rows": [r for r, _ in rows], "mean": _finite(float(np.mean([k for _, k in rows]))), "position": at}


def _remembered(model: Model, c: Circuit, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
    """A circuit's picture, curve or keep-only rows, made once (the entry holds the model and the circuit, so the
    ids in its key stay theirs while it lives)."""
    full = (id(model), id(c), *key)
    with _LOCK:
        hit = _MADE.get(full)
    if hit is not None and hit[0] is model and hit[1] is c:
        return hit[2]
    got = make()
    with _LOCK:
        _MADE[full] = (model, c, got)
        while len(_MADE) > 32:
            _MADE.popitem(last=False)
    return got


def _on(v: Any) -> bool:
    return v not in (None, False, "", "0", 0)


def _finite(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)


def circuit_json(model: Model, p: Mapping[str, Any], name: str = "sort",
                 loaded: Mapping[str, Circuit] | None = None) -> dict[str, Any]:
    """The circuit view's answer for the fields `p` (pairs, metric, method, threshold, top, steps, keep, circuit)."""
    pairs: list[Any] = []
    file = p.get("circuit")
    if file:
        loaded = loaded or {}
        if file not in loaded:
            raise _at("circuit", QueryError(f"circuit: no circuit {file!r} was loaded; "
                                            + (f"the loaded ones are {', '.join(loaded)}." if loaded else
                                               "start the explorer with `dfgpt serve --circuit FILE.json`.")))
        c = loaded[file]
        if not matching(model, c):
            raise _at("circuit", QueryError(f"circuit: {file!r} has {len(c.edges):,} edges, which are not this "
                                            f"model's {len(Components(model.config)):,}: open it with its model."))
        fields: dict[str, Any] = {"pairs": [], "metric": c.metric, "method": c.method,
                                  "threshold": c.params.get("threshold"), "top": c.params.get("top"),
                                  "steps": c.params.get("steps"), "circuit": file}
        if p.get("pairs") or _on(p.get("keep")):  # its pairs are not saved: the page gives them (sort's by default)
            pairs = _pairs(model, p, name)
            fields["pairs"] = [[_text(model, a), _text(model, b)] for a, b in pairs]
    else:
        c, fields, pairs = _found(model, name, p)
    idx = {e: i for i, e in enumerate(c.edges)}
    kept = sorted(c.kept, key=lambda e: -abs(c.scores[idx[e]]))
    out: dict[str, Any] = {
        "fields": fields, "keep": None, "picture": None, "picture_error": None, "curve": None,
        "circuit": {"method": c.method, "metric": c.metric, "pairs": c.pairs, "n_edges": len(c.edges),
                    "clean": _finite(c.clean), "corrupted": _finite(c.corrupted), "value": _finite(c.value),
                    "faithfulness": _finite(c.faithfulness), "params": c.params, "summary": repr(c),
                    "kept": [{"edge": e, "src": e.split(" -> ")[0], "dest": e.split(" -> ")[1],
                              "score": _finite(c.scores[idx[e]])} for e in kept],
                    "curve": [[k, _finite(v)] for k, v in c.curve]}}
    out.update(_remembered(model, c, ("pictures",), lambda: _pictures(c)))
    if _on(p.get("keep")):
        key = ("keep", tuple((tuple(a), tuple(b)) for a, b in pairs))
        out["keep"] = _remembered(model, c, key, lambda: _kept_only(model, c, pairs))
    return out


def _pictures(c: Circuit) -> dict[str, str | None]:
    """The circuit's picture as SVG (or why not: too many components), and its faithfulness curve."""
    out: dict[str, str | None] = {"picture": None, "picture_error": None, "curve": c.curve_svg() if c.curve else None}
    try:
        svg = c.picture().pipe(format="svg").decode("utf-8")
        out["picture"] = svg[svg.index("<svg"):]  # the same picture, without its XML prolog (it sits in a page)
    except OutputError as e:
        out["picture_error"] = str(e)
    return out
