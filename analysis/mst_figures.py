"""MST figures (mst.md §7), each as PNG + PDF + the plotted numbers as CSV.

- mst_fig_sparsity_schedule: MST's target sparsity (phases shaded), the realised mask and
  per-layer-type sparsity, attention density; beside it every sparse variant's target
- mst_fig_loss_curves: val loss (dense attention) vs step and vs cumulative training FLOPs
- mst_fig_flops_vs_ppl: final val perplexity vs training FLOPs relative to dense
- mst_fig_drop_grow: per mask update, fractions pruned and grown, mask churn, density
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.mst_runs import (
    DENSE,
    KINDS,
    MST,
    mst_logs,
    ordered_variants,
    schedule_frame,
    update_stats,
)
from analysis.mst_tables import main_table
from analysis.run_specs import RunSpec
from analysis.study_runs import StudyRuns

PHASE_COLORS = {"warmup": "tab:orange", "ultra": "tab:purple", "restoration": "tab:green"}


def _style(variant: str) -> dict:
    if variant == DENSE:
        return {"color": "black", "linestyle": "--"}
    return {"linewidth": 2.2} if variant == MST else {}


def schedule_data(specs: dict[str, RunSpec], logs: pd.DataFrame) -> pd.DataFrame:
    """Planned target sparsity and attention density of every sparse variant (source=plan),
    and MST's logged mask sparsity and per-kind weight sparsity (source=logged, lowest seed)."""
    plans = [schedule_frame(specs[v]).assign(source="plan") for v in ordered_variants(specs)]
    plans = [p for p in plans if not p.empty]
    rows = logs[logs["variant"] == MST]
    rows = rows[rows["seed"] == rows["seed"].min()] if len(rows) else rows
    logged = pd.DataFrame(
        {"variant": MST, "step": rows["step"], "source": "logged"}
        | {"mask_sparsity": rows["dst_sparsity"]}
        | {f"sparsity_{k}": rows[f"sparsity_by_kind/{k}"] for k in KINDS}
    )
    return pd.concat([*plans, logged], ignore_index=True)


def _shade_phases(ax, plan: pd.DataFrame) -> None:
    for phase, color in PHASE_COLORS.items():
        steps = plan.loc[plan["phase"] == phase, "step"]
        if len(steps):
            ax.axvspan(steps.min(), steps.max() + 1, color=color, alpha=0.08, label=phase)


