"""MST sparsity variation: a three-phase global sparsity target (mst.md §2.3) and its ledger.

Phases over ``T`` training steps, with ``w = round(warmup_frac·T)`` and
``u = round((warmup_frac + ultra_frac)·T)``:

- warm-up ``[0, w)``: ``s_start + (s_max − s_start)·ramp(t / w)``;
- ultra ``[w, u)``: ``s_max``;
- restoration ``[u, T)``: ``s_max + (s_end − s_max)·ramp((t − u) / (T − u))``.

``ramp`` is ``cubic`` (1 − (1 − x)³, Zhu–Gupta) or ``staircase``: linear, but sampled only at
multiples of ``granularity_iters`` (the reference changes its target every 1000 iterations).

The FLOP ledger (mst.md §4) sums, step by step, the training FLOPs of the factors that
``DSTTimeline.flop_factors`` reports: the same numbers the hook gives the training loop, so a
run's logged ``flops_cum`` and ``schedule_flops`` agree. ``solve_for_reduction`` bisects
``s_max`` or ``ultra_frac`` to hit a whole-run reduction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sparselm.errors import ConfigError
from sparselm.flops import DEFAULT_CONVENTION, ModelShape, train_flops_per_token
from sparselm.sparsity.dst_schedule import DSTConfig, DSTTimeline, model_targets

RAMPS = ("cubic", "staircase")
PHASES = ("warmup", "ultra", "restoration")
KNOBS = ("s_max", "ultra_frac")


@dataclass(frozen=True)
class VariationConfig:
    """Keys of ``sparsity.variation`` in mst.md §10 (fractions of the run's steps)."""

    warmup_frac: float = 0.10
    ultra_frac: float = 0.75
    s_start: float = 0.05
    s_max: float = 0.90
    s_end: float = 0.0
    ramp: str = "cubic"
    granularity_iters: int = 1000

    def __post_init__(self) -> None:
        key = "sparsity.variation"
        for name in ("warmup_frac", "ultra_frac"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{key}.{name}={value} must be in [0, 1]")
        if self.warmup_frac + self.ultra_frac > 1.0 + 1e-12:
            raise ConfigError(
                f"{key}.warmup_frac+ultra_frac={self.warmup_frac + self.ultra_frac} exceeds 1"
            )
        for name in ("s_start", "s_max", "s_end"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{key}.{name}={value} must be in [0, 1)")
        if self.ramp not in RAMPS:
            raise ConfigError(f"{key}.ramp={self.ramp!r} is unknown; allowed: {RAMPS}")
        g = self.granularity_iters
        if isinstance(g, bool) or not isinstance(g, int) or g < 1:
            raise ConfigError(f"{key}.granularity_iters={g!r} must be an integer >= 1")


class SparsityVariation:
    """The schedule for one run length: call it with a step to get the global sparsity."""

    def __init__(self, cfg: VariationConfig, total_steps: int) -> None:
        if total_steps < 1:
            raise ConfigError(f"train.steps={total_steps} must be >= 1")
        self.cfg = cfg
        self.total_steps = total_steps
        self.warmup_end = int(round(cfg.warmup_frac * total_steps))
        self.ultra_end = int(round((cfg.warmup_frac + cfg.ultra_frac) * total_steps))

    def __call__(self, step: int) -> float:
        cfg = self.cfg
        phase = self.phase_at(step)
        if phase == "ultra":
            return cfg.s_max
        if phase == "warmup":
            return cfg.s_start + (cfg.s_max - cfg.s_start) * self._ramp(step, 0, self.warmup_end)
        return cfg.s_max + (cfg.s_end - cfg.s_max) * self._ramp(
            step, self.ultra_end, self.total_steps
        )

    def phase_at(self, step: int) -> str:
        """'warmup', 'ultra' or 'restoration'."""
        if step < self.warmup_end:
            return "warmup"
        return "ultra" if step < self.ultra_end else "restoration"

    def is_ultra(self, step: int) -> bool:
        """Inside the ultra-sparse phase: the ``active(step)`` of hybrid sparse attention."""
        return self.phase_at(step) == "ultra"

    def ultra_window(self) -> tuple[int, int]:
        """[start, end) steps of the ultra-sparse phase (where hybrid sparse attention runs)."""
        return self.warmup_end, self.ultra_end

    def _ramp(self, step: int, start: int, end: int) -> float:
        if end <= start:
            return 1.0
        if self.cfg.ramp == "staircase":
            g = self.cfg.granularity_iters
            step = max(start, step // g * g)
            return min(1.0, (step - start) / (end - start))
        x = min(1.0, (step - start) / (end - start))
        return 1.0 - (1.0 - x) ** 3


# ---------------------------------------------------------------- the FLOP ledger


def schedule_flops(
    shape: ModelShape,
    total_steps: int,
    variation: VariationConfig,
    dst: DSTConfig | None = None,
    *,
    ultra_attn_density: float = 1.0,
    convention: str = DEFAULT_CONVENTION,
    include_dst_overhead: bool = True,
    count_head: bool = True,
) -> dict[str, float]:
    """Whole-run training FLOPs per token-of-a-step, summed over steps, dense and ours.

    Ours at step t is ``train_flops_per_token`` with the hook's ``flop_factors(t)`` plus
    ``attn_density=ultra_attn_density`` inside the ultra window. Steps are summed in runs
    over which nothing changes (a mask stays fixed between multiples of ΔT), which equals the
    step-by-step sum. ``reduction = Σ dense / Σ ours``; ``dst_overhead`` is its own sum.
    ``count_head=False`` leaves the LM head out of both sums (its overhead share included).
    """
    dst = dst or DSTConfig()
    schedule = SparsityVariation(variation, total_steps)
    timeline = DSTTimeline(model_targets(shape, dst.sparsify_lm_head), dst, schedule, total_steps)
    dense_flops = train_flops_per_token(shape, convention=convention)
    dense_step = dense_flops["total"] - (0.0 if count_head else dense_flops["head"])

    def per_step(step: int) -> dict[str, float]:
        return step_flops(
            shape,
            timeline,
            schedule,
            step,
            ultra_attn_density,
            convention,
            include_dst_overhead,
            count_head,
        )

    ours = overhead = 0.0
    for start, end in _constant_runs(total_steps, dst.interval, schedule.ultra_window()):
        f = per_step(start)
        ours += (end - start) * f["total"]
        overhead += (end - start) * f.get("dst_overhead", 0.0)
    dense = dense_step * total_steps
    return {"dense": dense, "ours": ours, "dst_overhead": overhead, "reduction": dense / ours}


def step_flops(
    shape: ModelShape,
    timeline: DSTTimeline,
    schedule: SparsityVariation,
    step: int,
    ultra_attn_density: float = 1.0,
    convention: str = DEFAULT_CONVENTION,
    include_dst_overhead: bool = True,
    count_head: bool = True,
) -> dict[str, float]:
    """One step's training FLOPs per token, as the loop would log them (``count_head=False``
    takes the head's forward/backward and dense-gradient terms out of ``total``)."""
    factors: dict[str, Any] = dict(timeline.flop_factors(step))
    if not include_dst_overhead:
        factors.pop("dense_weight_grad", None)
    if schedule.phase_at(step) == "ultra":
        factors["attn_density"] = ultra_attn_density
    out = train_flops_per_token(shape, convention=convention, **factors)
    if not count_head:
        head_density = factors.get("head_density", 1.0)
        head_grad = 2.0 * shape.d_model * shape.vocab_size * (1.0 - head_density)
        out["total"] -= out["head"] + (head_grad if "dst_overhead" in out else 0.0)
    return out


def _constant_runs(
    total_steps: int, interval: int, window: tuple[int, int]
) -> list[tuple[int, int]]:
    """[start, end) runs of steps with equal FLOPs: cut at every multiple k·ΔT (an update
    step) and k·ΔT + 1 (the first step on the new mask), and at the ultra window's ends."""
    cuts = {0, total_steps, *window}
    for k in range(0, total_steps, interval):
        cuts.update((k, k + 1))
    edges = sorted(c for c in cuts if 0 <= c <= total_steps)
    return list(zip(edges[:-1], edges[1:], strict=True))


def schedule_reduction(
    shape: ModelShape, total_steps: int, variation: VariationConfig, **kwargs: Any
) -> float:
    """Σ dense / Σ ours over the run (keyword arguments as ``schedule_flops``)."""
    return schedule_flops(shape, total_steps, variation, **kwargs)["reduction"]


def solve_for_reduction(
    shape: ModelShape,
    total_steps: int,
    target: float = 4.0,
    knob: str = "s_max",
    variation: VariationConfig | None = None,
    *,
    tol: float = 1e-3,
    **kwargs: Any,
) -> tuple[VariationConfig, float]:
    """Bisect ``s_max`` (in [max(s_start, s_end), 0.999]) or ``ultra_frac`` (in
    [0, 1 − warmup_frac]) until the whole-run reduction is within ``tol`` of ``target``.

    The reduction grows with either knob. Returns the solved config and its reduction;
    keyword arguments go to ``schedule_flops`` (``dst``, ``ultra_attn_density``, ...).
    """
    variation = variation or VariationConfig()
    if knob not in KNOBS:
        raise ConfigError(f"flops.solve_knob={knob!r} is unknown; allowed: {KNOBS}")
    if knob == "s_max":
        lo, hi = max(variation.s_start, variation.s_end), 0.999
    else:
        lo, hi = 0.0, 1.0 - variation.warmup_frac

    def at(value: float) -> tuple[VariationConfig, float]:
        cfg = dataclasses.replace(variation, **{knob: value})
        return cfg, schedule_reduction(shape, total_steps, cfg, **kwargs)

    low, high = at(lo), at(hi)
    if not low[1] - tol <= target <= high[1] + tol:
        raise ConfigError(
            f"flops.target_reduction={target} is out of reach by {knob}: "
            f"{low[1]:.3f}x at {knob}={lo} to {high[1]:.3f}x at {knob}={hi}"
        )
    best = min(low, high, key=lambda r: abs(r[1] - target))
    for _ in range(60):
        if abs(best[1] - target) <= tol:
            break
        mid = at((lo + hi) / 2)
        if mid[1] < target:
            lo = (lo + hi) / 2
        else:
            hi = (lo + hi) / 2
        best = min(best, mid, key=lambda r: abs(r[1] - target))
    return best


def ledger_conventions(
    shape: ModelShape,
    total_steps: int,
    variation: VariationConfig,
    dst: DSTConfig | None = None,
    ultra_attn_density: float | Mapping[str, float] = 1.0,
) -> dict[str, float]:
    """The whole-run reduction under every accounting choice of mst.md §4, keyed
    ``<attention convention>/<with|without>_overhead/<with|without>_head``; the headline is
    ``megatron_full_attn/with_overhead/with_head``.

    A sparse pattern's density depends on the convention's basis (allowed pairs over T² for
    ``megatron_full_attn``, over T(T+1)/2 for ``causal_half_attn``), so ``ultra_attn_density``
    may map convention -> density; a single number is used for both.
    """
    out: dict[str, float] = {}
    for convention in ("megatron_full_attn", "causal_half_attn"):
        attn = (
            ultra_attn_density
            if isinstance(ultra_attn_density, (int, float))
            else ultra_attn_density[convention]
        )
        for overhead in (True, False):
            for head in (True, False):
                key = (
                    f"{convention}/{'with' if overhead else 'without'}_overhead/"
                    f"{'with' if head else 'without'}_head"
                )
                out[key] = schedule_reduction(
                    shape,
                    total_steps,
                    variation,
                    dst=dst,
                    ultra_attn_density=attn,
                    convention=convention,
                    include_dst_overhead=overhead,
                    count_head=head,
                )
    return out
