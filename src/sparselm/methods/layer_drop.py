"""Progressive layer dropping baseline (PLD, Zhang & He 2020; raptr.md §2.3).

The global keep ratio θ(t) starts at 1 and decays towards θ̄; layer l (1-based) is kept with
probability 1 − (l/L)(1 − θ(t)), so deeper layers drop more and dropping gets *harder* over
time, the opposite of RaPTr. One path per step, drawn as in RaPTr (step-seeded).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sparselm.errors import ConfigError
from sparselm.method_declaration import depth_method
from sparselm.methods.block_path import BlockPathHook, bernoulli_path, step_rng
from sparselm.methods.raptr import SCALINGS
from sparselm.schedules import pld_keep_ratio, pld_layer_keep_probs

_SALT = 0x91D0


@dataclass(frozen=True)
class LayerDropConfig:
    theta_bar: float = 0.5  # DeepSpeed's default final keep ratio
    gamma: float = 0.001  # DeepSpeed's default decay rate per step
    # γ × the run's steps (γ = this / steps), so one setting serves every run length; null: gamma
    gamma_per_run: float | None = None
    scaling: str = "inverse_p"  # [decision] 1/keep on kept layers, as stochastic depth does
    freeze_skipped_optimizer: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.theta_bar <= 1.0:
            raise ConfigError(f"method.theta_bar={self.theta_bar} must be in (0, 1]")
        if self.gamma < 0:
            raise ConfigError(f"method.gamma={self.gamma} must be >= 0")
        if self.gamma_per_run is not None and self.gamma_per_run < 0:
            raise ConfigError(f"method.gamma_per_run={self.gamma_per_run} must be >= 0 or null")
        if self.scaling not in SCALINGS:
            raise ConfigError(f"method.scaling={self.scaling!r} is unknown; allowed: {SCALINGS}")
        if self.seed < 0:
            raise ConfigError(f"method.seed={self.seed} must be >= 0")


def for_run(cfg: LayerDropConfig, total_steps: int) -> LayerDropConfig:
    """``gamma_per_run`` made a per-step γ for a run of ``total_steps``."""
    if cfg.gamma_per_run is None:
        return cfg
    gamma = cfg.gamma_per_run / max(1, total_steps)
    return dataclasses.replace(cfg, gamma=gamma, gamma_per_run=None)


def keep_probs(step: int, cfg: LayerDropConfig, n_layer: int) -> list[float]:
    return pld_layer_keep_probs(pld_keep_ratio(step, cfg.theta_bar, cfg.gamma), n_layer)


def pld_plan(step: int, cfg: LayerDropConfig, n_layer: int) -> list[tuple[int, float]]:
    """(layer, scale) for the layers kept at ``step``: a pure function of (seed, step)."""
    probs = keep_probs(step, cfg, n_layer)
    path = bernoulli_path(step_rng(cfg.seed, step, _SALT), probs)
    if cfg.scaling == "none":
        return [(layer, 1.0) for layer in path]
    return [(layer, 1.0 / probs[layer]) for layer in path]


def expected_block_fraction(cfg: LayerDropConfig, n_layer: int, total_steps: int) -> float:
    """Mean expected executed-block fraction over the run: PLD's block-only FLOP ratio."""
    cfg = for_run(cfg, total_steps)
    fractions = (sum(keep_probs(t, cfg, n_layer)) / n_layer for t in range(total_steps))
    return sum(fractions) / max(1, total_steps)


class LayerDropHook(BlockPathHook):
    name = "layer_drop"

    def __init__(self, cfg: LayerDropConfig, n_layer: int, total_steps: int) -> None:
        super().__init__(n_layer, cfg.freeze_skipped_optimizer)
        self.cfg = for_run(cfg, total_steps)
        self.total_steps = total_steps

    def plan_at(self, step: int) -> list[tuple[int, float]]:
        return pld_plan(step, self.cfg, self.n_layer)

    def log_fields(self, step: int) -> dict[str, Any]:
        return {
            "pld_theta": pld_keep_ratio(step, self.cfg.theta_bar, self.cfg.gamma),
            "path_len": len(self.plan(step)),
        }


# θ̄ = 1 keeps every block at every step
METHOD = depth_method(
    LayerDropConfig,
    LayerDropHook,
    noop=("method.theta_bar=1.0",),
    short_run=("method.gamma=0.3",),
)
