"""Calls go down the tiers: followed from a public verb down to the kernels, no call climbs back up.

The import test (test_architecture.py) reads what a module *may* call; this one records what it
*does* call. A profiler hook sees every call into a dfgpt function and the nearest dfgpt frame
that made it; a callee in a higher tier than its caller is a call climbing back up (a callback
into the façade, say), which the tiers are meant to rule out.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import dfgpt

_spec = importlib.util.spec_from_file_location("arch", Path(__file__).with_name("test_architecture.py"))
arch = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(arch)  # type: ignore[union-attr]


def _tier(module: str) -> int | None:
    parts = module.split(".")
    return arch.LEVEL.get(parts[1]) if len(parts) > 1 and parts[0] == "dfgpt" else None


def upward_calls(fn: Callable[[], Any]) -> set[tuple[str, str, str, str]]:
    """(caller module, caller function, callee module, callee function) of every call that climbs."""
    seen: set[tuple[str, str, str, str]] = set()

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        callee = frame.f_globals.get("__name__", "")
        te = _tier(callee)
        if te is None:
            return
        back = frame.f_back
        while back is not None and not back.f_globals.get("__name__", "").startswith("dfgpt."):
            back = back.f_back  # through numpy, networkx, user lambdas: the nearest dfgpt caller
        if back is None:
            return
        caller = back.f_globals["__name__"]
        tc = _tier(caller)
        if tc is not None and te > tc:
            seen.add((caller, back.f_code.co_name, callee, frame.f_code.co_name))

    sys.setprofile(hook)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return seen


@pytest.fixture(scope="module")
def sort() -> dfgpt.Model:
    return dfgpt.load("sort")


def _set(model: dfgpt.Model) -> None:
    s = model.sheet("CABACA")
    s.set("lm_head.w[A][26]", -5.0)
    s.value("logit[5][A]")
    s.undo()


def _value(model: dfgpt.Model) -> None:
    model.sheet("CABACA").value("logit[5]")


def _sweep_sheets(model: dfgpt.Model) -> None:
    dfgpt.sweep(model.sheet("CABACA"), model.sheet("CBABBC"), "logit_diff:A,C", over="resid_pre")


def _sweep_dataset(model: dfgpt.Model) -> None:
    dfgpt.sweep_pairs(model, [("CABACA", "CBABBC"), ("CCCAAA", "CCCAAB")], "logit_diff:A,C", over="head_out",
                scheduler="inline", progress=False)


@pytest.mark.parametrize("verb", [_set, _value, _sweep_sheets, _sweep_dataset], ids=lambda f: f.__name__[1:])
def test_a_public_verb_calls_only_down_the_tiers(sort, verb):
    assert upward_calls(lambda: verb(sort)) == set()


def test_the_tracer_sees_a_call_that_climbs():
    """The hook is live: a core function calling back into the façade is reported."""
    frame_globals = {"__name__": "dfgpt.core.names", "dfgpt": dfgpt}
    got = upward_calls(lambda: exec("dfgpt.load('sort')", frame_globals))
    assert any(callee.startswith("dfgpt.model") for _, _, callee, _ in got), got
