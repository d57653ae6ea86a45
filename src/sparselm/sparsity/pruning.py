"""Magnitude pruning: one-shot (unstructured or N:M) and gradual with a cubic schedule.

Pure functions draw masks from weights; ``GradualMagnitudePruning`` is the thin hook that
raises sparsity during training. After pruning, a fixed-mask fine-tune is just
``StaticSparsity`` with the masks returned here (SquareHead's reference masks the weights only:
``mask_grads=False, mask_optimizer_state=False``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from sparselm.errors import ConfigError
from sparselm.model import BlockLinear
from sparselm.sparsity.mask_set import MaskSet
from sparselm.sparsity.masks import kept_count, magnitude_mask
from sparselm.sparsity.static import StaticSparsity
from sparselm.sparsity.static import _density_by_kind as density_by_kind

NM = tuple[int, int]


def parse_nm(text: str, key: str = "prune.nm") -> NM:
    """'2:4' -> (2, 4): keep N of every M consecutive weights along the input dimension."""
    try:
        n, m = (int(part) for part in str(text).split(":"))
    except ValueError:
        raise ConfigError(f"{key}={text!r} is not of the form 'N:M' (e.g. '2:4')") from None
    if not 0 < n <= m:
        raise ConfigError(f"{key}={text!r} needs 0 < N <= M")
    return n, m


def check_sparsity(sparsity: float, key: str = "prune.sparsity") -> float:
    if not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"{key}={sparsity} is out of range; allowed: 0 <= sparsity < 1")
    return float(sparsity)


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the n largest |w| in every group of m consecutive inputs of each output row."""
    rows, cols = weight.shape
    if cols % m:
        raise ConfigError(f"prune.nm={n}:{m}: input dimension {cols} is not a multiple of {m}")
    groups = weight.detach().abs().float().cpu().reshape(rows, cols // m, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(2, torch.topk(groups, n, dim=2).indices, True)
    return keep.reshape(rows, cols)


def one_shot_magnitude(
    targets: Sequence[BlockLinear], sparsity: float = 0.0, nm: NM | None = None
) -> list[torch.Tensor]:
    """One mask per target: exactly ``kept_count(numel, 1 - sparsity)`` kept, or N:M."""
    if nm is not None:
        return [nm_mask(t.view(), *nm) for t in targets]
    density = 1.0 - check_sparsity(sparsity)
    return [magnitude_mask(t.view(), density) for t in targets]


def masks_from_zeros(
    targets: Sequence[BlockLinear], min_zero_fraction: float = 0.1
) -> list[torch.Tensor]:
    """Masks inferred from a pruned checkpoint: weight != 0 where a target is >= 10 % zeros.

    SquareHead's reference attaches masks only to such matrices; the rest stay dense (all True).
    """
    out = []
    for t in targets:
        w = t.view().detach().cpu()
        zeros = float((w == 0).float().mean())
        out.append(w != 0 if zeros >= min_zero_fraction else torch.ones(w.shape, dtype=torch.bool))
    return out


def cubic_sparsity(step: int, start: int, end: int, s0: float, sf: float) -> float:
    """s0 + (sf - s0) * (1 - (1 - x)^3), x = (step - start) / (end - start) clipped to [0, 1].

    The cubic interpolation of sparseml's ``interpolate(inter_func="cubic")``: fast early
    pruning while the network has redundancy, slow near the final sparsity.
    """
    if end <= start:
        return sf if step >= start else s0
    x = min(1.0, max(0.0, (step - start) / (end - start)))
    return s0 + (sf - s0) * (1.0 - (1.0 - x) ** 3)


def shrink_magnitude_mask(
    weight: torch.Tensor, current: torch.Tensor, density: float
) -> torch.Tensor:
    """Keep the largest |w| among currently kept entries: a pruned weight never comes back."""
    scores = weight.detach().abs().float().cpu().flatten()
    alive = current.flatten().cpu()
    k = min(kept_count(scores.numel(), density), int(alive.sum()))
    scores[~alive] = -1.0  # below every |w| of a kept entry
    mask = torch.zeros_like(alive)
    if k > 0:
        mask[torch.topk(scores, k, sorted=False).indices] = True
    return mask.view(weight.shape)


class GradualMagnitudePruning(StaticSparsity):
    """Magnitude pruning every ``every`` steps along the cubic schedule, masks enforced between.

    ``on_train_start`` prunes to the schedule's value at step 0 (s0 when ``start`` >= 0). After
    the optimizer step that completes step t, masks shrink to ``cubic_sparsity(t, ...)`` when
    (t - start) is a multiple of ``every`` or t == end; weights (and, if asked, grads and AdamW
    moments) are masked as in ``StaticSparsity``.
    """

    name = "gradual_pruning"

    def __init__(
        self,
        targets: list[BlockLinear],
        final_sparsity: float,
        start: int,
        end: int,
        every: int,
        initial_sparsity: float = 0.0,
        mask_grads: bool = True,
        mask_optimizer_state: bool = True,
    ) -> None:
        check_sparsity(final_sparsity, "prune.final_sparsity")
        check_sparsity(initial_sparsity, "prune.initial_sparsity")
        if initial_sparsity > final_sparsity:
            raise ConfigError(
                f"prune.initial_sparsity={initial_sparsity} exceeds "
                f"prune.final_sparsity={final_sparsity}; masks only shrink"
            )
        if every < 1:
            raise ConfigError(f"prune.every={every} must be >= 1")
        if start < 0 or end < start:
            raise ConfigError(f"prune.end={end} must be >= prune.start={start} >= 0")
        ones = [torch.ones(t.shape, dtype=torch.bool) for t in targets]
        super().__init__(
            targets, MaskSet.from_targets(targets, ones), mask_grads, mask_optimizer_state
        )
        self.schedule = (start, end, initial_sparsity, final_sparsity)
        self.every = every
        self.level = 0.0

    def sparsity_at(self, step: int) -> float:
        return cubic_sparsity(step, *self.schedule)

    def is_pruning_step(self, step: int) -> bool:
        start, end = self.schedule[:2]
        return start <= step <= end and ((step - start) % self.every == 0 or step == end)

    @torch.no_grad()
    def prune_to(self, sparsity: float) -> None:
        """Shrink every target's mask to ``sparsity`` (exact counts) and mask the weights."""
        density = 1.0 - sparsity
        new = [
            shrink_magnitude_mask(t.view(), self.masks.masks[t.name][t.rows], density)
            for t in self.targets
        ]
        self.masks = MaskSet.from_targets(self.targets, new)
        self.level = sparsity
        self._refresh_density()
        self.masks.apply_to_weights()

    def on_train_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.prune_to(self.sparsity_at(0))

    def after_optimizer_step(self, step: int) -> None:
        done = step + 1  # steps completed once this optimizer step has run
        if self.is_pruning_step(done) and self.sparsity_at(done) > self.level:
            self.prune_to(self.sparsity_at(done))
        super().after_optimizer_step(step)

    def log_fields(self, step: int) -> dict[str, Any]:
        return {"prune_target_sparsity": self.level}

    def state_dict(self) -> dict[str, torch.Tensor]:
        # the level is kept as pruned, not re-derived from counts (floor rounding would drift)
        return {**self.masks.state_dict(), "level": torch.tensor(self.level, dtype=torch.float64)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        masks = {k: v for k, v in state.items() if k != "level"}
        super().load_state_dict(masks)
        self.level = float(state["level"])

    def _refresh_density(self) -> None:
        # StaticSparsity's FLOP factors come from its masks; recompute after they change
        self._density_by_kind = density_by_kind(self.targets, self.masks)
