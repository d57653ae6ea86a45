"""RaPTr tables (raptr.md §6-7): main comparison, zero-shot scores, stage transitions.

The main table's rows are variants, compared with ``baseline`` (at the end of training and at
the same training FLOPs); the transitions table's are RaPTr's stage boundaries, per seed.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.raptr_runs import (
    BASELINE,
    block_flop_ratio,
    expected_path_len,
    ordered_variants,
    schedule_label,
    stage_boundaries,
)
from analysis.run_specs import RunSpec
from analysis.stats import cell, delta_cells, mean_ci_cells
from analysis.study_runs import StudyRuns
from analysis.variant_stats import (
    ACCURACY,
    loss_flops_wall,
    variant_stats,
    zeroshot_accuracy,
    zeroshot_markdown,
    zeroshot_table,
)
from analysis.zeroshot import zeroshot_scores

TRAIN_WINDOW = 0.1  # train-loss window each side of a boundary, as a fraction of the run


def baseline_loss_at(curves: pd.DataFrame, flops: pd.Series) -> pd.Series:
    """The baseline's val loss (mean over seeds, linear in FLOPs) at each of ``flops``."""
    evals = curves[(curves["variant"] == BASELINE)].dropna(subset=["val_loss"])
    if evals.empty:
        return pd.Series(math.nan, index=flops.index)
    mean = evals.groupby("step")[["flops_cum", "val_loss"]].mean().sort_values("flops_cum")
    inside = flops.between(mean["flops_cum"].iloc[0], mean["flops_cum"].iloc[-1])
    values = np.interp(flops, mean["flops_cum"], mean["val_loss"])
    return pd.Series(values, index=flops.index).where(inside)


