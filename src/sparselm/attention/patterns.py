"""Fixed causal attention patterns of hybrid sparse attention (mst.md §2.4).

Query position ``q`` may attend to key position ``k <= q`` when, with stride/window ``w``:

- ``dense``:   always (plain causal attention);
- ``local``:   ``q - k < w`` (the last ``w`` positions, the query itself included);
- ``strided``: ``(q - k) % w == 0`` (every ``w``-th position back, the query included);
- ``sparse``:  ``local`` or ``strided`` (Child et al.'s strided factorisation, unioned);
- ``fixed``:   ``q // w == k // w`` (same block of ``w``) or ``k % w == w - 1`` (the last,
  "summary" position of every earlier block).

``pattern_mask`` builds the boolean (T, T) mask (True = may attend). ``keys_per_query`` and
``allowed_pairs`` count the same sets in closed form, so densities need no T×T tensor.
``effective_pattern`` names a pattern that, at a given length, is plain causal attention.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from sparselm.errors import ConfigError

PATTERNS: tuple[str, ...] = ("dense", "local", "strided", "sparse", "fixed")
DEFAULT_STRIDE = 128
DENSITY_BASES: tuple[str, ...] = ("full", "causal")


def check_pattern(pattern: str, key: str = "hsa.pattern") -> str:
    if pattern not in PATTERNS:
        raise ConfigError(f"{key}={pattern!r} is unknown; allowed: {', '.join(PATTERNS)}")
    return pattern


def check_stride(stride: int, key: str = "hsa.stride") -> int:
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ConfigError(f"{key}={stride!r} must be a positive integer")
    return stride


def _check_seq_len(seq_len: int) -> int:
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ConfigError(f"seq_len={seq_len!r} must be a positive integer")
    return seq_len


def pattern_mask(
    pattern: str,
    seq_len: int,
    stride: int = DEFAULT_STRIDE,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean (T, T) mask of ``pattern``: entry [q, k] is True when query q may attend key k."""
    check_pattern(pattern)
    w = check_stride(stride)
    t = _check_seq_len(seq_len)
    q = torch.arange(t, device=device).unsqueeze(1)
    k = torch.arange(t, device=device).unsqueeze(0)
    back = q - k  # how far back the key lies
    causal = back >= 0
    if pattern == "dense":
        return causal
    local = causal & (back < w)
    strided = causal & (back % w == 0)
    if pattern == "local":
        return local
    if pattern == "strided":
        return strided
    if pattern == "sparse":
        return local | strided
    return causal & ((q // w == k // w) | (k % w == w - 1))  # fixed


def keys_per_query(pattern: str, seq_len: int, stride: int = DEFAULT_STRIDE) -> list[int]:
    """How many keys each query position attends to (row sums of ``pattern_mask``)."""
    check_pattern(pattern)
    w = check_stride(stride)
    t = _check_seq_len(seq_len)
    if pattern == "dense":
        return [q + 1 for q in range(t)]
    if pattern == "local":
        return [min(q + 1, w) for q in range(t)]
    if pattern == "strided":
        return [q // w + 1 for q in range(t)]
    if pattern == "sparse":
        # strided keys q - m·w with m >= 1 lie outside the band; only k = q is in both sets
        return [min(q + 1, w) + q // w for q in range(t)]
    # fixed: the causal part of q's own block, plus one summary key per earlier block
    return [q % w + 1 + q // w for q in range(t)]


def allowed_pairs(pattern: str, seq_len: int, stride: int = DEFAULT_STRIDE) -> int:
    """Number of (query, key) pairs the pattern computes."""
    return sum(keys_per_query(pattern, seq_len, stride))


def density(
    pattern: str, seq_len: int, stride: int = DEFAULT_STRIDE, basis: str = "causal"
) -> float:
    """Allowed pairs over T² (``basis="full"``) or over the T(T+1)/2 causal pairs."""
    if basis not in DENSITY_BASES:
        raise ConfigError(f"basis={basis!r} is unknown; allowed: {', '.join(DENSITY_BASES)}")
    t = _check_seq_len(seq_len)
    total = t * t if basis == "full" else t * (t + 1) // 2
    return allowed_pairs(pattern, t, stride) / total


@lru_cache(maxsize=256)
def effective_pattern(pattern: str, seq_len: int, stride: int = DEFAULT_STRIDE) -> str:
    """``dense`` where the pattern keeps every causal pair at this length (e.g. local with
    T <= w), else ``pattern``: the same mask, so the cheaper causal kernel may compute it."""
    dense = allowed_pairs(pattern, seq_len, stride) == seq_len * (seq_len + 1) // 2
    return "dense" if dense else pattern
