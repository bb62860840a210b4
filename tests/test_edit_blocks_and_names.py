"""`edits.set_cells`: a block of a parameter's cells as one edit (a circuit's patch writes thousands);
and the name a bracket token must be given by."""

from __future__ import annotations

import numpy as np
import pytest

import dfgpt
from dfgpt.edits import edits
from dfgpt.errors import EditError


def test_a_block_write_equals_the_same_cells_written_by_name_and_undoes_exactly():
    a, b = (dfgpt.load("sort-random").sheet("CABACA") for _ in range(2))
    before = np.array(a.values("logit"))
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 6, 40), rng.integers(0, 48, 40)
    vals = rng.normal(size=40)
    edits.set_cells(a, {"wpe": ((rows, cols), vals)})
    named = {f"wpe[{r}][{c}]": v for r, c, v in zip(rows.tolist(), cols.tolist(), vals.tolist())}
    b.set_many(named)  # later duplicates win in both: numpy's fancy assignment and the dict
    assert np.array_equal(a.values("logit"), b.values("logit"))
    assert not np.array_equal(a.values("logit"), before)
    a.undo()
    assert np.array_equal(a.values("logit"), before)


@pytest.mark.parametrize("cells,words", [
    ({"h[0].attn.q": ((np.array([0]), np.array([0])), np.array([1.0]))}, "is not a parameter of this sheet"),
    ({"wpe": ((np.array([99]), np.array([0])), np.array([1.0]))}, "do not fit"),
    ({"wpe": ((np.array([0]), np.array([0])), np.array([np.nan]))}, "must be finite"),
    ({}, "at least one cell"),
])
def test_bad_blocks_are_refused_and_leave_the_sheet_as_it_was(cells, words):
    s = dfgpt.load("sort-random").sheet("CABACA")
    before = np.array(s.values("logit"))
    with pytest.raises(EditError, match=words):
        edits.set_cells(s, cells)
    assert np.array_equal(s.values("logit"), before) and s.state("wpe[0][0]") != "edited"


def test_a_bracket_token_in_a_name_is_pointed_to_its_id():
    s = dfgpt.load("sort").sheet("CABACA")
    with pytest.raises(dfgpt.errors.BadNameError, match=r"address it by its id, e\.g\. logit\[5\]\[93\]"):
        s.value("logit[5][]]")
    assert s.value("logit[5][0]") == s.value("logit[5][A]")  # the id form works
