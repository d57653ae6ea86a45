"""The GPU route: PyTorch FlexAttention with a block mask, so fully masked tiles are skipped.

``torch.nn.attention.flex_attention`` is imported on first use, never at module import, and
the compiled kernel is built once per process. ``mask_mod`` states each pattern as the
element-wise rule FlexAttention evaluates; it is also plain tensor code, so tests compare it
with ``pattern_mask`` on any device.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import torch

from sparselm.attention.patterns import check_pattern, check_stride

MaskMod = Callable[[Any, Any, torch.Tensor, torch.Tensor], torch.Tensor]


def mask_mod(pattern: str, stride: int) -> MaskMod:
    """FlexAttention's ``mask_mod(b, h, q_idx, kv_idx)`` for ``pattern`` (True = attend)."""
    check_pattern(pattern)
    w = check_stride(stride)

    def dense(b: Any, h: Any, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
        return q_idx >= kv_idx

    def local(b: Any, h: Any, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
        return (q_idx >= kv_idx) & (q_idx - kv_idx < w)

    def strided(b: Any, h: Any, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
        return (q_idx >= kv_idx) & ((q_idx - kv_idx) % w == 0)

    def sparse(b: Any, h: Any, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
        back = q_idx - kv_idx
        return (back >= 0) & ((back < w) | (back % w == 0))

    def fixed(b: Any, h: Any, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
        same_block = q_idx // w == kv_idx // w
        return (q_idx >= kv_idx) & (same_block | (kv_idx % w == w - 1))

    return {"dense": dense, "local": local, "strided": strided, "sparse": sparse, "fixed": fixed}[
        pattern
    ]


@lru_cache(maxsize=1)
def _compiled_flex() -> Callable[..., torch.Tensor]:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


@lru_cache(maxsize=32)
def _block_mask(pattern: str, seq_len: int, stride: int, device: torch.device) -> Any:
    from torch.nn.attention.flex_attention import create_block_mask

    return create_block_mask(
        mask_mod(pattern, stride), None, None, seq_len, seq_len, device=str(device)
    )


def flex_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: str, stride: int
) -> torch.Tensor:
    """Compiled FlexAttention over the pattern's block mask (built once per T and device)."""
    block_mask = _block_mask(pattern, q.shape[-2], check_stride(stride), q.device)
    return _compiled_flex()(q, k, v, block_mask=block_mask)
