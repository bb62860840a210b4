"""The engine's door: the layers above use only it, and its trial, fork and observers do what they say.

A trial puts back every attribute of the engine bit for bit (also after an exception), a fork
shares the parameter arrays until it writes one and never writes its parent, observers come
and go independently; and no module outside `dfgpt/core` touches an engine's `_`-prefixed
attribute or its `__dict__`.
"""

from __future__ import annotations

import ast
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import random_model

from dfgpt import Config
from dfgpt.core.cones import Pending
from dfgpt.core.door import Observer
from dfgpt.core.evaluate import Engine
from dfgpt.core.pool import BlockPool
from dfgpt.core.state import CellState
from dfgpt.core.tally import Tally

PKG = Path(__file__).resolve().parent.parent / "dfgpt"
ENGINE_NAMES = {"engine", "eng"}  # the house names of an engine


def engine_touches(source: str) -> list[str]:
    """`_`-prefixed attributes of an engine, `vars(engine)` and `engine.__dict__` in a module's code.

    An engine is `<anything>.engine`, a name in ENGINE_NAMES, or a name assigned from one of
    those (or from `.fork()` or `Engine(...)`) anywhere in the module.
    """
    tree = ast.parse(source)
    bound = set(ENGINE_NAMES)

    def is_engine(node: ast.AST) -> bool:
        if isinstance(node, ast.Name):
            return node.id in bound
        if isinstance(node, ast.Attribute):
            return node.attr == "engine"
        if isinstance(node, ast.Call):
            f = node.func
            return (isinstance(f, ast.Attribute) and f.attr == "fork") or (isinstance(f, ast.Name) and f.id == "Engine")
        return False

    changed = True
    while changed:  # names bound from engines, to a fixed point (x = sheet.engine; y = x)
        changed = False
        for node in ast.walk(tree):
            targets: list[ast.AST] = []
            if isinstance(node, ast.Assign) and is_engine(node.value):
                targets = list(node.targets)
            elif isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and node.value is not None and is_engine(node.value):
                targets = [node.target]
            elif isinstance(node, ast.withitem) and node.optional_vars is not None and is_engine(node.context_expr):
                targets = [node.optional_vars]
            for t in targets:
                if isinstance(t, ast.Name) and t.id not in bound:
                    bound.add(t.id)
                    changed = True
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_engine(node.value):
            if node.attr.startswith("_"):
                out.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("vars", "getattr"):
            if node.args and is_engine(node.args[0]):
                if node.func.id == "vars" or (len(node.args) > 1 and not (
                        isinstance(node.args[1], ast.Constant) and not str(node.args[1].value).startswith("_"))):
                    out.append((node.lineno, ast.unparse(node)))
    return [f"line {n}: {text}" for n, text in sorted(out)]


def test_the_checker_sees_private_engine_attributes_however_reached():
    code = """
e = sheet.engine
a = e._plan(need)
b = sheet.engine._row_size("logit")
c = vars(e)
f = e.fork()
d = f.__dict__
eng._tally
w = eng
w._ver
ok = e.plan(need), sheet._edit_log, e.values["logit"]._x_is_not_an_engine
"""
    assert engine_touches(code) == [
        "line 3: e._plan", "line 4: sheet.engine._row_size", "line 5: vars(e)", "line 7: f.__dict__",
        "line 8: eng._tally", "line 10: w._ver"]


def test_no_module_outside_core_touches_an_engine_private_part():
    found = {}
    for path in sorted(PKG.rglob("*.py")):
        if path.relative_to(PKG).parts[0] == "core":
            continue
        got = engine_touches(path.read_text(encoding="utf-8"))
        if got:
            found[str(path.relative_to(PKG))] = got
    assert not found, f"use the engine's door (dfgpt.core.door) instead: {found}"


