"""Two ways to compute a pattern's attention on any device; FlexAttention is in ``flex.py``.

All take ``q, k, v`` of shape (B, heads, T, head_dim), scale scores by 1/sqrt(head_dim) as SDPA
does, and return the same shape.

``mask_attention``: SDPA with the boolean (T, T) mask. Simple and exact, but it pays for all
T² scores whatever the density.

``blocked_attention``: each pattern rewritten as dense attention over short pieces. The
sequence is cut into ``n = ceil(T/w)`` chunks of ``w`` (zero-padded at the end; padded
positions come after every real query, so causality keeps them out of real outputs):

- ``local``: chunk c's queries attend to chunks c-1 and c under a band mask: O(T·2w).
- ``strided``: position c·w + i is cell (c, i) of an n × w grid; its keys are (c', i) with
  c' <= c, so the transposed grid's w rows of length n get plain causal attention: O(T·n).
- ``fixed``: chunk c's queries attend to their own chunk (causal) plus the n summary keys
  (last position of each chunk, kept where the summary's chunk is earlier): O(T·(w + n)).
- ``sparse``: the local band and the strided keys are different sets per query, so each part
  is scored on its own and both share one softmax. A softmax over the two score blocks side
  by side is the log-sum-exp merge of the two partial attentions. The strided part keeps only
  strictly earlier chunks: its k = q key is already in the band, and k = q - w is not.
- ``dense``: SDPA with ``is_causal``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from sparselm.attention.patterns import check_pattern, check_stride, pattern_mask


@lru_cache(maxsize=32)
def _cached_mask(pattern: str, seq_len: int, stride: int, device: torch.device) -> torch.Tensor:
    return pattern_mask(pattern, seq_len, stride, device)


def mask_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: str,
    stride: int,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """SDPA over the full T×T scores with the pattern's boolean mask (dense: ``is_causal``)."""
    check_pattern(pattern)
    if pattern == "dense":
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    mask = _cached_mask(pattern, q.shape[-2], check_stride(stride), q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


def blocked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: str, stride: int
) -> torch.Tensor:
    """The pattern's attention as dense attention over chunks or grid rows (module docstring)."""
    check_pattern(pattern)
    w = check_stride(stride)
    if pattern == "dense":
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    t = q.shape[-2]
    qc, kc, vc = (_chunks(x, w) for x in (q, k, v))
    if pattern == "local":
        y = _local(qc, kc, vc)
    elif pattern == "strided":
        y = _strided(qc, kc, vc)
    elif pattern == "fixed":
        y = _fixed(qc, kc, vc)
    else:
        y = _sparse(qc, kc, vc)
    return y.flatten(2, 3)[:, :, :t]


