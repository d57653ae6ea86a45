"""Dynamic sparse training: RigL / SET prune-and-grow with a time-varying target (mst.md §2.1-2.2).

Every ``interval`` steps each target drops its smallest-|w| active weights and grows the same
number (plus or minus the net change to a new target sparsity) where the dense gradient is
largest (``grow="gradient"``, RigL) or at random (``grow="random"``, SET). Which steps update
and how many weights every target keeps at every step are a pure function of the step
(``DSTTimeline``), shared by the hook and by the FLOP ledger of ``sparsity/variation.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparselm.errors import ConfigError
from sparselm.flops import ModelShape
from sparselm.hooks import TrainHook
from sparselm.model import GPT, BlockLinear
from sparselm.sparsity.mask_set import MaskSet
from sparselm.sparsity.masks import INITS, allocate_densities, erk_densities, kept_count

DISTRIBUTIONS = ("er", "erk", "uniform")
GROWS = ("gradient", "random")
ANNEALS = ("cosine", "constant")
HEAD_KIND = "head"
TargetFn = Callable[[int], float]


@dataclass(frozen=True)
class DSTConfig:
    """Keys follow the ``sparsity``/``sparsity.dst`` groups of mst.md §10.

    ``grow_mix_ratio`` r turns on mixed growing: ``int(n_grow·r/(r+1))`` by gradient, the rest
    at random among positions neither kept nor grown by gradient (the reference's
    ``grow_mix`` with ``grad_rand_ratio=r``; MST uses 3). ``None`` grows by ``grow`` alone.
    ``skip_opt_step_on_update``: the update replaces that step's optimizer step.
    ``reset_adam_on_grow``: zero AdamW moments of newly grown weights; the default (False)
    leaves moments untouched, as the reference does (mst.md §2.2, §9.6).
    """

    distribution: str = "er"
    init: str = "random"
    sparsify_lm_head: bool = True
    interval: int = 100
    drop_fraction: float = 0.3
    anneal: str = "cosine"
    end_frac: float = 1.0
    grow: str = "gradient"
    grow_mix_ratio: float | None = None
    skip_opt_step_on_update: bool = True
    reset_adam_on_grow: bool = False
    erk_power: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for key, value, allowed in (
            ("distribution", self.distribution, DISTRIBUTIONS),
            ("init", self.init, INITS),
            ("dst.anneal", self.anneal, ANNEALS),
            ("dst.grow", self.grow, GROWS),
        ):
            if value not in allowed:
                raise ConfigError(f"sparsity.{key}={value!r} is unknown; allowed: {allowed}")
        if (
            isinstance(self.interval, bool)
            or not isinstance(self.interval, int)
            or self.interval < 1
        ):
            raise ConfigError(f"sparsity.dst.interval={self.interval!r} must be an integer >= 1")
        if not 0.0 <= self.drop_fraction <= 1.0:
            raise ConfigError(f"sparsity.dst.drop_fraction={self.drop_fraction} must be in [0, 1]")
        if not 0.0 <= self.end_frac <= 1.0:
            raise ConfigError(f"sparsity.dst.end_frac={self.end_frac} must be in [0, 1]")
        if self.grow_mix_ratio is not None and not self.grow_mix_ratio >= 0.0:
            raise ConfigError(f"sparsity.dst.grow_mix_ratio={self.grow_mix_ratio} must be >= 0")
        if self.grow_mix_ratio is not None and self.grow != "gradient":
            raise ConfigError(
                f"sparsity.dst.grow_mix_ratio={self.grow_mix_ratio} needs dst.grow=gradient"
            )


# ---------------------------------------------------------------- targets and allocation


@dataclass(frozen=True)
class TargetShape:
    """A sparse matrix as allocation sees it: ``unit`` is the weight it lives in (Q, K and V
    share the fused qkv weight, which ER treats as one matrix, as the reference does)."""

    kind: str
    shape: tuple[int, int]
    unit: str
    unit_shape: tuple[int, int]

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]


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


def model_targets(shape: ModelShape, sparsify_lm_head: bool = True) -> list[TargetShape]:
    """The targets of a GPT of this shape, without building it (for FLOP planning)."""
    d, f = shape.d_model, shape.d_ff
    out: list[TargetShape] = []
    for i in range(shape.n_layer):
        qkv = f"blocks.{i}.attn.qkv.weight"
        out += [TargetShape(k, (d, d), qkv, (3 * d, d)) for k in ("q", "k", "v")]
        for kind, name, mat in (
            ("attn_out", "attn.out", (d, d)),
            ("mlp_in", "mlp.fc_in", (f, d)),
            ("mlp_out", "mlp.fc_out", (d, f)),
        ):
            out.append(TargetShape(kind, mat, f"blocks.{i}.{name}.weight", mat))
    if sparsify_lm_head:
        head = (shape.vocab_size, d)
        out.append(TargetShape(HEAD_KIND, head, "wte.weight", head))
    return out


def er_densities(shapes: Sequence[tuple[int, int]], sparsity: float) -> list[float]:
    """Erdős–Rényi: density ∝ (n_in + n_out)/(n_in·n_out), overflowing matrices made dense.

    For 2-D weights this is ERK at power 1, so the masks.py solver is reused.
    """
    return erk_densities(shapes, sparsity, power=1.0)


def target_counts(
    targets: Sequence[TargetShape], sparsity: float, distribution: str, erk_power: float = 1.0
) -> tuple[int, ...]:
    """Exact kept entries per target for a global sparsity.

    ``er`` allocates over whole weights (fused qkv as one 3d×d matrix; mst.md §2.1), then each
    row slice keeps ``kept_count`` of its own size; ``erk``/``uniform`` allocate per target as
    ``StaticSparsity`` does.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"sparsity target {sparsity} is out of range; allowed: 0 <= s < 1")
    if distribution == "er":
        units = list(dict.fromkeys((t.unit, t.unit_shape) for t in targets))
        by_unit = dict(zip(units, er_densities([u[1] for u in units], sparsity), strict=True))
        densities = [by_unit[(t.unit, t.unit_shape)] for t in targets]
    else:
        densities = allocate_densities(
            [t.shape for t in targets], sparsity, distribution, erk_power
        )
    return tuple(
        min(t.numel, kept_count(t.numel, d)) for t, d in zip(targets, densities, strict=True)
    )


