"""The ops of a GPT: one module per op kind, each holding everything about that kind.

Every op gives the engine three things:

- `forward(ctx, rows)`: compute the given position rows of its output in place;
- `row_reads`: per input, whether an output row reads the same row (`"row"`), every
  earlier row too (`"prefix"`, attention over keys) or the whole tensor (`"whole"`,
  parameters);
- `cells_read(k, out_mask)` / `cells_written(in_masks)`: exact cell-level index maps as
  boolean masks, propagated backward (precedents) and forward (dependents) without a
  single per-cell object. The causal mask is structural: `att[h][t][s]` for `s > t` reads
  nothing and is read by nothing.

and the rest of the library the other faces `Op` declares (the batched forward and VJP of the
autodiff, formula text, SymPy, spreadsheet formulas, a label, residency on a transient sheet).
Each kind's class is registered under its `OpKind`; `op_class(kind)` gives it back.

In `exact` mode every row is computed with shapes that do not depend on which other rows
are computed together (stacked 1-row matmuls, reductions over the full capacity), so an
incremental recompute is bit-for-bit the from-scratch value. Fast mode batches rows
into one BLAS call and agrees to rounding.

>>> from dfgpt.core.ops import Add
>>> Add("h[0].out", ("h[0].mid", "h[0].mlp.out")).row_reads
('row', 'row')
"""

from .add import Add
from .base import FACES, Mask, Op, Reads
from .context import OpContext, RowContext, SheetView
from .edge_sum import EdgeSum
from .embed import Embed
from .fused import LayerNormRows, SoftmaxRows
from .gelu import GELU_C, Gelu, gelu
from .head_proj import HeadProj
from .kind import OpKind
from .linear import Linear, LinearHeads
from .ln_mean import LNMean
from .ln_out import LNOut
from .ln_var import LNVar
from .product import Product
from .registry import op_class, register, registered
from .rms import RMS
from .rms_out import RMSOut
from .rotary import Rotary
from .score import Score
from .silu import Silu
from .softmax import Softmax
from .softmax_max import SoftmaxMax
from .softmax_sum import SoftmaxSum
from .token_embed import TokenEmbed
from .weighted import Weighted

__all__ = [
    "FACES",
    "GELU_C",
    "RMS",
    "Add",
    "EdgeSum",
    "Embed",
    "Gelu",
    "HeadProj",
    "LNMean",
    "LNOut",
    "LNVar",
    "LayerNormRows",
    "Linear",
    "LinearHeads",
    "Mask",
    "Op",
    "OpContext",
    "OpKind",
    "Product",
    "RMSOut",
    "Reads",
    "Rotary",
    "RowContext",
    "Score",
    "SheetView",
    "Silu",
    "Softmax",
    "SoftmaxMax",
    "SoftmaxRows",
    "SoftmaxSum",
    "TokenEmbed",
    "Weighted",
    "gelu",
    "op_class",
    "register",
    "registered",
]
