"""Measured sparsity of a model's weights (counts zeros; knows no method)."""

from __future__ import annotations

import torch
from torch import nn

KIND_GROUPS = {
    "q": "qkv",
    "k": "qkv",
    "v": "qkv",
    "attn_out": "attn_out",
    "mlp_in": "mlp_in",
    "mlp_out": "mlp_out",
}


@torch.no_grad()
def measured_sparsity(model: nn.Module) -> tuple[float, dict[str, float]]:
    """Fraction of exact zeros over the block linears, overall and by kind (plus the LM head)."""
    zeros: dict[str, int] = {}
    total: dict[str, int] = {}
    for t in model.block_linears():
        group = KIND_GROUPS[t.kind]
        w = t.view()
        zeros[group] = zeros.get(group, 0) + int((w == 0).sum())
        total[group] = total.get(group, 0) + w.numel()
    by_kind = {k: zeros[k] / total[k] for k in total}
    overall = sum(zeros.values()) / max(1, sum(total.values()))
    head = getattr(model, "lm_head", None)
    if head is not None:
        by_kind["lm_head"] = float((head.weight == 0).float().mean())
    return overall, by_kind
