"""Pure functions that allocate sparsity across matrices and draw masks with exact counts."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from sparselm.errors import ConfigError

DISTRIBUTIONS = ("uniform", "erk")
INITS = ("random", "magnitude")


def kept_count(numel: int, density: float) -> int:
    """How many entries survive: exactly floor(density * numel) (Cerebras' top-k rule)."""
    return int(math.floor(density * numel + 1e-9))


def random_mask(shape: tuple[int, int], density: float, generator: torch.Generator) -> torch.Tensor:
    """Keep the top-k of i.i.d. U(0,1) scores, so exactly ``kept_count`` entries are True."""
    numel = shape[0] * shape[1]
    scores = torch.rand(numel, generator=generator)
    return _topk_mask(scores, kept_count(numel, density)).view(shape)


def magnitude_mask(weight: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``kept_count`` entries of largest absolute value."""
    scores = weight.detach().abs().flatten().float().cpu()
    return _topk_mask(scores, kept_count(scores.numel(), density)).view(weight.shape)


def _topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k > 0:
        mask[torch.topk(scores, k, sorted=False).indices] = True
    return mask


def uniform_densities(shapes: Sequence[tuple[int, int]], sparsity: float) -> list[float]:
    """Every matrix at the same sparsity."""
    return [1.0 - sparsity] * len(shapes)


def erk_densities(
    shapes: Sequence[tuple[int, int]], sparsity: float, power: float = 1.0
) -> list[float]:
    """Erdos-Renyi(-Kernel) allocation: density ∝ ((n_in + n_out) / (n_in * n_out)) ** power.

    The overall kept fraction equals 1 - sparsity. Matrices whose density would exceed 1 are
    made dense and the scale is solved again over the rest (RigL's procedure).
    """
    numels = [n_out * n_in for n_out, n_in in shapes]
    raw = [((n_out + n_in) / (n_out * n_in)) ** power for n_out, n_in in shapes]
    budget = (1.0 - sparsity) * sum(numels)
    dense: set[int] = set()
    while True:
        free_budget = budget - sum(numels[i] for i in dense)
        weight = sum(raw[i] * numels[i] for i in range(len(shapes)) if i not in dense)
        eps = free_budget / weight if weight > 0 else 0.0
        over = {i for i in range(len(shapes)) if i not in dense and eps * raw[i] > 1.0}
        if not over:
            return [1.0 if i in dense else eps * raw[i] for i in range(len(shapes))]
        dense |= over


def allocate_densities(
    shapes: Sequence[tuple[int, int]], sparsity: float, distribution: str, power: float = 1.0
) -> list[float]:
    """Per-matrix densities for a named distribution."""
    if not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"sparsity.level={sparsity} is out of range; allowed: 0 <= level < 1")
    if distribution == "uniform":
        return uniform_densities(shapes, sparsity)
    if distribution == "erk":
        return erk_densities(shapes, sparsity, power)
    raise ConfigError(
        f"sparsity.distribution={distribution!r} is unknown; allowed: {DISTRIBUTIONS}"
    )
