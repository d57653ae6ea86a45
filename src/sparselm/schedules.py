"""Schedules as pure functions of the global step, shared by the loop, the FLOP ledger and plots."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def warmup_cosine_lr(
    step: int, max_lr: float, min_lr: float, warmup_steps: int, total_steps: int
) -> float:
    """Linear warmup from 0 to ``max_lr``, then cosine decay to ``min_lr`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def warmup_linear_lr(
    step: int, max_lr: float, min_lr: float, warmup_steps: int, total_steps: int
) -> float:
    """Linear warmup from 0 to ``max_lr``, then a straight line to ``min_lr`` at ``total_steps``
    (composer's ``LinearWithWarmupScheduler`` with ``alpha_f = min_lr / max_lr``; SquareHead's
    sparse fine-tuning uses ``min_lr = 0``). Step ``total_steps`` is the end of the run: the
    last update (step ``total_steps - 1``) runs at ``min_lr + (max_lr - min_lr)/decay_steps``,
    as in composer and HF ``get_linear_schedule_with_warmup``."""
    if warmup_steps > 0 and step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + (max_lr - min_lr) * (1.0 - progress)


LR_SCHEDULES = {"cosine": warmup_cosine_lr, "linear": warmup_linear_lr}


def lr_at(
    schedule: str, step: int, max_lr: float, min_lr: float, warmup_steps: int, total_steps: int
) -> float:
    """The LR of ``step`` under the named schedule (``optim.lr_schedule``)."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"optim.lr_schedule={schedule!r} is unknown; allowed: cosine, linear")
    return LR_SCHEDULES[schedule](step, max_lr, min_lr, warmup_steps, total_steps)


# ---------------------------------------------------------------- stage schedules (raptr.md §2.2)


@dataclass(frozen=True)
class Stage:
    """One training stage: expected executed blocks (or depth) over a fraction of the steps."""

    path_len: float
    fraction: float


def equal_stages(path_lens: Sequence[float]) -> list[Stage]:
    """Stages of equal duration, e.g. ``equal_stages([6, 8, 10, 12])`` (RaPTr 6-8-10-12)."""
    if not path_lens:
        raise ValueError("a stage schedule needs at least one stage")
    return [Stage(float(n), 1.0 / len(path_lens)) for n in path_lens]


def stage_starts(total_steps: int, stages: Sequence[Stage]) -> list[int]:
    """The first step of every stage; stage s covers ``[starts[s], starts[s + 1])``.

    Boundaries are rounded half-up on the cumulative fraction, so the trainer, the FLOP ledger
    and the plots all place a stage change on the same integer step.
    """
    starts, cum = [], 0.0
    for stage in stages:
        starts.append(min(total_steps, math.floor(total_steps * cum + 0.5)))
        cum += stage.fraction
    return starts


def stage_at(step: int, total_steps: int, stages: Sequence[Stage]) -> tuple[int, Stage]:
    """The stage (index, stage) that ``step`` (0-based) falls in; past the end: the last one."""
    starts = stage_starts(total_steps, stages)
    index = max(i for i, start in enumerate(starts) if start <= step or i == 0)
    return index, stages[index]


# ---------------------------------------------------------------- progressive layer dropping


def pld_keep_ratio(step: int, theta_bar: float = 0.5, gamma: float = 0.001) -> float:
    """PLD global keep ratio ``θ(t) = (1 − θ̄)·exp(−γ t) + θ̄`` (DeepSpeed
    ``progressive_layer_drop.py``): starts at 1 and decays towards ``θ̄``."""
    return (1.0 - theta_bar) * math.exp(-gamma * step) + theta_bar


def pld_layer_keep_probs(theta: float, n_layer: int) -> list[float]:
    """Per-layer keep probability ``1 − (l/L)(1 − θ)`` for l = 1..L: deeper layers drop more,
    and the top layer keeps with probability θ (the PLD paper's linear depth rule)."""
    return [1.0 - (layer / n_layer) * (1.0 - theta) for layer in range(1, n_layer + 1)]
