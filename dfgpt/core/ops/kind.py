"""`OpKind`: the name of each kind of op, the key its class is registered under.

>>> OpKind.LN_MEAN == "ln_mean", str(OpKind.SOFTMAX_SUM)
(True, 'softmax_sum')
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["OpKind"]


class OpKind(StrEnum):
    """Every op kind a graph is built from; a `StrEnum`, so each is also its plain string."""

    EMBED = "embed"
    LN_MEAN = "ln_mean"
    LN_VAR = "ln_var"
    LN_OUT = "ln_out"
    LINEAR = "linear"
    SCORE = "score"
    SOFTMAX_MAX = "softmax_max"
    SOFTMAX_SUM = "softmax_sum"
    SOFTMAX = "softmax"
    WEIGHTED = "weighted"
    ADD = "add"
    GELU = "gelu"
    RMS = "rms"
    RMS_OUT = "rms_out"
    ROTARY = "rotary"
    SILU = "silu"
    PRODUCT = "product"
    TOKEN_EMBED = "token_embed"
    EDGE_SUM = "edge_sum"
    HEAD_PROJ = "head_proj"
