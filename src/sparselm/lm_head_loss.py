"""LM head + next-token cross-entropy over chunks of tokens: the full logits never exist.

For GPT-2's vocabulary a batch of 32 x 1024 tokens has 1.6 G logits: 3.3 GB in bf16, twice
that once upcast to fp32 for the softmax, and again for its gradient. ``ChunkedHeadLoss``
computes, one chunk of tokens at a time, the logits, the loss and the gradients of the
hidden states and the head weight, during the forward pass; backward only scales the stored
gradients. Peak memory for the head drops from O(tokens x vocab) to O(chunk x vocab), at the
same FLOPs (the head's two backward matmuls move into the forward pass).

Numerics follow bf16 autocast: matmul inputs in the autocast dtype, logits rounded to it,
softmax in fp32; the weight gradient is summed over chunks in fp32. "fp32" means at least
fp32 (``accum_dtype``): an fp64 model keeps fp64 throughout.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

IGNORE_INDEX = -100


def accum_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the softmax and the sums: fp32 for bf16/fp16/fp32, fp64 for fp64."""
    return torch.promote_types(dtype, torch.float32)


def chunk_ce(logits: Tensor, labels: Tensor, want_grad: bool) -> tuple[Tensor, Tensor | None]:
    """Summed cross-entropy (at least fp32) of one chunk and d(sum)/d(logits) in the logits'
    dtype, zero on ignored rows: compiled, the downcast fuses into the kernel that computes it."""
    dtype = logits.dtype
    logits = logits.to(accum_dtype(dtype))
    valid = labels != IGNORE_INDEX
    target = torch.where(valid, labels, 0).unsqueeze(1)
    lse = torch.logsumexp(logits, dim=-1)
    picked = logits.gather(1, target).squeeze(1)
    loss_sum = torch.where(valid, lse - picked, 0.0).sum()
    if not want_grad:
        return loss_sum, None
    grad = torch.exp(logits - lse.unsqueeze(1))
    grad = grad.scatter_add(1, target, -torch.ones_like(picked).unsqueeze(1))
    return loss_sum, (grad * valid.unsqueeze(1)).to(dtype)


@lru_cache(maxsize=2)
def _chunk_kernel(compiled: bool) -> Any:
    # compiled, the softmax, one-hot and mask fuse into a couple of passes over the chunk
    return torch.compile(chunk_ce, dynamic=False) if compiled else chunk_ce


class _ChunkedLinearCE(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: Tensor,
        weight: Tensor,
        labels: Tensor,
        chunk: int,
        compute_dtype: torch.dtype,
        compiled: bool,
    ) -> Tensor:
        kernel = _chunk_kernel(compiled)
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        want_grad = want_h or want_w
        w = weight.to(compute_dtype)
        acc = accum_dtype(compute_dtype)
        loss_sum = hidden.new_zeros((), dtype=acc)
        grad_h = torch.empty_like(hidden) if want_h else None
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device)
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, hidden.shape[0], chunk):
                h = hidden[start : start + chunk].to(compute_dtype)
                part, grad = kernel(h @ w.t(), labels[start : start + chunk], want_grad)
                loss_sum = loss_sum + part
                if grad is None:
                    continue
                if grad_h is not None:
                    grad_h[start : start + chunk] = grad @ w
                if want_w:
                    grad_w += (grad.t() @ h).to(acc)
        n_valid = (labels != IGNORE_INDEX).sum()
        ctx.save_for_backward(
            grad_h if grad_h is not None else hidden.new_empty(0),
            grad_w.to(weight.dtype) if want_w else weight.new_empty(0),
            n_valid,
        )
        return loss_sum / n_valid  # 0/0 = nan when every label is ignored, as F.cross_entropy

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        grad_h, grad_w, n_valid = ctx.saved_tensors
        scale = grad_out / n_valid
        dh = (grad_h * scale).to(grad_h.dtype) if ctx.needs_input_grad[0] else None
        dw = (grad_w * scale).to(grad_w.dtype) if ctx.needs_input_grad[1] else None
        return dh, dw, None, None, None, None


@dataclass(frozen=True)
class ChunkedHeadLoss:
    """Mean next-token cross-entropy of ``hidden @ weight.T`` computed ``chunk`` tokens at a
    time; label -100 is ignored. ``compiled`` compiles the per-chunk softmax kernel."""

    chunk: int = 8192
    compiled: bool = False

    def __post_init__(self) -> None:
        if self.chunk < 1:
            raise ValueError(f"train.loss_chunk={self.chunk} must be >= 1 (0 turns chunking off)")

    def __call__(self, hidden: Tensor, weight: Tensor, labels: Tensor) -> Tensor:
        device = hidden.device.type
        if torch.is_autocast_enabled(device):
            compute_dtype = torch.get_autocast_dtype(device)
        else:
            compute_dtype = torch.promote_types(hidden.dtype, weight.dtype)
        flat = hidden.reshape(-1, hidden.shape[-1])
        return _ChunkedLinearCE.apply(
            flat, weight, labels.reshape(-1), self.chunk, compute_dtype, self.compiled
        )


@dataclass(frozen=True)
class LabelledRowsHeadLoss:
    """Mean next-token cross-entropy with the LM head applied only to positions that carry a
    label. Fine-tuning labels the completion alone (prompt and padding are -100): on E2E about
    two thirds of the head's matmuls and softmax rows would be computed and thrown away. The
    loss is the full-logits loss up to float rounding (fewer rows, the same sums)."""

    def __call__(self, hidden: Tensor, weight: Tensor, labels: Tensor) -> Tensor:
        flat = hidden.reshape(-1, hidden.shape[-1])
        targets = labels.reshape(-1)
        rows = (targets != IGNORE_INDEX).nonzero().squeeze(1)
        logits = torch.nn.functional.linear(flat.index_select(0, rows), weight)
        logits = logits.to(accum_dtype(logits.dtype))
        # no labelled row: 0/0 = nan, as F.cross_entropy over an all-ignored batch
        return torch.nn.functional.cross_entropy(logits, targets.index_select(0, rows))
