"""A whole tensor read by its own name (`values`) takes a shorter road than `value`: same bits."""

import numpy as np
import pytest

import dfgpt


@pytest.mark.parametrize("exact", [True, False])
def test_whole_tensor_read_of_a_fresh_sheet_equals_a_cell_by_cell_read_bit_for_bit(exact):
    model = dfgpt.load("sort-random")
    whole = model.sheet("CABACAB", exact=exact).values("logit")
    cells = model.sheet("CABACAB", exact=exact)
    one = np.array([[cells.value(f"logit[{t}][{a}]") for a in "ABC"] for t in range(7)])
    if exact:  # fast mode batches rows by what a read asks for: equal to rounding only
        assert whole.tobytes() == one.tobytes()
    else:
        np.testing.assert_allclose(whole, one, rtol=1e-12, atol=1e-12)
    same_road = model.sheet("CABACAB", exact=exact)
    assert whole.tobytes() == np.asarray(same_road.value("logit")).tobytes()


def test_whole_tensor_read_keeps_what_value_returns_for_inputs_parameters_and_scalars():
    s = dfgpt.load("sort-random").sheet("CAB")
    for name in ("tokens", "wte", "temperature", "h[0].attn.att", "logits"):
        a, b = s.values(name), np.asarray(s.value(name))
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_a_fresh_sheets_bookkeeping_after_a_whole_read_matches_a_cell_by_cell_read():
    model = dfgpt.load("sort-random")
    a, b = model.sheet("CABAC"), model.sheet("CABAC")
    a.values("logit")
    for t in range(5):
        b.value(f"logit[{t}]")
    ea, eb = a.engine, b.engine
    assert {k: v.tolist() for k, v in ea.verified.items()} == {k: v.tolist() for k, v in eb.verified.items()}
    assert {k: v.tolist() for k, v in ea.changed.items()} == {k: v.tolist() for k, v in eb.changed.items()}
    assert ea.full == eb.full and ea.counts == eb.counts
