"""The hybrid-sparse-attention and MST rows of benchmarks/gpu_throughput.py.

HSA: the training step with every layer on one attention pattern. MST: the step under the
dynamic-sparsity and sparse-attention hooks of the default three-phase sparsity variation, at
one step of each phase and at a mask-update step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpu_step_timing import (
    NEVER,
    HookBuilder,
    Setting,
    failed_row,
    measure_or_none,
    model_shape,
    speedups,
    table_head,
)

from sparselm.attention import effective_pattern, pick_route
from sparselm.flops import DEFAULT_CONVENTION, train_flops_per_token
from sparselm.hooks import TrainHook
from sparselm.methods.hsa import HSAConfig, HSAHook, flop_attn_density
from sparselm.model import GPT
from sparselm.sparsity.dst import DynamicSparsity
from sparselm.sparsity.dst_schedule import DSTConfig
from sparselm.sparsity.variation import SparsityVariation, VariationConfig, schedule_flops

HSA_PATTERNS = ("local", "strided", "sparse", "fixed")
# the MST run the phase rows are placed in: long enough that the last mask before the end of
# restoration is near dense at the default DST interval (100 steps)
MST_RUN_STEPS = 10_000
MST_DST = DSTConfig(grow_mix_ratio=3.0)  # MST's prune-and-grow: 3 of 4 grown by gradient
MST_VARIATION = VariationConfig()  # warm-up 10 %, ultra 75 % at s_max 0.9, restoration to 0
MST_PATTERN = "sparse"  # the default pattern of hybrid sparse attention


# ---------------------------------------------------------------- hybrid sparse attention


def hsa_config(s: Setting, pattern: str, convention: str = DEFAULT_CONVENTION) -> HSAConfig:
    """Every layer on ``pattern`` at every step, densities counted at this run's T."""
    return HSAConfig(
        pattern=pattern,
        stride=s.stride,
        start_step=0,
        end_step=NEVER,
        seq_len=s.seq,
        flops_convention=convention,
    )


def hsa_hooks(s: Setting, pattern: str) -> HookBuilder:
    def build(model: GPT) -> list[TrainHook]:
        return [HSAHook(hsa_config(s, pattern), s.model.n_layer, NEVER)]

    return build


def attention_route(s: Setting, pattern: str) -> str:
    """The route ``AttentionPattern(route="auto")`` takes in this setting's training step."""
    effective = effective_pattern(pattern, s.seq, s.stride)
    if effective == "dense":
        return "causal SDPA (all causal pairs at this T)"
    return pick_route(effective, "auto", s.device, s.seq, s.stride, s.model.dropout)


def causal_half_speedup(s: Setting, pattern: str) -> float:
    """Dense / pattern under ``causal_half_attn``: attention counted over the causal pairs,
    the work a causal flash kernel does, so dense attention is not charged for T² scores."""
    shape, convention = model_shape(s), "causal_half_attn"
    hook = HSAHook(hsa_config(s, pattern, convention), s.model.n_layer, NEVER)
    dense = train_flops_per_token(shape, convention=convention)["total"]
    sparse = train_flops_per_token(shape, convention=convention, **hook.flop_factors(0))
    return dense / sparse["total"]


def hsa_table(s: Setting, dense: dict[str, Any]) -> list[str]:
    lines = table_head(
        [
            "pattern",
            "route (auto)",
            "attended pairs / T²",
            "ms/step",
            "tokens/s",
            "FLOP-predicted speedup",
            "predicted, causal-half attention",
            "measured speedup",
        ]
    )
    for pattern in HSA_PATTERNS:
        name = f"HSA {pattern}"
        r = measure_or_none(s, name, hsa_hooks(s, pattern))
        if r is None:
            lines.append(failed_row([name, attention_route(s, pattern)], 8))
            continue
        predicted, measured = speedups(dense, r)
        cells = [
            name,
            attention_route(s, pattern),
            f"{r['factors']['attn_density']:.3f}",
            f"{1e3 * r['seconds']:.1f}",
            f"{s.batch * s.seq / r['seconds']:,.0f}",
            predicted,
            f"{causal_half_speedup(s, pattern):.2f}x",
            measured,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


# ---------------------------------------------------------------- MST phases


def mst_hooks(s: Setting) -> HookBuilder:
    """MST's masks and attention: DST with the default variation as its target, sparse
    attention on in the ultra phase (s_max as written, not solved for a FLOP budget)."""

    def build(model: GPT) -> list[TrainHook]:
        variation = SparsityVariation(MST_VARIATION, MST_RUN_STEPS)
        start, end = variation.ultra_window()
        hsa = HSAConfig(
            pattern=MST_PATTERN, stride=s.stride, start_step=start, end_step=end, seq_len=s.seq
        )
        return [
            DynamicSparsity.from_config(model, MST_DST, variation, MST_RUN_STEPS),
            HSAHook(hsa, s.model.n_layer, MST_RUN_STEPS, active=variation.is_ultra),
        ]

    return build


def masks_for(step: int) -> Callable[[list[TrainHook]], None]:
    """Bring the DST masks to the counts ``step``'s forward uses by running the update of its
    mask point (which weights survive does not change the cost; how many does)."""

    def prepare(hooks: list[TrainHook]) -> None:
        for hook in hooks:
            if isinstance(hook, DynamicSparsity):
                point = hook.timeline.mask_point(step)
                if point > 0:
                    hook.update(point)

    return prepare


def mst_steps() -> list[int]:
    """One step inside each phase and one mask-update step: mid first interval (masks still
    at s_start), mid ultra just after an update (s_max, sparse attention on), that update
    step itself (prune-and-grow from the dense gradient), and the last interval (near dense)."""
    variation = SparsityVariation(MST_VARIATION, MST_RUN_STEPS)
    every = MST_DST.interval
    half = max(1, every // 2)
    start, end = variation.ultra_window()
    update = (start + end) // 2 // every * every
    return [half, update + half, update, MST_RUN_STEPS - half]


def mst_table(s: Setting, dense: dict[str, Any]) -> list[str]:
    variation = SparsityVariation(MST_VARIATION, MST_RUN_STEPS)
    lines = table_head(
        [
            "MST phase",
            "step",
            "target sparsity",
            "mask sparsity",
            "sparse attention",
            "ms/step",
            "FLOP-predicted speedup",
            "measured speedup",
        ]
    )
    for step in mst_steps():
        r = measure_or_none(
            s, f"MST step {step}", mst_hooks(s), at_step=step, prepare=masks_for(step)
        )
        if r is None:
            lines.append(failed_row([variation.phase_at(step), str(step)], 8))
            continue
        log = r["log"]
        phase = variation.phase_at(step) + (", DST update" if log["dst_update"] else "")
        cells = [
            phase,
            str(step),
            f"{log['dst_target_sparsity']:.3f}",
            f"{log['dst_sparsity']:.3f}",
            "on" if log["hsa_on"] else "off",
            f"{1e3 * r['seconds']:.1f}",
            *speedups(dense, r),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    density = flop_attn_density(MST_PATTERN, s.seq, s.stride, DEFAULT_CONVENTION)
    whole = schedule_flops(
        model_shape(s), MST_RUN_STEPS, MST_VARIATION, MST_DST, ultra_attn_density=density
    )
    lines += [
        "",
        f"Whole run, FLOP-predicted: {whole['reduction']:.2f}x fewer training FLOPs than dense "
        "(`sparsity.variation.schedule_flops`, the sum of the same per-step ledger).",
    ]
    return lines