# -- the door itself ------------------------------------------------------------------------------
def fingerprint(e: Engine) -> dict[str, Any]:
    """Every attribute of an engine as comparable data: arrays as (dtype, shape, bytes)."""

    def of(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            return ("array", v.dtype.str, v.shape, v.tobytes())
        if isinstance(v, Counter):
            return ("counter", sorted((k, c) for k, c in v.items() if c))
        if isinstance(v, dict):
            return ("dict", {k: of(x) for k, x in v.items()})
        if isinstance(v, (set, frozenset)):
            return ("set", sorted(v))
        if isinstance(v, (list, tuple)):
            return ("seq", [of(x) for x in v])
        if isinstance(v, Pending):
            return ("pending", v.revision, v.counts)
        if isinstance(v, Observer):
            return ("observer", of(v.rows))
        if isinstance(v, Tally):
            return ("tally", [of(c) for c in (v.counts, v.reused, v.cutoff, v.total_recomputed, v.total_reused,
                                             v.total_cutoff)])
        if hasattr(v, "__dict__") or hasattr(v, "__slots__"):
            return (type(v).__name__, id(v))
        return v

    out = {k: of(v) for k, v in vars(e).items() if k not in ("_sizes", "owned")}
    out["verified"] = of(e.verified)
    out["changed"] = of(e.changed)
    out["counts"] = of(e.counts), of(e.reused), of(e.cutoff), of(e.total_recomputed), of(e.total_reused)
    return out


def read_all(e: Engine) -> None:
    e.ensure({n: np.ones(e.T, bool) for n in ("logit", "prob")})


def engine(model, text: str, transient: bool) -> Engine:
    e = Engine(model.graph, model.params, np.array(model.encode(text)), transient=transient)
    read_all(e)
    e.write("h[0].attn.c_attn.w", (1, 2), 0.25)  # owned now: a write inside a trial lands in place
    e.pin("h[1].mid", (2, 3), 0.5)
    e.defer_stale({"h[0].attn.c_attn.w": np.eye(*e.shape("h[0].attn.c_attn.w"), dtype=bool)})
    e.observe(("logit",))
    read_all(e)
    e.write("wpe", (1, 1), -0.5)  # a pending cone and an unread edit
    return e


def edits(e: Engine) -> None:
    e.write("wte", (0, 3), 0.75)
    e.write("h[0].attn.c_attn.w", (1, 2), -1.0)
    e.write("tokens", (2,), 1)
    e.pin("h[0].attn.att", (1, 4, 2), 0.0)
    e.pin("h[1].mid", (2, 3), None)
    e.observe(("prob",))
    read_all(e)
    e.flush_stale()
    e.append(2)
    e.write("temperature", (), 0.5)
    read_all(e)
    e.pop()
    _ = e.counts, e.state("logit", (3, 0))


@pytest.mark.parametrize("transient", [False, True])
def test_a_trial_puts_back_every_attribute_bit_for_bit(sort_random, transient):
    e = engine(sort_random, "CABACA", transient)
    before = fingerprint(e)
    arrays = {n: e.values[n] for n in ("h[0].attn.c_attn.w", "logit", "tokens")}
    with e.trial():
        edits(e)
        assert fingerprint(e) != before
    assert fingerprint(e) == before
    assert all(e.values[n] is a for n, a in arrays.items())  # in place: views handed out stay valid
    twin = engine(sort_random, "CABACA", transient)
    for x in (e, twin):  # and it goes on as if nothing happened
        x.write("wpe", (3, 0), 0.125)
        read_all(x)
    assert fingerprint(e) == fingerprint(twin)


def test_a_trial_puts_everything_back_after_an_exception(sort_random):
    e = engine(sort_random, "CABACA", False)
    before = fingerprint(e)
    with pytest.raises(ZeroDivisionError), e.trial():
        edits(e)
        _ = 1 / 0
    assert fingerprint(e) == before


def test_a_parameter_written_in_a_trial_is_put_back_cell_by_cell(sort_random):
    s = sort_random.sheet("CABACA")
    e = s.engine
    shared = e.values["wte"]
    with e.trial():
        e.write("wte", (1, 1), 9.0)
    own = e.values["wte"]
    assert own is not shared and own.tobytes() == shared.tobytes()  # copied on write, the copy restored
    with e.trial():
        e.write("wte", (1, 1), 9.0)
    assert e.values["wte"] is own and own.tobytes() == shared.tobytes()  # in place now: no copy per trial
    assert shared[1, 1] != 9.0


def test_nested_trials_each_put_back_their_own(sort_random):
    e = engine(sort_random, "CABACA", False)
    before = fingerprint(e)
    with e.trial():
        e.write("wte", (0, 0), 1.0)
        read_all(e)
        middle = fingerprint(e)
        with e.trial():
            edits(e)
        assert fingerprint(e) == middle
    assert fingerprint(e) == before


def test_a_fork_shares_parameters_until_it_writes_and_never_writes_its_parent(sort_random):
    e = engine(sort_random, "CABACA", False)
    before = fingerprint(e)
    f = e.fork()
    params = sort_random.graph.parameters
    assert all(f.values[n] is e.values[n] for n in params)
    assert not any(f.values[n] is e.values[n] for n in sort_random.graph.computed)
    assert f.pending is not e.pending and f.pending[0] is not e.pending[0]
    edits(f)
    assert f.values["wte"] is not e.values["wte"]  # copied on its first write
    assert f.values["h[0].attn.c_attn.w"] is not e.values["h[0].attn.c_attn.w"]  # owned by e: f copies too
    assert all(f.values[n] is e.values[n] for n in params if n not in ("wte", "h[0].attn.c_attn.w"))
    assert fingerprint(e) == before
    twin = engine(sort_random, "CABACA", False)
    edits(twin)
    assert f.view("logit").tobytes() == twin.view("logit").tobytes()


def test_a_fork_of_a_transient_engine_restores_its_own_dropped_tensors(sort_random):
    e = Engine(sort_random.graph, sort_random.params, np.array(sort_random.encode("CABACA")), transient=True)
    read_all(e)  # a clean read drops what it did not ask for
    assert "h[0].attn.att" in e.dropped
    f = e.fork()
    got = f.view("h[0].attn.att").copy()
    assert "h[0].attn.att" not in e.values  # still dropped in the parent
    assert got.tobytes() == e.view("h[0].attn.att").tobytes()


def test_observers_are_added_and_removed_and_several_coexist(sort_random):
    e = Engine(sort_random.graph, sort_random.params, np.array(sort_random.encode("CABACA")))
    read_all(e)
    old = e.view("logit").copy()
    a = e.observe(("logit",))
    b = e.observe(("logit", "prob"), seed={"prob": {5: np.zeros(3)}})
    e.write("wpe", (4, 0), 0.5)
    e.ensure({"logit": np.arange(6) == 4})
    assert list(a.rows["logit"]) == list(b.rows["logit"]) == [4]
    assert a.rows["logit"][4].tobytes() == old[4].tobytes()
    assert list(b.rows["prob"]) == [5]  # seeded; prob not read yet
    e.unobserve(a)
    e.unobserve(a)  # removing one already removed is harmless
    e.write("wpe", (5, 0), 0.5)
    read_all(e)
    assert list(a.rows["logit"]) == [4]  # no longer recorded into
    assert sorted(b.rows["logit"]) == [4, 5] and sorted(b.rows["prob"]) == [4, 5]
    assert b.rows["logit"][5].tobytes() == old[5].tobytes()
    e.unobserve(b)
    e.write("wpe", (3, 0), 0.5)
    read_all(e)
    assert sorted(b.rows["logit"]) == [4, 5]


def test_plan_and_row_size_are_the_engine_s_own(sort_random):
    e = Engine(sort_random.graph, sort_random.params, np.array(sort_random.encode("CABACA")))
    plan = e.plan({"logit": np.arange(6) == 2})
    assert plan[-1][0] == "logit" and plan[-1][1].tolist() == [2]
    assert dict((n, r.tolist()) for n, r, _ in plan)["h[2].attn.k"] == [0, 1, 2]  # keys 0..2
    assert e.row_size("logit") == 3 and e.row_size("h[0].attn.att") == 3 * 6


@pytest.mark.parametrize("transient", [False, True])
def test_a_trial_that_grows_the_capacity_puts_back_the_old_arrays(transient):
    cfg = Config(n_layer=2, n_head=2, n_embd=8, block_size=40, vocab=("a", "b", "c"), name="grow")
    model = random_model(cfg, seed=4)[0]
    e = engine(model, "abcab" * 3, transient)  # 15 tokens: capacity 16
    before, logit = fingerprint(e), e.values["logit"]
    with e.trial():
        for t in (2, 0, 1):  # 18 tokens: capacity 32, every array replaced
            e.append(t)
        read_all(e)
        assert e.cap == 32 and e.values["logit"] is not logit
    assert e.cap == 16 and e.values["logit"] is logit and fingerprint(e) == before
    twin = engine(model, "abcab" * 3, transient)
    for x in (e, twin):
        x.append(2)
        read_all(x)
    assert fingerprint(e) == fingerprint(twin)


# -- the core's bookkeeping, named -----------------------------------------------------------------
def test_cell_states_compare_print_and_serialise_as_the_plain_words(sort_random):
    s = sort_random.sheet("CABACA")
    _ = s.value("logit[5][A]")
    _ = s.set("h[0].out[5][0]", 1.0)
    got = (s.state("h[0].out[5][0]"), s.state("logit[5][A]"), s.state("wte[A][0]"), s.state("h[0].out[4][0]"))
    assert got == ("pinned", "stale", "fresh", "fresh") and all(isinstance(x, CellState) for x in got)
    assert repr(got) == "('pinned', 'stale', 'fresh', 'fresh')" and f"{got[0]}" == str(got[0]) == "pinned"
    assert json.dumps(list(got)) == '["pinned", "stale", "fresh", "fresh"]'


def test_memos_past_their_bound_are_cleared_and_reads_stay_the_same(sort_random):
    want = sort_random.sheet("CABACA").values("logit").tobytes()
    memo = sort_random.graph.memo
    bounds = {name: getattr(memo, name).bound for name in ("plans", "schedules", "plan_tables", "cuts", "wholes")}
    memo.clear()  # a memo is bounded as entries go in: start from none
    try:
        for name in bounds:
            getattr(memo, name).bound = 1
        for text in ("CABACA", "ABC", "CABACA", "CCCCCC"):
            s = sort_random.sheet(text)
            s.value("logit[2][A]")
            got = s.values("logit")
        assert got.tobytes() != want and sort_random.sheet("CABACA").values("logit").tobytes() == want
        assert {name: len(getattr(memo, name)) for name in bounds} == dict.fromkeys(bounds, 1)
    finally:
        for name, bound in bounds.items():
            getattr(memo, name).bound = bound


def test_a_pooled_block_is_handed_out_again_only_when_no_view_of_it_is_held(sort_random):
    pool = BlockPool()
    record = sort_random.graph.record(16, np.dtype("float64"))
    a = pool.views(record)
    row = a["logit"][3]  # a slice of the block keeps it taken
    del a
    b = pool.views(record)
    assert len(pool.entries[record]) == 2 and not np.shares_memory(b["logit"], row)
    del b, row
    c = pool.views(record)
    assert len(pool.entries[record]) == 2 and not c["logit"].any()


def test_the_tally_adds_clean_reads_when_looked_at_and_resets_only_the_recent_counters(sort_random):
    e = Engine(sort_random.graph, sort_random.params, np.array(sort_random.encode("CABACA")))
    read_all(e)
    assert e.tally.pending  # a clean read's counts wait until someone looks
    assert e.counts["logit"] == 6 * 3 and e.total_recomputed["logit"] == 18 and not e.tally.pending
    e.reset_counts()
    e.write("wpe", (5, 0), 0.5)
    read_all(e)
    assert e.counts["logit"] == 3 and e.reused["logit"] == 15 and e.total_recomputed["logit"] == 21
    assert e.cutoff == e.total_cutoff == Counter({"emb": 5 * 48})  # every row ran (wpe is read whole), 5 the same
    e.reset_counts()
    assert e.counts == e.reused == e.cutoff == Counter() and e.total_cutoff == Counter({"emb": 240})
