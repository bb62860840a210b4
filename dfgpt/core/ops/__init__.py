"""The ops of a GPT: each computes rows of one named tensor and knows exactly which cells it reads.

Every op gives three things the engine builds on:

- `forward(ctx, rows)`: compute the given position rows of its output in place;
- `row_reads`: per input, whether an output row reads the same row (`"row"`), every
  earlier row too (`"prefix"`, attention over keys) or the whole tensor (`"whole"`,
  parameters);
- `cells_read(k, out_mask)` / `cells_written(in_masks)`: exact cell-level index maps as
  boolean masks, propagated backward (precedents) and forward (dependents) without a
  single per-cell object. The causal mask is structural: `att[h][t][s]` for `s > t` reads
  nothing and is read by nothing.

In `exact` mode every row is computed with shapes that do not depend on which other rows
are computed together (stacked 1-row matmuls, reductions over the full capacity), so an
incremental recompute is bit-for-bit the from-scratch value. Fast mode batches rows
into one BLAS call and agrees to rounding.

>>> from dfgpt.core.ops import Add
>>> Add("h[0].out", ("h[0].mid", "h[0].mlp.out")).row_reads
('row', 'row')
"""

from .attention import Score, Softmax, SoftmaxMax, SoftmaxSum, Weighted
from .base import Mask, Op, Reads
from .elementwise import GELU_C, Add, Gelu, gelu
from .embedding import Embed
from .layernorm import LNMean, LNOut, LNVar
from .linear import Linear

__all__ = [
    "GELU_C", "Add", "Embed", "Gelu", "LNMean", "LNOut", "LNVar", "Linear", "Mask", "Op", "Reads",
    "Score", "Softmax", "SoftmaxMax", "SoftmaxSum", "Weighted", "gelu",
]