def plot_schedule(data: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(12, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    plans = data[data["source"] == "plan"]
    mst = plans[plans["variant"] == MST]
    if len(mst):
        _shade_phases(left, mst)
        left.step(mst["step"], mst["target_sparsity"], where="post", color="black", label="target")
        attn = left.twinx()
        attn.step(mst["step"], mst["attn_density"], where="post", color="tab:red", alpha=0.7)
        attn.set_ylabel("attention density (HSA)", color="tab:red")
        attn.set_ylim(0, 1.05)
    logged = data[data["source"] == "logged"].sort_values("step")
    if len(logged):
        left.plot(logged["step"], logged["mask_sparsity"], ".", color="tab:blue", label="masks")
        for kind in KINDS:
            left.plot(logged["step"], logged[f"sparsity_{kind}"], linewidth=0.8, label=kind)
    left.set(xlabel="step", ylabel="weight sparsity", ylim=(0, 1.02), title="MST schedule")
    left.legend(fontsize=7, loc="lower center", ncol=3)
    for variant in ordered_variants(plans["variant"].unique()):
        part = plans[plans["variant"] == variant]
        right.step(part["step"], part["target_sparsity"], where="post", label=variant,
                   **_style(variant))  # fmt: skip
    right.set(xlabel="step", title="target sparsity of every sparse variant")
    if right.has_data():
        right.legend(fontsize=8)
    return fig


def loss_curve_data(logs: pd.DataFrame) -> pd.DataFrame:
    """Eval rows: mean over seeds of val loss and cumulative FLOPs per (variant, step)."""
    evals = logs.dropna(subset=["val_loss"])
    grouped = evals.groupby(["variant", "step"])
    out = grouped.agg(
        val_loss_mean=("val_loss", "mean"),
        flops_cum=("flops_cum", "mean"),
        n_seeds=("seed", "nunique"),
    )
    return out.reset_index()


def plot_loss_curves(data: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(11, 4), layout="constrained")
    by_step, by_flops = fig.subplots(1, 2, sharey=True)
    for variant in ordered_variants(data["variant"].unique()):
        part = data[data["variant"] == variant].sort_values("step")
        by_step.plot(part["step"], part["val_loss_mean"], marker=".", label=variant,
                     **_style(variant))  # fmt: skip
        by_flops.plot(part["flops_cum"], part["val_loss_mean"], marker=".", **_style(variant))
    by_step.set(xlabel="step", ylabel="val loss (dense attention, mean over seeds)")
    by_flops.set(xlabel="cumulative training FLOPs (ledger)", xscale="log")
    if by_step.has_data():
        by_step.legend(fontsize=8)
    return fig


def flops_ppl_data(main: pd.DataFrame) -> pd.DataFrame:
    cols = ["variant", "flops_rel", "val_ppl_mean", "val_ppl_ci95", "val_ppl_n"]
    return main[cols].dropna(subset=["flops_rel", "val_ppl_mean"])


def plot_flops_vs_ppl(data: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(6, 4.2), layout="constrained")
    ax = fig.subplots()
    for i, row in enumerate(data.itertuples(index=False)):
        err = row.val_ppl_ci95 if np.isfinite(row.val_ppl_ci95) else None
        style = _style(row.variant)
        ax.errorbar(row.flops_rel, row.val_ppl_mean, yerr=err, fmt="o", capsize=3,
                    color=style.get("color"), label=row.variant)  # fmt: skip
        # variants at equal FLOPs share an x: stagger the labels so they stay readable
        ax.annotate(row.variant, (row.flops_rel, row.val_ppl_mean), fontsize=7,
                    xytext=(6, 6 - 8 * (i % 3)), textcoords="offset points")  # fmt: skip
    ax.set(
        xscale="log",
        xlabel="training FLOPs relative to dense (ledger)",
        ylabel="final val perplexity (mean ± 95 % CI)",
    )
    return fig


def drop_grow_data(logs: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds, per (variant, update step), of the update's fractions and density."""
    stats = update_stats(logs)
    stats["density"] = 1.0 - stats["dst_sparsity"]
    cols = ["dst_pruned_frac", "dst_grown_frac", "dst_mask_churn", "density"]
    return stats.groupby(["variant", "update_step"], as_index=False)[cols].mean()


def plot_drop_grow(data: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(11, 7), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True).ravel()
    panels = [
        ("dst_pruned_frac", "pruned / active before the update"),
        ("dst_grown_frac", "grown / active before the update"),
        ("dst_mask_churn", "mask churn: changed / (active before + after)"),
        ("density", "weight density after the update"),
    ]
    for ax, (col, title) in zip(axes, panels, strict=True):
        for variant in ordered_variants(data["variant"].unique()):
            part = data[data["variant"] == variant].sort_values("update_step")
            ax.plot(part["update_step"], part[col], marker=".", label=variant, **_style(variant))
        ax.set(title=title, xlabel="update step")
    if axes[0].has_data():
        axes[0].legend(fontsize=8)
    return fig


def make_figures(frame: pd.DataFrame, runs: StudyRuns) -> dict[str, tuple]:
    specs, logs = runs.specs, mst_logs(runs.curves)
    figures = {
        "mst_fig_sparsity_schedule": (schedule_data(specs, logs), plot_schedule),
        "mst_fig_loss_curves": (loss_curve_data(logs), plot_loss_curves),
        "mst_fig_flops_vs_ppl": (flops_ppl_data(main_table(frame, specs)), plot_flops_vs_ppl),
        "mst_fig_drop_grow": (drop_grow_data(logs), plot_drop_grow),
    }
    return {stem: (plot(data), data) for stem, (data, plot) in figures.items()}
