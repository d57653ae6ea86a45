"""The pure part of dynamic sparse training: its config, what every target keeps, and when.

``DSTTimeline`` says, as a function of the step alone, which steps update the masks, the drop
fraction, and how many weights every target keeps; ``swap_counts``/``grow_split`` say how one
update splits into pruned and grown weights. The hook of ``sparsity/dst.py`` and the FLOP
ledger of ``sparsity/variation.py`` share these, so planned and trained costs agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sparselm.errors import ConfigError
from sparselm.flops import ModelShape
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


# ---------------------------------------------------------------- one update's counts


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
