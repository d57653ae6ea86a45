"""Dynamic sparse training: RigL / SET prune-and-grow with a time-varying target (mst.md §2.1-2.2).

Every ``interval`` steps each target drops its smallest-|w| active weights and grows the same
number (plus or minus the net change to a new target sparsity) where the dense gradient is
largest (``grow="gradient"``, RigL) or at random (``grow="random"``, SET). Which steps update
and how many weights every target keeps at every step are a pure function of the step
(``DSTTimeline`` of ``sparsity/dst_schedule.py``), shared with the FLOP ledger of
``sparsity/variation.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparselm.hooks import TrainHook
from sparselm.model import GPT, BlockLinear
from sparselm.sparsity.dst_schedule import (
    HEAD_KIND,
    DSTConfig,
    DSTTimeline,
    TargetFn,
    TargetShape,
    grow_split,
    swap_counts,
)
from sparselm.sparsity.mask_set import MaskSet

# ---------------------------------------------------------------- targets


def dst_targets(model: GPT, sparsify_lm_head: bool = True) -> list[BlockLinear]:
    """Block linears (q/k/v as row slices of the fused qkv) plus, if asked, the tied head."""
    targets = list(model.block_linears())
    if sparsify_lm_head:
        wte = model.wte.weight  # the tied lm_head: a (vocab, d_model) linear
        targets.append(
            BlockLinear("wte.weight", model.config.n_layer, HEAD_KIND, wte, slice(0, wte.shape[0]))
        )
    return targets


def target_shape(t: BlockLinear) -> TargetShape:
    return TargetShape(t.kind, t.shape, t.name, (t.weight.shape[0], t.weight.shape[1]))


# ---------------------------------------------------------------- one prune-and-grow


def _top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k > 0:
        mask[torch.topk(scores, k, sorted=False).indices] = True
    return mask


def next_mask(
    weight: torch.Tensor,
    mask: torch.Tensor,
    n_prune: int,
    n_grad: int,
    n_rand: int,
    grad: torch.Tensor,
    rand: torch.Tensor | None,
) -> torch.Tensor:
    """Keep the largest-|w| active entries but ``n_prune``; then, among the rest (just-pruned
    included), grow the ``n_grad`` of largest |grad| and ``n_rand`` of largest random score.

    ``rand`` (same numel as ``mask``) is only read when ``n_rand > 0``.
    """
    flat_m = mask.flatten()
    low = torch.tensor(-math.inf, device=weight.device)
    magnitude = torch.where(flat_m, weight.detach().flatten().abs().float(), low)
    keep = _top_k(magnitude, int(flat_m.sum()) - n_prune)
    grown = _top_k(torch.where(keep, low, grad.flatten().abs().float()), n_grad)
    if n_rand:
        if rand is None:
            raise ValueError("next_mask: n_rand > 0 needs random scores")
        grown |= _top_k(torch.where(keep | grown, low, rand.flatten()), n_rand)
    return (keep | grown).view(mask.shape)


# ---------------------------------------------------------------- the hook


@dataclass
class _UpdateStats:
    step: int = -1
    pruned: float = 0.0
    grown: float = 0.0
    churn: float = 0.0

    def tensor(self) -> torch.Tensor:
        return torch.tensor([self.step, self.pruned, self.grown, self.churn], dtype=torch.float64)


class DynamicSparsity(TrainHook):
    """RigL / SET masks on the block linears (and the tied head), re-drawn every ΔT steps.

    On an update step ``after_backward`` reads ``p.grad`` of every target before masking it:
    the loop has summed all micro-batches there and, under DDP, the all-reduce has already
    averaged it over ranks, so this is the dense gradient every rank agrees on. Random
    choices are seeded by (seed, step), so ranks agree and a resumed run redraws the same.

    Skipping the optimizer step needs no change to the loop: on an update step the hook drops
    every gradient (``grad = None``), and ``torch.optim`` leaves a parameter without a gradient
    exactly as it is (no weight decay, no moment update, no step count); gradient clipping
    then sees no gradients and the step logs ``grad_norm`` 0.

    Masks cover whole parameters, so every rank must hold them whole (one process or DDP).
    """

    name = "dst"

    def __init__(
        self,
        targets: list[BlockLinear],
        cfg: DSTConfig,
        target_fn: TargetFn | float,
        total_steps: int,
    ) -> None:
        fn = target_fn if callable(target_fn) else _constant(float(target_fn))
        self.targets = targets
        self.cfg = cfg
        self.timeline = DSTTimeline([target_shape(t) for t in targets], cfg, fn, total_steps)
        self.masks = MaskSet.from_targets(targets, self._initial_masks())
        self.optimizer: torch.optim.Optimizer | None = None
        self._params: list[nn.Parameter] = []
        self._last = _UpdateStats()

    @classmethod
    def from_config(
        cls, model: GPT, cfg: DSTConfig, target_fn: TargetFn | float, total_steps: int
    ) -> DynamicSparsity:
        return cls(dst_targets(model, cfg.sparsify_lm_head), cfg, target_fn, total_steps)

    def _initial_masks(self) -> list[torch.Tensor]:
        counts = self.timeline.counts_at(0)
        generator = torch.Generator().manual_seed(self.cfg.seed)  # never the global RNG
        masks = []
        for t, k in zip(self.targets, counts, strict=True):
            if self.cfg.init == "random":
                scores = torch.rand(t.shape[0] * t.shape[1], generator=generator)
            else:
                scores = t.view().detach().abs().flatten().float().cpu()
            masks.append(_top_k(scores, k).view(t.shape))
        return masks

    def on_train_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self._params = [p for g in optimizer.param_groups for p in g["params"]]
        self.masks.apply_to_weights()

    def after_backward(self, step: int) -> None:
        if self.timeline.is_update_step(step):
            self.update(step)
            if self.cfg.skip_opt_step_on_update:
                for p in self._params:
                    p.grad = None
                return
        self.masks.apply_to_grads()

    def after_optimizer_step(self, step: int) -> None:
        self.masks.apply_to_weights()

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Prune and grow every target to this step's counts; grads are the dense gradient."""
        cfg, counts = self.cfg, self.timeline.counts_at(step)
        zeta = self.timeline.drop_fraction(step)
        device = self.targets[0].weight.device
        generator = torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + step)
        new = {n: m.clone() for n, m in self.masks.masks.items()}
        before = after = pruned = grown = changed = 0
        for t, target in zip(self.targets, counts, strict=True):
            old = self.masks.masks[t.name][t.rows]
            n_on = int(old.sum())
            n_prune, n_grow = swap_counts(n_on, target, zeta)
            n_grad, n_rand = grow_split(n_grow, cfg.grow, cfg.grow_mix_ratio)
            grad = (
                t.weight.grad[t.rows]
                if t.weight.grad is not None
                else torch.zeros(t.shape, device=device)
            )
            rand = torch.rand(old.numel(), generator=generator, device=device) if n_rand else None
            mask = next_mask(t.view(), old, n_prune, n_grad, n_rand, grad, rand)
            newly = mask & ~old
            t.view()[newly] = 0.0  # a regrown connection starts from zero
            if cfg.reset_adam_on_grow:
                self._reset_moments(t, newly)
            new[t.name][t.rows] = mask
            before, after = before + n_on, after + target
            pruned, grown = pruned + n_prune, grown + n_grow
            changed += int((mask ^ old).sum())
        self.masks = MaskSet(self.masks.params, new)
        self.masks.apply_to_weights()
        self._last = _UpdateStats(
            step, pruned / max(1, before), grown / max(1, before), changed / max(1, before + after)
        )

    def _reset_moments(self, t: BlockLinear, newly: torch.Tensor) -> None:
        state = self.optimizer.state.get(t.weight, {}) if self.optimizer is not None else {}
        for value in state.values():
            if torch.is_tensor(value) and value.shape == t.weight.shape:
                value[t.rows][newly] = 0.0

    def flop_factors(self, step: int) -> dict[str, Any]:
        return self.timeline.flop_factors(step)

    def log_fields(self, step: int) -> dict[str, Any]:
        """Mask sparsity and target; the latest update's pruned/grown fractions (of the
        connections active before it) and churn (changed / (active before + after))."""
        kept = sum(int(m.sum()) for m in self.masks.masks.values())
        total = sum(m.numel() for m in self.masks.masks.values())
        last = self._last
        return {
            "dst_sparsity": 1.0 - kept / total,
            "dst_target_sparsity": float(self.timeline.target_fn(step)),
            "dst_drop_fraction": self.timeline.drop_fraction(step),
            "dst_update": last.step == step,
            "dst_last_update_step": last.step,
            "dst_pruned_frac": last.pruned,
            "dst_grown_frac": last.grown,
            "dst_mask_churn": last.churn,
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**self.masks.state_dict(), "last_update": self._last.tensor()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.masks.load_state_dict(state)
        step, pruned, grown, churn = state["last_update"].tolist()
        self._last = _UpdateStats(int(step), pruned, grown, churn)
        self.masks.apply_to_weights()


def _constant(sparsity: float) -> TargetFn:
    def target(step: int) -> float:
        return sparsity

    return target