def _chunks(x: torch.Tensor, w: int) -> torch.Tensor:
    """(B, H, T, D) -> (B, H, n, w, D), zero-padding T up to n·w at the end."""
    b, h, t, d = x.shape
    n = -(-t // w)
    if n * w != t:
        x = F.pad(x, (0, 0, 0, n * w - t))
    return x.view(b, h, n, w, d)


def _with_previous(x: torch.Tensor) -> torch.Tensor:
    """(B, H, n, w, D) -> (B, H, n, 2w, D): chunk c-1 (zeros for c = 0) then chunk c."""
    previous = F.pad(x, (0, 0, 0, 0, 1, 0))[:, :, :-1]
    return torch.cat((previous, x), dim=3)


def _over_chunks(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor):
    """SDPA per chunk: (B, H, n, w, D) queries, (B, H, n, m, D) keys, (n, w, m) mask."""
    b, h, n, w, d = q.shape
    y = F.scaled_dot_product_attention(
        q.reshape(b * h, n, w, d),
        k.reshape(b * h, n, -1, d),
        v.reshape(b * h, n, -1, d),
        attn_mask=mask,
    )
    return y.view(b, h, n, w, d)


@lru_cache(maxsize=32)
def _band_mask(n: int, w: int, device: torch.device) -> torch.Tensor:
    """(n, w, 2w): query i of chunk c sees key j of [chunk c-1, chunk c] when 0 <= back < w."""
    i = torch.arange(w, device=device).view(w, 1)
    j = torch.arange(2 * w, device=device).view(1, 2 * w)
    back = (i + w) - j  # distance from query i (at offset w + i) to key j
    band = (back >= 0) & (back < w)
    mask = band.expand(n, w, 2 * w).clone()
    mask[0, :, :w] = False  # chunk 0 has no previous chunk
    return mask


def _local(qc: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor) -> torch.Tensor:
    n, w = qc.shape[2], qc.shape[3]
    mask = _band_mask(n, w, qc.device)
    return _over_chunks(qc, _with_previous(kc), _with_previous(vc), mask)


def _strided(qc: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor) -> torch.Tensor:
    b, h, n, w, d = qc.shape

    def rows(x: torch.Tensor) -> torch.Tensor:  # (B, H, n, w, D) -> (B, H·w, n, D)
        return x.transpose(2, 3).reshape(b, h * w, n, d)

    y = F.scaled_dot_product_attention(rows(qc), rows(kc), rows(vc), is_causal=True)
    return y.view(b, h, w, n, d).transpose(2, 3)


@lru_cache(maxsize=32)
def _fixed_mask(n: int, w: int, device: torch.device) -> torch.Tensor:
    """(n, w, w + n): causal inside the own chunk, then summary e visible from chunks c > e."""
    own = torch.ones(w, w, dtype=torch.bool, device=device).tril().expand(n, w, w)
    c = torch.arange(n, device=device).view(n, 1, 1)
    e = torch.arange(n, device=device).view(1, 1, n)
    return torch.cat((own, (e < c).expand(n, w, n)), dim=2)


def _fixed(qc: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor) -> torch.Tensor:
    b, h, n, w, d = qc.shape

    def with_summaries(x: torch.Tensor) -> torch.Tensor:  # (B, H, n, w + n, D)
        summaries = x[:, :, :, w - 1].unsqueeze(2).expand(b, h, n, n, d)
        return torch.cat((x, summaries), dim=3)

    mask = _fixed_mask(n, w, qc.device)
    return _over_chunks(qc, with_summaries(kc), with_summaries(vc), mask)


@lru_cache(maxsize=32)
def _sparse_bias(n: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(n, w, 2w + n) additive mask: the band of ``_band_mask``, then the strided keys of
    strictly earlier chunks (chunk e's key at the query's offset, for e < c)."""
    c = torch.arange(n, device=device).view(n, 1, 1)
    e = torch.arange(n, device=device).view(1, 1, n)
    allowed = torch.cat((_band_mask(n, w, device), (e < c).expand(n, w, n)), dim=2)
    zero = torch.zeros((), device=device, dtype=dtype)
    return torch.where(allowed, zero, torch.full((), float("-inf"), device=device, dtype=dtype))


def _sparse(qc: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor) -> torch.Tensor:
    n, w, d = qc.shape[2], qc.shape[3], qc.shape[4]
    qc = qc * (1.0 / math.sqrt(d))  # scaling q is cheaper than scaling the scores
    k_band, v_band = _with_previous(kc), _with_previous(vc)
    # band scores (B, H, n, w, 2w) beside strided scores (B, H, n, w, n): query (c, i) · key (e, i)
    s_band = qc @ k_band.transpose(-1, -2)
    s_stride = (qc.transpose(2, 3) @ kc.permute(0, 1, 3, 4, 2)).transpose(2, 3)
    scores = torch.cat((s_band, s_stride), dim=-1) + _sparse_bias(n, w, qc.device, qc.dtype)
    # every row keeps its k = q key in the band, so the joint softmax is never empty;
    # half-precision scores are normalised in float32
    acc = torch.promote_types(qc.dtype, torch.float32)
    p = torch.softmax(scores, dim=-1, dtype=acc).to(qc.dtype)
    y_band = p[..., : 2 * w] @ v_band
    y_stride = (p[..., 2 * w :].transpose(2, 3) @ vc.transpose(2, 3)).transpose(2, 3)
    return y_band + y_stride
