"""A clean read runs cached kernels, some fused (LayerNorm, softmax, q/k/v): they must give the
bits each op gives when it runs alone, as a refresh after an edit runs it."""

import numpy as np
import pytest

import dfgpt
from dfgpt.core.evaluate import Engine

MODEL = dfgpt.load("sort-random")


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("text", ["C", "CABACA", "CABACABBCAC"])
def test_a_clean_reads_fused_kernels_equal_each_op_run_alone_bit_for_bit(exact, text):
    ids = np.array(MODEL.encode(text))
    clean = Engine(MODEL.graph, MODEL.params, ids, 1.0, exact)
    clean.ensure({n: np.ones(clean.T, bool) for n in MODEL.graph.computed})
    alone = Engine(MODEL.graph, MODEL.params, ids, 1.0, exact)
    rows = np.arange(alone.T)
    for name in MODEL.graph.computed:  # topological order, one op at a time
        MODEL.graph.ops[name].forward(alone, rows)
    for name in MODEL.graph.computed:
        a, b = clean.view(name), alone.view(name)
        assert a.tobytes() == b.tobytes(), name


def test_rows_read_one_at_a_time_equal_a_whole_read_bit_for_bit():
    """Generation's road (one new row per tensor) and a forward's (every row at once) in exact mode."""
    whole = MODEL.sheet("CABACABBCAC")
    grown = MODEL.sheet("C")
    for t in "ABACABBCAC":
        grown.value(f"logit[{grown.T - 1}]")
        grown.engine.append(MODEL.encode(t)[0])
    for name in MODEL.graph.computed:
        assert whole.values(name).tobytes() == grown.values(name).tobytes(), name