# ---------------------------------------------------------------- the pure schedule


class DSTTimeline:
    """Update steps, drop fractions and per-target kept counts as functions of the step.

    Step ``t`` (0-based) updates the masks after its backward when ``t > 0``, ``t`` is a multiple
    of ``interval`` and either ``t < end_frac·total_steps`` or the target counts changed since
    the previous multiple (a net prune/grow still has to happen after swapping stops). The
    forward of step ``t`` therefore uses the counts of the last multiple before ``t``.
    """

    def __init__(
        self, targets: Sequence[TargetShape], cfg: DSTConfig, target_fn: TargetFn, total_steps: int
    ) -> None:
        if total_steps < 1:
            raise ConfigError(f"train.steps={total_steps} must be >= 1 for dynamic sparsity")
        self.targets = list(targets)
        self.cfg = cfg
        self.target_fn = target_fn
        self.total_steps = total_steps
        self.end_step = int(round(cfg.end_frac * total_steps))
        self._counts: dict[float, tuple[int, ...]] = {}
        self._factors: dict[tuple[tuple[int, ...], bool], dict[str, Any]] = {}
        kinds: dict[str, list[int]] = {}
        for i, t in enumerate(self.targets):
            kinds.setdefault(t.kind, []).append(i)
        self._kinds = kinds

    def counts_for(self, sparsity: float) -> tuple[int, ...]:
        if sparsity not in self._counts:
            cfg = self.cfg
            self._counts[sparsity] = target_counts(
                self.targets, sparsity, cfg.distribution, cfg.erk_power
            )
        return self._counts[sparsity]

    def counts_at(self, step: int) -> tuple[int, ...]:
        """The counts the target sparsity asks for at this step."""
        return self.counts_for(float(self.target_fn(step)))

    def drop_fraction(self, step: int) -> float:
        """ζ_t: ζ/2·(1 + cos(π·t/t_end)) (or ζ when constant) before ``t_end``, then 0."""
        if step >= self.end_step:
            return 0.0
        if self.cfg.anneal == "constant":
            return self.cfg.drop_fraction
        return self.cfg.drop_fraction / 2 * (1 + math.cos(math.pi * step / self.end_step))

    def is_update_step(self, step: int) -> bool:
        every = self.cfg.interval
        if step <= 0 or step % every or step >= self.total_steps:
            return False
        return step < self.end_step or self.counts_at(step) != self.counts_at(step - every)

    def mask_point(self, step: int) -> int:
        """The step whose target the masks in use during ``step``'s forward were set to."""
        return max(0, (step - 1) // self.cfg.interval * self.cfg.interval)

    def mask_counts(self, step: int) -> tuple[int, ...]:
        return self.counts_at(self.mask_point(step))

    def flop_factors(self, step: int) -> dict[str, Any]:
        """Keys of ``flops.train_flops_per_token``: densities in use, and the dense-gradient
        overhead on update steps that grow by gradient."""
        counts = self.mask_counts(step)
        dense_grad = self.cfg.grow == "gradient" and self.is_update_step(step)
        key = (counts, dense_grad)
        if key not in self._factors:  # a whole run has few distinct answers
            density: dict[str, float] = {}
            for kind, idx in self._kinds.items():
                kept = sum(counts[i] for i in idx)
                density[kind] = kept / sum(self.targets[i].numel for i in idx)
            out: dict[str, Any] = {}
            if HEAD_KIND in density:
                out["head_density"] = density.pop(HEAD_KIND)
            out["density"] = density
            if dense_grad:
                out["dense_weight_grad"] = True
            self._factors[key] = out
        cached = self._factors[key]
        return {**cached, "density": dict(cached["density"])}


# ---------------------------------------------------------------- one prune-and-grow


def swap_counts(n_on: int, target: int, drop_fraction: float) -> tuple[int, int]:
    """(n_prune, n_grow): swap ``int(n_on·ζ)`` but prune at least the net excess (mst.md §2.2)."""
    net = n_on - target
    n_prune = max(int(n_on * drop_fraction), net)
    return n_prune, n_prune - net


def grow_split(n_grow: int, grow: str, mix_ratio: float | None) -> tuple[int, int]:
    """(by gradient, at random) for ``n_grow`` new connections."""
    if grow == "random":
        return 0, n_grow
    if mix_ratio is None:
        return n_grow, 0
    by_grad = int(n_grow * (mix_ratio / (mix_ratio + 1)))
    return by_grad, n_grow - by_grad


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
