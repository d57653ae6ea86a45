"""From a ``prune`` config to masks on a model: one-shot magnitude, SparseGPT, or gradual.

One-shot pruners edit the weights now and return a ``StaticSparsity`` hook that keeps the mask
fixed during fine-tuning. ``gradual`` returns a ``GradualMagnitudePruning`` hook that prunes
along the cubic schedule while training. Either way the shared mask machinery enforces them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from sparselm.errors import ConfigError
from sparselm.model import LINEAR_KINDS, BlockLinear
from sparselm.sparsity.mask_set import MaskSet
from sparselm.sparsity.pruning import (
    GradualMagnitudePruning,
    check_sparsity,
    one_shot_magnitude,
    parse_nm,
)
from sparselm.sparsity.sparsegpt import SparseGPTConfig, sparsegpt_prune
from sparselm.sparsity.static import StaticSparsity

PRUNE_METHODS = ("magnitude", "sparsegpt", "gradual")


@dataclass(frozen=True)
class PruneConfig:
    method: str = "sparsegpt"
    sparsity: float = 0.5  # unstructured, per target (ignored when nm is set)
    nm: str | None = None  # "2:4", "16:32": keep N of every M inputs
    targets: tuple[str, ...] = LINEAR_KINDS
    # SparseGPT
    calibration_samples: int = 128
    blocksize: int = 128
    damp: float = 0.01
    # gradual magnitude pruning (fractions of the fine-tuning steps)
    initial_sparsity: float = 0.0
    start_frac: float = 0.0
    end_frac: float = 0.75
    every: int = 10
    # the SquareHead reference masks weights after each step, not gradients or AdamW moments
    mask_grads: bool = False
    mask_optimizer_state: bool = False

    def __post_init__(self) -> None:
        if self.method not in PRUNE_METHODS:
            raise ConfigError(
                f"prune.method={self.method!r} is unknown; allowed: {', '.join(PRUNE_METHODS)}"
            )
        check_sparsity(self.sparsity)
        if self.nm is not None:
            parse_nm(self.nm)
            if self.method == "gradual":
                raise ConfigError("prune.nm is one-shot only; use prune=magnitude or sparsegpt")
        bad = [t for t in self.targets if t not in LINEAR_KINDS]
        if bad:
            raise ConfigError(f"prune.targets has {bad}; allowed kinds: {LINEAR_KINDS}")
        if self.calibration_samples < 1:
            raise ConfigError(f"prune.calibration_samples={self.calibration_samples} must be >= 1")
        if not 0.0 <= self.start_frac <= self.end_frac <= 1.0:
            raise ConfigError(
                f"prune.start_frac={self.start_frac}, prune.end_frac={self.end_frac}: "
                "need 0 <= start_frac <= end_frac <= 1"
            )

    @property
    def one_shot(self) -> bool:
        return self.method != "gradual"

    @property
    def label(self) -> str:
        """How the target sparsity reads in tables: '2:4' or '0.7'."""
        return self.nm if self.nm is not None else str(self.sparsity)


def select(linears: Sequence[BlockLinear], cfg: PruneConfig) -> list[BlockLinear]:
    return [t for t in linears if t.kind in cfg.targets]


@torch.no_grad()
def prune_one_shot(
    model: nn.Module,
    targets: Sequence[BlockLinear],
    cfg: PruneConfig,
    calibration: Sequence[torch.Tensor] = (),
) -> list[torch.Tensor]:
    """Prune ``targets`` in place (weights zeroed, SparseGPT also updates the kept ones)."""
    nm = parse_nm(cfg.nm) if cfg.nm is not None else None
    if cfg.method == "magnitude":
        masks = one_shot_magnitude(targets, cfg.sparsity, nm)
    elif cfg.method == "sparsegpt":
        if not calibration:
            raise ConfigError("prune.method=sparsegpt needs calibration batches (none were given)")
        sgpt = SparseGPTConfig(sparsity=cfg.sparsity, nm=nm, blocksize=cfg.blocksize, damp=cfg.damp)
        masks = sparsegpt_prune(model, targets, calibration, sgpt)
    else:
        raise ConfigError(f"prune.method={cfg.method!r} is not one-shot")
    MaskSet.from_targets(targets, masks).apply_to_weights()
    return masks


def fixed_mask_hook(
    targets: Sequence[BlockLinear], masks: Sequence[torch.Tensor], cfg: PruneConfig
) -> StaticSparsity:
    """Keep the pruned mask fixed through fine-tuning."""
    return StaticSparsity(
        list(targets),
        MaskSet.from_targets(targets, masks),
        mask_grads=cfg.mask_grads,
        mask_optimizer_state=cfg.mask_optimizer_state,
    )


def gradual_hook(
    targets: Sequence[BlockLinear], cfg: PruneConfig, total_steps: int
) -> GradualMagnitudePruning:
    """Cubic-schedule magnitude pruning from ``start_frac`` to ``end_frac`` of the steps."""
    return GradualMagnitudePruning(
        list(targets),
        final_sparsity=cfg.sparsity,
        start=round(cfg.start_frac * total_steps),
        end=round(cfg.end_frac * total_steps),
        every=cfg.every,
        initial_sparsity=cfg.initial_sparsity,
        mask_grads=cfg.mask_grads,
        mask_optimizer_state=cfg.mask_optimizer_state,
    )


def mask_check(hook: StaticSparsity, expected_nnz: dict[str, int] | None = None) -> dict:
    """Are the masks exact: masked weights all 0, and nnz as when the masks were made?"""
    masks = hook.masks
    zero_outside = all(
        bool((p.detach()[~masks.masks[n]] == 0).all()) for n, p in masks.params.items()
    )
    nnz = masks.nnz()
    kept = sum(nnz.values())
    total = sum(int(m.numel()) for m in masks.masks.values())
    weight_nnz = sum(
        int((p.detach() != 0).sum()) for p in masks.params.values()
    )  # may be below mask nnz: a kept weight can be exactly 0
    return {
        "mask_zero_outside": zero_outside,
        "mask_nnz_unchanged": expected_nnz is None or nnz == expected_nnz,
        "mask_sparsity": 1.0 - kept / total,
        "weight_sparsity": 1.0 - weight_nnz / total,
    }
