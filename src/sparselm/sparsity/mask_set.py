"""Masks held per parameter, and the three places they are enforced.

A mask covers a whole parameter tensor; several block linears (Q, K and V) may share one
fused parameter, each owning a row slice of its mask.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from sparselm.model import BlockLinear


class MaskSet:
    """Boolean masks keyed by parameter name, applied to weights, gradients and AdamW moments."""

    def __init__(self, params: dict[str, nn.Parameter], masks: dict[str, torch.Tensor]) -> None:
        self.params = params
        self.masks = {n: m.to(device=params[n].device, dtype=torch.bool) for n, m in masks.items()}
        # multiplying by a float mask is cheaper than boolean indexing on every step
        self._factors = {n: m.to(params[n].dtype) for n, m in self.masks.items()}

    @classmethod
    def from_targets(
        cls, targets: Iterable[BlockLinear], target_masks: Iterable[torch.Tensor]
    ) -> MaskSet:
        """Assemble per-parameter masks from per-target (row-slice) masks."""
        params: dict[str, nn.Parameter] = {}
        masks: dict[str, torch.Tensor] = {}
        for t, m in zip(targets, target_masks, strict=True):
            if t.name not in masks:
                params[t.name] = t.weight
                masks[t.name] = torch.ones(t.weight.shape, dtype=torch.bool)
            masks[t.name][t.rows] = m.cpu()
        return cls(params, masks)

    # One multi-tensor kernel per call (torch._foreach_mul_) rather than one kernel per
    # parameter: on a GPU the ~4 x 72 small launches of GPT-2 Small per step are what cost.
    @torch.no_grad()
    def apply_to_weights(self) -> None:
        names = list(self.params)
        _multiply([self.params[n] for n in names], [self._factors[n] for n in names])

    @torch.no_grad()
    def apply_to_grads(self) -> None:
        names = [n for n, p in self.params.items() if p.grad is not None]
        _multiply([self.params[n].grad for n in names], [self._factors[n] for n in names])

    @torch.no_grad()
    def apply_to_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        """Zero every per-element state tensor (AdamW exp_avg, exp_avg_sq) at masked entries."""
        tensors, factors = [], []
        for n, p in self.params.items():
            for value in optimizer.state.get(p, {}).values():
                if torch.is_tensor(value) and value.shape == p.shape:
                    tensors.append(value)
                    factors.append(self._factors[n])
        _multiply(tensors, factors)

    def nnz(self) -> dict[str, int]:
        return {n: int(m.sum()) for n, m in self.masks.items()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"mask.{n}": m.to(torch.uint8).cpu() for n, m in self.masks.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for n in self.masks:
            m = state[f"mask.{n}"].to(device=self.params[n].device, dtype=torch.bool)
            self.masks[n] = m
            self._factors[n] = m.to(self.params[n].dtype)


def _multiply(tensors: list[torch.Tensor], factors: list[torch.Tensor]) -> None:
    """tensors[i] *= factors[i] in place, batched into multi-tensor kernels by device and dtype."""
    if tensors:
        torch._foreach_mul_(tensors, factors)
