"""What each RaPTr-study variant ran, read back from its resolved ``config.yaml``.

The schedules (expected path length per step, stage boundaries) come from the same functions
the training hooks use (``sparselm.methods``), so the figures and the block-FLOP ratios show
the schedule the runs were built with, not a copy of it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from omegaconf import OmegaConf

from analysis.run_specs import RunSpec, in_order
from sparselm.cli.method_registry import METHODS, parse_method
from sparselm.methods.layer_drop import keep_probs
from sparselm.schedules import stage_starts

BASELINE, RAPTR = "baseline", "raptr"
VARIANT_ORDER = (
    BASELINE,
    RAPTR,
    "raptr_noscale",
    "raptr_nofixed",
    "raptr_nofixed_noscale",
    "stacking",
    "pld",
)
METHOD_NAMES = {"none": "standard", "raptr": "RaPTr", "stacking": "stacking", "layer_drop": "PLD"}


def ordered_variants(names: Iterable[str]) -> list[str]:
    """The RaPTr study's variants in their canonical order; unknown ones after."""
    return in_order(names, VARIANT_ORDER)


def _hook(spec: RunSpec):
    """The method's hook, built exactly as the pre-training job built it."""
    entry = METHODS[spec.method_name]
    cfg = parse_method(entry, OmegaConf.create(spec.method))
    return cfg, entry.from_depth(cfg, spec.n_layer, spec.steps)


def expected_path_len(spec: RunSpec) -> np.ndarray:
    """Expected executed blocks at every step 0..steps-1 (fixed layers included)."""
    name, steps = spec.method_name, range(spec.steps)
    entry = METHODS.get(name)
    if entry is None or entry.from_depth is None:
        return np.full(spec.steps, float(spec.n_layer))
    cfg, hook = _hook(spec)
    if name == "raptr":
        return np.array([hook.stage(t)[1].path_len for t in steps])
    if name == "stacking":
        return np.array([float(hook.depth(t)) for t in steps])
    if name == "layer_drop":
        run_cfg = hook.cfg  # the run's own γ (gamma_per_run resolved for its length)
        return np.array([sum(keep_probs(t, run_cfg, spec.n_layer)) for t in steps])
    raise ValueError(f"no schedule for method {name!r}")


def stage_boundaries(spec: RunSpec) -> list[int]:
    """First step of every stage after the first (RaPTr and stacking); [] for the others."""
    if spec.method_name not in ("raptr", "stacking"):
        return []
    _, hook = _hook(spec)
    starts = stage_starts(spec.steps, hook.stages)
    return sorted({s for s in starts[1:] if 0 < s < spec.steps})


def block_flop_ratio(spec: RunSpec) -> float:
    """Expected block FLOPs over the full model's (raptr.md §5, block-only convention)."""
    return float(expected_path_len(spec).mean() / spec.n_layer)


def schedule_label(spec: RunSpec) -> str:
    """``RaPTr 2-2.67-3.33-4 of 4, I=first,last, 1/p``: what the variant trains, in one line."""
    name = METHOD_NAMES.get(spec.method_name, spec.method_name)
    if spec.method_name == "raptr":
        _, hook = _hook(spec)
        lengths = "-".join(
            f"{s.path_len:g}" if s.path_len == int(s.path_len) else f"{s.path_len:.2f}"
            for s in hook.stages
        )
        fixed = ",".join(str(x) for x in spec.method.get("fixed_layers") or []) or "none"
        scale = "1/p" if spec.method.get("scaling") == "inverse_p" else "no scaling"
        return f"{name} {lengths} of {spec.n_layer}, fixed={fixed}, {scale}"
    if spec.method_name == "stacking":
        _, hook = _hook(spec)
        depths = "-".join(f"{s.path_len:g}" for s in hook.stages)
        return f"{name} {depths} of {spec.n_layer}"
    if spec.method_name == "layer_drop":
        _, hook = _hook(spec)  # γ as the run used it (gamma_per_run resolved for its length)
        return f"{name} θ̄={hook.cfg.theta_bar:g}, γ={hook.cfg.gamma:.4g}"
    return f"{name}, {spec.n_layer} layers"
