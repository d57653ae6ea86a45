"""AdamW whose weight decay follows each method's reference (``param_groups``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 6e-4
    min_lr: float = 6e-5
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    # true: every matrix decays, embeddings (and the tied head) included (nanoGPT today,
    # HF-Trainer style); false: only block Linear weights decay (the MST reference, mst.md §3)
    decay_embeddings: bool = True
    warmup_steps: int = 0
    # global-norm clip; null (inf): no clipping (SquareHead's sparse fine-tuning, squarehead.md
    # §3.2); the norm is still measured for the log and the divergence guard
    grad_clip: float | None = 1.0
    # after warmup: cosine to min_lr (SPDF, MST) | linear to min_lr (SquareHead: to 0)
    lr_schedule: str = "cosine"

    @property
    def max_grad_norm(self) -> float:
        """What ``clip_grad_norm_`` takes: inf clips nothing (it scales by exactly 1)."""
        return math.inf if self.grad_clip is None else self.grad_clip


def param_groups(model: nn.Module, weight_decay: float, decay_embeddings: bool) -> list[dict]:
    """Two AdamW groups: decayed matrices, and the rest (LayerNorm gains, biases and, unless
    ``decay_embeddings``, every ``nn.Embedding`` weight, which covers a head tied to it)."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for _, p in model.named_parameters():  # a tied weight is listed once
        if not p.requires_grad:
            continue
        matrix = p.dim() >= 2 and (decay_embeddings or id(p) not in embeddings)
        (decay if matrix else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_adamw(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    groups = param_groups(model, cfg.weight_decay, cfg.decay_embeddings)
    fused = next(model.parameters()).is_cuda
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused)


def parameter_names(model: nn.Module) -> dict[int, str]:
    """id(parameter) -> its (first) name; tied weights appear once."""
    return {id(p): n for n, p in model.named_parameters()}
