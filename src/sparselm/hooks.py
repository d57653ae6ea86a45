"""The narrow interface through which a method changes training.

The loop in ``train.py`` calls these at fixed points and never asks what a hook is. A dense
run has no hooks, and every method here must reduce to it when switched off.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class TrainHook:
    """Base class: every method is a no-op until it overrides a point it cares about."""

    name = "hook"

    def on_train_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Called once before the first step (and before a checkpoint is restored)."""

    def forward_kwargs(self, step: int) -> dict[str, Any]:
        """Extra keyword arguments for ``model(x, ...)`` at this step (e.g. a block plan)."""
        return {}

    def eval_kwargs(self, step: int) -> dict[str, Any]:
        """Keyword arguments for the loop's validation forward after ``step`` (default: the
        whole model, dense attention)."""
        return {}

    def extra_losses(
        self, x: torch.Tensor, y: torch.Tensor, output: Any
    ) -> dict[str, torch.Tensor]:
        """Named loss terms added to the language-model loss (e.g. distillation)."""
        return {}

    def after_backward(self, step: int) -> None:
        """Gradients of all micro-batches are accumulated; the optimizer has not stepped."""

    def after_optimizer_step(self, step: int) -> None:
        """The optimizer has stepped; weights and moments may be edited here."""

    def flop_factors(self, step: int) -> dict[str, Any]:
        """What this step costs relative to dense: keys of ``flops.forward_flops_per_token``."""
        return {}

    def log_fields(self, step: int) -> dict[str, Any]:
        """Fields for the step log (the names of the logging schema)."""
        return {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors to checkpoint so that a resumed run continues exactly."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what ``state_dict`` returned."""
