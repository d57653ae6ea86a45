"""AdamW with weight decay on matrices only (>= 2-D tensors), as in GPT-2 recipes."""

from __future__ import annotations

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
    warmup_steps: int = 0
    grad_clip: float = 1.0


def build_adamw(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for _, p in named if p.dim() >= 2]
    no_decay = [p for _, p in named if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    fused = next(model.parameters()).is_cuda
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused)


def parameter_names(model: nn.Module) -> dict[int, str]:
    """id(parameter) -> its (first) name; tied weights appear once."""
    return {id(p): n for n, p in model.named_parameters()}
