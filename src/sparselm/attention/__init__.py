"""Fixed sparse attention patterns (hybrid sparse attention, mst.md §2.4) and their kernels.

``patterns``: masks and densities. ``kernels``: the boolean-mask and blocked routes.
``flex``: the FlexAttention route (CUDA). ``routes``: route choice and ``AttentionPattern``,
the object the model takes in place of a mask.
"""

from sparselm.attention.patterns import (
    DEFAULT_STRIDE,
    PATTERNS,
    allowed_pairs,
    density,
    effective_pattern,
    keys_per_query,
    pattern_mask,
)
from sparselm.attention.routes import BLOCKED_MIN_CHUNKS, ROUTES, AttentionPattern, pick_route

__all__ = [
    "BLOCKED_MIN_CHUNKS",
    "DEFAULT_STRIDE",
    "PATTERNS",
    "ROUTES",
    "AttentionPattern",
    "allowed_pairs",
    "density",
    "effective_pattern",
    "keys_per_query",
    "pattern_mask",
    "pick_route",
]
