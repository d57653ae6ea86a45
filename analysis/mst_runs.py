"""What each MST-study variant ran, read back from its resolved ``config.yaml`` and its log.

A variant's schedule (target sparsity, DST updates, the HSA window, FLOPs per step) is rebuilt
with ``sparselm.methods.mst.MSTPlan`` from the run's config and the knob value its job solved
(``mst_knob_value`` in ``train_log.jsonl``), so the figures show the plan the run followed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from analysis.run_specs import RunSpec, in_order
from sparselm.cli.mst_config import mst_config
from sparselm.flops import shape_from_model_config
from sparselm.methods.mst import MSTPlan

DENSE, MST = "dense", "mst"
VARIANT_ORDER = (DENSE, "static", "rigl", "set", MST, "mst_nosv", "mst_nohsa", "mst_nomix")
MASK_METHODS = ("mst", "rigl", "set", "static_sparse")
KINDS = ("qkv", "attn_out", "mlp_in", "mlp_out", "lm_head")  # the mask's layer kinds
LOG_COLUMNS = (
    "step", "tokens", "flops_cum", "train_loss", "val_loss", "step_time_s", "dst_sparsity",
    "dst_target_sparsity", "dst_update", "dst_last_update_step", "dst_pruned_frac",
    "dst_grown_frac", "dst_mask_churn", "hsa_on", "attn_density", "mst_phase",
    "mst_knob", "mst_knob_value", "mst_planned_reduction",
    *(f"sparsity_by_kind/{kind}" for kind in KINDS),
)  # fmt: skip


def has_masks(spec: RunSpec) -> bool:
    return spec.method_name in MASK_METHODS


def ordered_variants(names: Iterable[str]) -> list[str]:
    """The MST study's variants in their canonical order; unknown ones after."""
    return in_order(names, VARIANT_ORDER)


def plan_of(spec: RunSpec) -> MSTPlan | None:
    """The run's plan, with the solved knob in place of the budget; None without masks."""
    if not has_masks(spec):
        return None
    cfg = mst_config(OmegaConf.create(spec.method))
    if spec.knob_value is not None:
        cfg = cfg.with_knob(spec.knob_value)
    cfg = dataclasses.replace(cfg, target_reduction=None)
    shape = shape_from_model_config(spec.model, seq_len=spec.seq_len)
    return MSTPlan(cfg, shape, spec.steps, spec.convention)


def schedule_frame(spec: RunSpec) -> pd.DataFrame:
    """Per step: target sparsity, attention density, phase and whether masks update."""
    plan = plan_of(spec)
    columns = ["variant", "step", "target_sparsity", "attn_density", "phase", "update"]
    if plan is None:
        return pd.DataFrame(columns=columns)
    steps = np.arange(spec.steps)
    return pd.DataFrame(
        {
            "variant": spec.variant,
            "step": steps,
            "target_sparsity": [float(plan.target_fn(int(t))) for t in steps],
            "attn_density": [plan.attn_density if plan.hsa_on(int(t)) else 1.0 for t in steps],
            "phase": [plan.phase(int(t)) for t in steps],
            "update": [plan.timeline.is_update_step(int(t)) for t in steps],
        }
    )[columns]


def budget(spec: RunSpec) -> dict[str, Any]:
    """The plan's numbers: knob, ledger reduction, DST overhead share, updates, HSA window."""
    plan = plan_of(spec)
    if plan is None:
        return {"variant": spec.variant, "method": spec.method_name}
    cfg, ledger = plan.cfg, plan.ledger()
    updates = sum(plan.timeline.is_update_step(t) for t in range(spec.steps))
    skipped = updates if cfg.dst.skip_opt_step_on_update else 0
    return {
        "variant": spec.variant,
        "method": spec.method_name,
        "knob": cfg.knob if spec.knob_value is not None else None,
        "knob_value": spec.knob_value,
        "peak_sparsity": cfg.variation.s_max if cfg.schedule == "variation" else cfg.level,
        "planned_reduction": ledger["reduction"],
        "dst_overhead_share": ledger["dst_overhead"] / ledger["ours"],
        "updates": updates,
        "skipped_opt_steps": skipped,
        "hsa_steps": plan.window[1] - plan.window[0],
        "hsa_attn_density": plan.attn_density if cfg.hsa is not None else math.nan,
        "interval": cfg.dst.interval,
    }


def schedule_label(spec: RunSpec) -> str:
    """``MST: ER 0.05→0.915→0 (warm-up 10 %, ultra 75 %), ΔT=10, RigL + mixed 3:1, HSA
    sparse w=16 in ultra``: what the variant trains, in one line."""
    plan = plan_of(spec)
    if plan is None:
        n_layer = spec.model.get("n_layer", "?")
        return f"dense, {n_layer} layers"
    cfg, dst = plan.cfg, plan.cfg.dst
    if cfg.schedule == "variation":
        v = cfg.variation
        sparsity = (
            f"{dst.distribution.upper()} s {v.s_start:g}→{v.s_max:.3f}→{v.s_end:g} (warm-up "
            f"{v.warmup_frac:.0%}, ultra {v.ultra_frac:.0%}, {v.ramp})"
        )
    else:
        sparsity = f"{dst.distribution.upper()} s={cfg.level:.3f} constant"
    if dst.end_frac == 0.0 and cfg.schedule == "constant":
        growth = "fixed masks"
    else:
        growth = "RigL" if dst.grow == "gradient" else "SET"
        if dst.grow_mix_ratio is not None:
            growth += f" + mixed {dst.grow_mix_ratio:g}:1"
        growth = f"ΔT={dst.interval}, {growth}"
        if dst.end_frac < 1.0:
            growth += f" until {dst.end_frac:.0%}"
    attention = "dense attention"
    if cfg.hsa is not None:
        start, end = plan.window
        attention = f"HSA {cfg.hsa.pattern} w={cfg.hsa.stride} steps {start}-{end}"
    return f"{sparsity}; {growth}; {attention}"


def mst_logs(curves: pd.DataFrame) -> pd.DataFrame:
    """The DST/HSA/MST fields of every logged step (``StudyRuns.curves``; NaN where absent)."""
    frame = curves.reindex(columns=["variant", "seed", *LOG_COLUMNS])
    numeric = [c for c in LOG_COLUMNS if c not in ("mst_phase", "mst_knob", "dst_update", "hsa_on")]
    return frame.astype({c: float for c in numeric} | {"seed": int, "step": int})


def update_stats(logs: pd.DataFrame) -> pd.DataFrame:
    """One row per (variant, seed, mask update): pruned / grown fractions and churn.

    The loop logs the latest update's numbers on every logged step; an update shows up in the
    first logged row after it (so every update is seen when log_every <= ΔT).
    """
    rows = logs.dropna(subset=["dst_last_update_step"])
    rows = rows[rows["dst_last_update_step"] >= 0]
    keep = ["variant", "seed", "dst_last_update_step"]
    first = rows.sort_values("step").drop_duplicates(keep)
    out = first[[*keep, "dst_pruned_frac", "dst_grown_frac", "dst_mask_churn", "dst_sparsity"]]
    return out.rename(columns={"dst_last_update_step": "update_step"}).reset_index(drop=True)
