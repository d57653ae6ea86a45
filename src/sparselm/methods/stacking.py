"""Gradual stacking baseline (raptr.md §2.3): train a shallow model, grow it by copying its top.

The model keeps its full depth throughout; during a stage of depth k only the first k blocks
run (the plan), and the others receive no gradient and no AdamW update. At a stage boundary
the newly activated blocks become copies of the current top blocks and their optimizer state
is cleared, so they start with fresh AdamW moments. The global LR schedule is not reset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparselm.errors import ConfigError
from sparselm.method_declaration import FULL_DEPTH, depth_method
from sparselm.methods.block_path import BlockPathHook
from sparselm.methods.raptr import StageScheduleConfig, scaled_stages
from sparselm.schedules import Stage, stage_at


@dataclass(frozen=True)
class StackingConfig(StageScheduleConfig):
    stages: tuple[float, ...] = (6, 9, 12)  # the review's stacking schedule for 12 layers


def depth_stages(cfg: StackingConfig, n_layer: int) -> list[Stage]:
    """Whole depths per stage, non-decreasing and ending at the full model."""
    stages = [
        Stage(float(max(1, round(s.path_len))), s.fraction) for s in scaled_stages(cfg, n_layer)
    ]
    depths = [s.path_len for s in stages]
    if depths != sorted(depths) or depths[-1] != n_layer:
        raise ConfigError(
            f"method.stages={list(cfg.stages)} gives depths {[int(d) for d in depths]}; they "
            f"must not decrease and must end at the model's {n_layer} layers"
        )
    return stages


def copy_sources(old_depth: int, new_depth: int) -> list[int]:
    """Which trained block each new block copies: the top ``new − old`` blocks, in order
    (6 -> 9 copies 3, 4, 5 into 6, 7, 8); growth beyond 2x repeats the top block stack."""
    if not 0 < old_depth <= new_depth:
        raise ValueError(f"cannot grow from {old_depth} to {new_depth} blocks")
    grow = new_depth - old_depth
    top = min(grow, old_depth)
    return [old_depth - top + (j % top) for j in range(grow)]


@torch.no_grad()
def grow_blocks(
    blocks: Sequence[nn.Module], optimizer: torch.optim.Optimizer, old_depth: int, new_depth: int
) -> None:
    """Copy weights into blocks ``old_depth..new_depth-1`` and drop their optimizer state."""
    for offset, src in enumerate(copy_sources(old_depth, new_depth)):
        dst = blocks[old_depth + offset]
        for p_dst, p_src in zip(dst.parameters(), blocks[src].parameters(), strict=True):
            p_dst.copy_(p_src)
            optimizer.state.pop(p_dst, None)  # fresh moments and step count


class StackingHook(BlockPathHook):
    name = "stacking"

    def __init__(self, cfg: StackingConfig, n_layer: int, total_steps: int) -> None:
        # blocks above the current depth are not part of the model yet: never update them
        super().__init__(n_layer, freeze_skipped_optimizer=True)
        self.total_steps = total_steps
        self.stages = depth_stages(cfg, n_layer)
        self._blocks: Sequence[nn.Module] = ()
        self._optimizer: torch.optim.Optimizer | None = None

    def depth(self, step: int) -> int:
        return int(stage_at(step, self.total_steps, self.stages)[1].path_len)

    def on_train_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        super().on_train_start(model, optimizer)
        self._blocks, self._optimizer = model.blocks, optimizer

    def plan_at(self, step: int) -> list[tuple[int, float]]:
        return [(layer, 1.0) for layer in range(self.depth(step))]

    def eval_kwargs(self, step: int) -> dict[str, Any]:
        # the blocks above the trained depth are not part of the model yet: validate only
        # the ones the step ran (the full model once the last stage is reached)
        return {"plan": self.plan_at(step)}

    def after_optimizer_step(self, step: int) -> None:
        # grow before the first step of the next stage; the checkpoint after this step then
        # already holds the grown model, so a resumed run needs no extra state
        old, new = self.depth(step), self.depth(step + 1)
        if new > old and self._optimizer is not None:
            grow_blocks(self._blocks, self._optimizer, old, new)

    def log_fields(self, step: int) -> dict[str, Any]:
        return {
            "stacking_stage": stage_at(step, self.total_steps, self.stages)[0],
            "path_len": self.depth(step),
        }


METHOD = depth_method(StackingConfig, StackingHook, noop=FULL_DEPTH)
