"""One op, one home: every op kind is registered, gives every face, and only core/ops dispatches on kinds."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import dfgpt
from dfgpt.core.autodiff import forward
from dfgpt.core.ops import FACES, Op, OpKind, op_class, registered
from dfgpt.errors import QueryError

PKG = Path(dfgpt.__file__).resolve().parent
KIND_STRINGS = {k.value for k in OpKind}


def test_every_op_kind_is_registered_once():
    assert set(registered()) == set(OpKind)
    assert len({cls for cls in registered().values()}) == len(OpKind)


@pytest.mark.parametrize("kind", list(OpKind), ids=str)
def test_every_registered_class_gives_every_face(kind):
    cls = op_class(kind)
    assert issubclass(cls, Op) and cls.kind is kind
    missing = [f for f in FACES if getattr(cls, f) is getattr(Op, f)]
    assert not missing, f"{cls.__name__} does not give {missing}"
    assert isinstance(cls.resident, bool) and isinstance(cls.paired, bool) and isinstance(cls.shift, bool)


def test_an_unknown_kind_is_refused_with_the_kinds():
    with pytest.raises(QueryError, match="no op kind 'rmsnorm'; the kinds are embed, ln_mean"):
        op_class("rmsnorm")


def test_the_ops_label_themselves_by_kind_and_the_residents_are_the_stream_and_statistics():
    m = dfgpt.load("sort-random")
    circuit = dfgpt.CircuitSheet(m, "CAB").graph  # the circuit graph adds the switched edge sum and head outputs
    seen = {op.kind: op for g in (m.graph, circuit) for op in g.ops.values()}
    families = {OpKind.RMS, OpKind.RMS_OUT, OpKind.ROTARY, OpKind.SILU, OpKind.PRODUCT, OpKind.TOKEN_EMBED}
    assert set(seen) == set(OpKind) - families  # the other families' ops: tests/test_families.py
    assert {k for k, op in seen.items() if op.resident} == {
        OpKind.ADD, OpKind.EMBED, OpKind.LN_MEAN, OpKind.LN_VAR, OpKind.SOFTMAX_MAX, OpKind.SOFTMAX_SUM,
        OpKind.EDGE_SUM}
    assert all(op.label() == k.value for k, op in seen.items())


def test_the_batched_forward_of_every_op_is_the_engines_row_forward():
    """Both forwards live in one module per op now: for `sort` at batch 1 they agree to rounding."""
    m = dfgpt.load("sort")
    s = m.sheet("CABACA")
    V = forward(m.graph, m.params, s.engine.tokens[None], until="prob")
    for name in m.graph.computed:
        np.testing.assert_allclose(V[name][0], s.values(name), rtol=1e-5, atol=1e-6, err_msg=name)


def _kind_compares(source: str) -> list[int]:
    """Lines comparing `.kind` with an op kind: its string (`op.kind == "score"`, `op.kind in (...)`)
    or an `OpKind` member."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        parts = [node.left, *node.comparators]
        if not any(isinstance(p, ast.Attribute) and p.attr == "kind" for p in parts):
            continue
        inside = [c for p in parts for c in ast.walk(p)]
        strings = {c.value for c in inside if isinstance(c, ast.Constant) and isinstance(c.value, str)}
        members = [c for c in inside if isinstance(c, ast.Attribute) and isinstance(c.value, ast.Name)
                   and c.value.id == "OpKind"]
        if strings & KIND_STRINGS or members:
            found.append(node.lineno)
    return found


def test_no_module_outside_core_ops_compares_an_ops_kind():
    ops_dir = PKG / "core" / "ops"
    found = [f"{p.relative_to(PKG.parent)}:{line}" for p in sorted(PKG.rglob("*.py")) if ops_dir not in p.parents
             for line in _kind_compares(p.read_text(encoding="utf-8"))]
    assert not found, f"kind dispatch outside core/ops: {found}"


def test_the_kind_check_finds_a_dispatch_and_passes_other_kinds():
    src = ('def f(op, spec, m):\n'
           '    a = op.kind == "score" or op.kind in ("gelu", "add")\n'
           '    b = op.kind is OpKind.LINEAR\n'
           '    return spec.kind == "computed" or m.kind in ("logit_diff", "logit")\n')
    assert sorted(_kind_compares(src)) == [2, 2, 3]
