"""SPDF static sparsity (``method=static``): a fixed mask on the block linears, enforced every
step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sparselm.errors import ConfigError
from sparselm.hooks import TrainHook
from sparselm.method_declaration import MethodDeclaration, RunShape
from sparselm.model import GPT, LINEAR_KINDS, BlockLinear
from sparselm.sparsity.mask_set import MaskSet
from sparselm.sparsity.masks import (
    DISTRIBUTIONS,
    INITS,
    allocate_densities,
    magnitude_mask,
    random_mask,
)


@dataclass(frozen=True)
class StaticSparsityConfig:
    level: float
    distribution: str = "uniform"
    init: str = "random"
    erk_power: float = 1.0
    targets: tuple[str, ...] = LINEAR_KINDS
    mask_grads: bool = True
    mask_optimizer_state: bool = True
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.level < 1.0:
            raise ConfigError(f"method.level={self.level} is out of range; allowed: 0 <= level < 1")
        if self.distribution not in DISTRIBUTIONS:
            raise ConfigError(
                f"method.distribution={self.distribution!r} is unknown; allowed: {DISTRIBUTIONS}"
            )
        if self.init not in INITS:
            raise ConfigError(f"method.init={self.init!r} is unknown; allowed: {INITS}")
        bad = [t for t in self.targets if t not in LINEAR_KINDS]
        if bad:
            raise ConfigError(f"method.targets has {bad}; allowed kinds: {LINEAR_KINDS}")


def select_targets(linears: list[BlockLinear], kinds: tuple[str, ...]) -> list[BlockLinear]:
    return [t for t in linears if t.kind in kinds]


def draw_masks(targets: list[BlockLinear], cfg: StaticSparsityConfig) -> list[torch.Tensor]:
    """One mask per target with exactly floor(density * numel) kept entries."""
    densities = allocate_densities(
        [t.shape for t in targets], cfg.level, cfg.distribution, cfg.erk_power
    )
    generator = torch.Generator().manual_seed(cfg.seed)  # never touches the global RNG
    if cfg.init == "random":
        return [random_mask(t.shape, d, generator) for t, d in zip(targets, densities, strict=True)]
    return [magnitude_mask(t.view(), d) for t, d in zip(targets, densities, strict=True)]


class StaticSparsity(TrainHook):
    """Masks gradients before the step, then weights and AdamW moments after it."""

    name = "static_sparsity"

    def __init__(
        self,
        targets: list[BlockLinear],
        masks: MaskSet,
        mask_grads: bool = True,
        mask_optimizer_state: bool = True,
    ) -> None:
        self.targets = targets
        self.masks = masks
        self.mask_grads = mask_grads
        self.mask_optimizer_state = mask_optimizer_state
        self.optimizer: torch.optim.Optimizer | None = None
        self._density_by_kind = _density_by_kind(targets, masks)
        # the MaskSet whose zeros the weights and AdamW moments are known to hold (see
        # after_optimizer_step); None until a full re-masking has run
        self._settled: MaskSet | None = None

    @classmethod
    def from_config(cls, linears: list[BlockLinear], cfg: StaticSparsityConfig) -> StaticSparsity:
        targets = select_targets(linears, cfg.targets)
        masks = MaskSet.from_targets(targets, draw_masks(targets, cfg))
        return cls(targets, masks, cfg.mask_grads, cfg.mask_optimizer_state)

    def on_train_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.masks.apply_to_weights()
        self._settled = None

    def after_backward(self, step: int) -> None:
        if self.mask_grads:
            self.masks.apply_to_grads()

    def after_optimizer_step(self, step: int) -> None:
        # Once weights and AdamW moments are zero at the masked entries, masked gradients keep
        # them exactly zero (zero moments give a zero update; weight decay scales a zero), so
        # the three re-masking passes are skipped until the masks change.
        if self.mask_grads and self._settled is self.masks:
            return
        self.masks.apply_to_weights()
        if self.mask_optimizer_state and self.optimizer is not None:
            self.masks.apply_to_optimizer_state(self.optimizer)
            self._settled = self.masks

    def flop_factors(self, step: int) -> dict[str, Any]:
        return {"density": dict(self._density_by_kind)}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.masks.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.masks.load_state_dict(state)
        self._density_by_kind = _density_by_kind(self.targets, self.masks)
        self.masks.apply_to_weights()
        self._settled = None


def _density_by_kind(targets: list[BlockLinear], masks: MaskSet) -> dict[str, float]:
    kept: dict[str, int] = {}
    total: dict[str, int] = {}
    for t in targets:
        m = masks.masks[t.name][t.rows]
        kept[t.kind] = kept.get(t.kind, 0) + int(m.sum())
        total[t.kind] = total.get(t.kind, 0) + m.numel()
    return {k: kept[k] / total[k] for k in kept}


def _build(cfg: StaticSparsityConfig, model: GPT, run: RunShape) -> list[TrainHook]:
    return [StaticSparsity.from_config(model.block_linears(), cfg)]


# method=static: SPDF's masks on the block linears; level 0 keeps every weight (exact x1 masking)
METHOD = MethodDeclaration(
    StaticSparsityConfig, _build, owns_masks=True, noop=("method.level=0.0",)
)