def main_table(
    frame: pd.DataFrame, specs: dict[str, RunSpec], curves: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Rows variant: final full-model val loss, FLOPs (measured, vs baseline, block-only from
    the schedule), wall clock, mean zero-shot accuracy; with ``curves``, also the baseline's
    val loss at the variant's training FLOPs (an iso-FLOP comparison)."""
    table = loss_flops_wall(frame, BASELINE)
    table["block_flops_rel"] = [
        block_flop_ratio(specs[v]) if v in specs else math.nan for v in table.index
    ]
    if curves is not None:
        table["baseline_val_loss_at_flops"] = baseline_loss_at(curves, table["flops_total_mean"])
    table["schedule"] = [schedule_label(specs[v]) if v in specs else "" for v in table.index]
    table = table.join(variant_stats(zeroshot_accuracy(frame), "zeroshot_acc"), how="left")
    scores = zeroshot_scores(frame)
    table["zeroshot_tasks"] = scores.loc[scores["metric"].isin(ACCURACY), "task"].nunique()
    table = table.reindex(ordered_variants(table.index))
    return table.rename_axis("variant").reset_index()


def main_markdown(table: pd.DataFrame) -> pd.DataFrame:
    iso = table.get("baseline_val_loss_at_flops", pd.Series(math.nan, index=table.index))
    n_tasks = int(table["zeroshot_tasks"].max()) if len(table) else 0
    return pd.DataFrame(
        {
            "variant": table["variant"],
            "schedule": table["schedule"],
            "final val loss": mean_ci_cells(table, "val_loss", 3),
            "Δ vs baseline (paired)": delta_cells(table, "val_loss", BASELINE, 3),
            "baseline val loss at same FLOPs": iso.map(cell("{:.3f}")),
            "train FLOPs": table["flops_total_mean"].map(cell("{:.3e}")),
            "FLOPs vs baseline": table["flops_rel"].map(cell("{:.3f}")),
            "block FLOPs (schedule)": table["block_flops_rel"].map(cell("{:.3f}")),
            "wall clock (s)": mean_ci_cells(table, "wall_time_s", 1),
            "wall vs baseline": table["wall_rel"].map(cell("{:.2f}")),
            f"zero-shot acc ({n_tasks} tasks)": mean_ci_cells(table, "zeroshot_acc", 4),
        }
    )


def _window_mean(curve: pd.DataFrame, lo: float, hi: float) -> float:
    rows = curve[(curve["step"] > lo) & (curve["step"] <= hi)]["train_loss"].dropna()
    return float(rows.mean()) if len(rows) else math.nan


def _jump_row(curve: pd.DataFrame, spec: RunSpec, boundary: int) -> dict:
    """Full-model val loss at the last eval at or before ``boundary`` (steps done) and the first
    after it; mean sampled-subnetwork train loss in a window each side."""
    evals = curve.dropna(subset=["val_loss"])
    before, after = evals[evals["step"] <= boundary], evals[evals["step"] > boundary]
    lengths = expected_path_len(spec)
    width = max(1.0, TRAIN_WINDOW * spec.steps)
    row = {
        "boundary_step": boundary,
        "path_len_before": lengths[boundary - 1],
        "path_len_after": lengths[boundary],
        "val_before_step": before["step"].iloc[-1] if len(before) else np.nan,
        "val_before": before["val_loss"].iloc[-1] if len(before) else np.nan,
        "val_after_step": after["step"].iloc[0] if len(after) else np.nan,
        "val_after": after["val_loss"].iloc[0] if len(after) else np.nan,
        "train_before": _window_mean(curve, boundary - width, boundary),
        "train_after": _window_mean(curve, boundary, boundary + width),
    }
    row["val_jump"] = row["val_after"] - row["val_before"]
    row["train_jump"] = row["train_after"] - row["train_before"]
    return row


def _val_at(curve: pd.DataFrame, step: float) -> float:
    rows = curve[(curve["step"] == step) & curve["val_loss"].notna()]
    return float(rows["val_loss"].iloc[0]) if len(rows) else np.nan


def transitions_table(curves: pd.DataFrame, specs: dict[str, RunSpec]) -> pd.DataFrame:
    """One row per (variant with stages, seed, stage boundary): loss just before and after,
    and the baseline's own change between the same two evals of the same seed (a loss that
    is still falling fast makes a raw jump look small)."""
    baseline = {seed: c for seed, c in curves[curves["variant"] == BASELINE].groupby("seed")}
    rows = []
    for variant in ordered_variants(curves["variant"].unique()):
        spec = specs.get(variant)
        if spec is None:
            continue
        for seed, curve in curves[curves["variant"] == variant].groupby("seed"):
            curve = curve.sort_values("step")
            for boundary in stage_boundaries(spec):
                row = _jump_row(curve, spec, boundary)
                base = baseline.get(seed)
                row["baseline_val_change"] = (
                    _val_at(base, row["val_after_step"]) - _val_at(base, row["val_before_step"])
                    if base is not None
                    else np.nan
                )
                row["val_jump_vs_baseline"] = row["val_jump"] - row["baseline_val_change"]
                rows.append({"variant": variant, "method": spec.method_name, "seed": seed} | row)
    return pd.DataFrame(rows)


def transitions_markdown(table: pd.DataFrame) -> pd.DataFrame:
    if table.empty:
        return table
    return pd.DataFrame(
        {
            "variant": table["variant"],
            "seed": table["seed"].astype(str),
            "boundary (step)": table["boundary_step"].astype(int).astype(str),
            "path length": [
                f"{a:.2f} → {b:.2f}" for a, b in table[["path_len_before", "path_len_after"]].values
            ],
            "val loss before (step)": [
                f"{v:.3f} ({s:.0f})" for v, s in table[["val_before", "val_before_step"]].values
            ],
            "val loss after (step)": [
                f"{v:.3f} ({s:.0f})" for v, s in table[["val_after", "val_after_step"]].values
            ],
            "val jump": table["val_jump"].map(cell("{:+.3f}")),
            "baseline change": table["baseline_val_change"].map(cell("{:+.3f}")),
            "jump − baseline": table["val_jump_vs_baseline"].map(cell("{:+.3f}")),
            "train loss jump (window mean)": table["train_jump"].map(cell("{:+.3f}")),
        }
    )


def make_tables(frame: pd.DataFrame, runs: StudyRuns) -> dict[str, tuple]:
    """All three tables from the study's runs table (``analysis.build runs``) and its runs."""
    specs, curves = runs.specs, runs.curves
    main, zs = main_table(frame, specs, curves), zeroshot_table(frame, ordered_variants)
    trans = transitions_table(curves, specs)
    return {
        "raptr_table_main": (main, main_markdown(main)),
        "raptr_table_zeroshot": (zs, zeroshot_markdown(zs)),
        "raptr_table_transitions": (trans, transitions_markdown(trans)),
    }
