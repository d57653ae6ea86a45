"""Which route computes a pattern on which device, and the object the model calls.

Routes: ``mask`` (SDPA + boolean mask, any device), ``blocked`` (chunked / grid attention,
any device), ``flex`` (FlexAttention, CUDA only). ``auto`` picks per device and pattern, from
``benchmarks/hsa_attention.py`` (forward + backward; results and command in
``benchmarks/results/hsa_attention_cpu.md``):

- CPU: ``blocked`` once the sequence has at least ``BLOCKED_MIN_CHUNKS[pattern]`` chunks of
  w, else ``mask``. Time over dense causal SDPA at w=128, T=1024 / 2048 (1 thread, B=1,
  8 heads, d=64): blocked local 0.52 / 0.38, strided 0.11 / 0.09, sparse 0.87 / 0.62,
  fixed 0.30 / 0.20; the mask route costs 1.3-2.1× dense causal for every pattern, since it
  computes all T² scores. Blocked ``sparse`` scores the band and the strided keys by hand
  (no fused kernel), so it needs longer sequences to win: about even at T=512 (4 chunks),
  lost at 640, won from 768 (6 chunks). Blocked ``local`` lost at 3 chunks and won from 4;
  ``strided`` and ``fixed`` won at every length measured (from 2 chunks).
- CUDA: ``flex``, whose block mask skips fully masked tiles. Not measured here (no GPU);
  ``python benchmarks/hsa_attention.py --device cuda`` times all three routes.
- Any other device type: ``mask``.

Where a pattern keeps every causal pair at the given length (``local`` with T <= w, ...),
it runs as the ``dense`` pattern: SDPA with ``is_causal`` on the mask and blocked routes.
Attention dropout > 0 always uses ``mask``, the only route that applies it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sparselm.attention.flex import flex_attention  # imports FlexAttention on first call
from sparselm.attention.kernels import blocked_attention, mask_attention
from sparselm.attention.patterns import (
    DEFAULT_STRIDE,
    check_pattern,
    check_stride,
    effective_pattern,
    pattern_mask,
)
from sparselm.errors import ConfigError

ROUTES: tuple[str, ...] = ("auto", "mask", "blocked", "flex")
# fewest chunks ceil(T / w) at which the blocked route beat the mask route on CPU
BLOCKED_MIN_CHUNKS: dict[str, int] = {"local": 4, "strided": 1, "sparse": 6, "fixed": 1}


def _check_route(route: str) -> str:
    if route not in ROUTES:
        raise ConfigError(f"hsa.route={route!r} is unknown; allowed: {', '.join(ROUTES)}")
    return route


def pick_route(
    pattern: str,
    route: str,
    device: torch.device,
    seq_len: int,
    stride: int = DEFAULT_STRIDE,
    dropout_p: float = 0.0,
) -> str:
    """The concrete route for ``pattern`` at length ``seq_len`` on ``device``."""
    check_pattern(pattern)
    _check_route(route)
    if dropout_p > 0.0:
        return "mask"
    if route == "flex" and device.type != "cuda":
        raise ConfigError(f"hsa.route='flex' needs a CUDA device, got {device.type}")
    if route != "auto":
        return route
    if pattern == "dense":
        return "mask"
    if device.type == "cuda":
        return "flex"
    chunks = -(-seq_len // check_stride(stride))
    if device.type == "cpu" and chunks >= BLOCKED_MIN_CHUNKS[pattern]:
        return "blocked"
    return "mask"


@dataclass(frozen=True)
class AttentionPattern:
    """A fixed causal attention pattern that computes attention itself.

    Pass it where the model takes a mask: ``model(x, attn_mask=AttentionPattern("sparse"))``,
    or one per layer in a list. Called on (B, heads, T, head_dim) tensors it returns what SDPA
    with ``self.mask(T)`` returns, by the route ``pick_route`` chooses.
    """

    pattern: str = "sparse"
    stride: int = DEFAULT_STRIDE
    route: str = "auto"

    def __post_init__(self) -> None:
        check_pattern(self.pattern)
        check_stride(self.stride)
        _check_route(self.route)

    def mask(self, seq_len: int, device: torch.device | str | None = None) -> torch.Tensor:
        """The boolean (T, T) mask this pattern stands for (True = may attend)."""
        return pattern_mask(self.pattern, seq_len, self.stride, device)

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0
    ) -> torch.Tensor:
        t = q.shape[-2]
        pattern = effective_pattern(self.pattern, t, self.stride)
        route = pick_route(pattern, self.route, q.device, t, self.stride, dropout_p)
        if route == "mask":
            return mask_attention(q, k, v, pattern, self.stride, dropout_p)
        if route == "blocked":
            return blocked_attention(q, k, v, pattern, self.stride)
        return flex_attention(q, k, v, pattern, self.stride)
