"""RaPTr figures (raptr.md §7), each as PNG + PDF + the plotted numbers as CSV.

- raptr_fig_loss_vs_flops: full-model val loss vs cumulative training FLOPs, every variant
- raptr_fig_loss_vs_steps_transitions: sampled train loss and full-model val loss vs step,
  RaPTr with and without scaling, stage boundaries marked, one zoom per boundary
- raptr_fig_ablation: final val loss of the RaPTr variants (fixed layers x scaling)
- raptr_fig_schedule: expected path length per step (schedule functions) and logged path_len
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.raptr_runs import (
    BASELINE,
    RAPTR,
    expected_path_len,
    ordered_variants,
    stage_boundaries,
)
from analysis.raptr_tables import main_table
from analysis.run_specs import RunSpec
from analysis.study_runs import StudyRuns

TRANSITION_VARIANTS = (RAPTR, "raptr_noscale")  # raptr.md §7.2: with and without scaling
BOUNDARY_STYLE = {"color": "grey", "linestyle": ":", "linewidth": 1}


def _by_step(curves: pd.DataFrame, value: str) -> pd.DataFrame:
    """Mean over seeds of ``value`` (and of flops_cum) per (variant, step); logged rows only."""
    rows = curves.dropna(subset=[value])
    grouped = rows.groupby(["variant", "step"])
    out = grouped.agg(
        flops_cum=("flops_cum", "mean"),
        **{f"{value}_mean": (value, "mean")},
        n_seeds=("seed", "nunique"),
    )
    return out.reset_index()


def _boundaries(specs: dict[str, RunSpec], variant: str = RAPTR) -> list[int]:
    return stage_boundaries(specs[variant]) if variant in specs else []


def loss_vs_flops_data(curves: pd.DataFrame, specs: dict[str, RunSpec]) -> pd.DataFrame:
    """Eval rows (val loss vs FLOPs) plus RaPTr's stage boundaries as FLOPs (kind column)."""
    evals = _by_step(curves, "val_loss").assign(kind="eval")
    raptr = curves[curves["variant"] == RAPTR].groupby("step")["flops_cum"].mean()
    marks = [
        {
            "variant": RAPTR,
            "step": b,
            "flops_cum": float(np.interp(b, raptr.index, raptr)),
            "kind": "stage_boundary",
        }
        for b in _boundaries(specs)
        if len(raptr)
    ]
    return pd.concat([evals, pd.DataFrame(marks)], ignore_index=True)


def plot_loss_vs_flops(data: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    evals = data[data["kind"] == "eval"]
    for variant in ordered_variants(evals["variant"].unique()):
        part = evals[evals["variant"] == variant].sort_values("step")
        style = {"color": "black", "linestyle": "--"} if variant == BASELINE else {}
        ax.plot(part["flops_cum"], part["val_loss_mean"], marker=".", label=variant, **style)
    for x in data.loc[data["kind"] == "stage_boundary", "flops_cum"]:
        ax.axvline(x, **BOUNDARY_STYLE)
    ax.set(
        xlabel="cumulative training FLOPs (ledger, all-inclusive)",
        ylabel="full-model val loss (mean over seeds)",
        title="dotted: RaPTr stage boundaries",
    )
    ax.legend(fontsize=8)
    return fig


def transitions_data(curves: pd.DataFrame) -> pd.DataFrame:
    """Per (variant, step): mean sampled train loss and full-model val loss over seeds."""
    keep = curves[curves["variant"].isin((*TRANSITION_VARIANTS, BASELINE))]
    train = _by_step(keep, "train_loss").drop(columns="flops_cum")
    val = _by_step(keep, "val_loss")[["variant", "step", "val_loss_mean"]]
    return train.merge(val, on=["variant", "step"], how="left")


def _plot_series(ax, data: pd.DataFrame, column: str, marker: str | None = None) -> None:
    for variant in ordered_variants(data["variant"].unique()):
        part = data[data["variant"] == variant].dropna(subset=[column]).sort_values("step")
        style = {"color": "black", "linestyle": "--"} if variant == BASELINE else {}
        ax.plot(part["step"], part[column], marker=marker, label=variant, **style)


def plot_transitions(data: pd.DataFrame, boundaries: list[int], steps: int) -> Figure:
    zooms = [f"z{i}" for i in range(len(boundaries))] or ["."]
    fig = Figure(figsize=(10, 6.4), layout="constrained")
    axes = fig.subplot_mosaic([["train"] * len(zooms), ["val"] * len(zooms), zooms])
    _plot_series(axes["train"], data, "train_loss_mean")
    _plot_series(axes["val"], data, "val_loss_mean", marker="o")
    axes["train"].set(ylabel="train loss\n(sampled path)")
    axes["val"].set(ylabel="val loss\n(full model)", xlabel="step")
    width = max(2, steps // 10)
    for i, b in enumerate(boundaries):
        ax = axes[f"z{i}"]
        near = data[(data["step"] > b - width) & (data["step"] <= b + width)]
        _plot_series(ax, near, "train_loss_mean", marker=".")
        ax.set(title=f"boundary at step {b}", xlabel="step")
        ax.axvline(b, **BOUNDARY_STYLE)
    for key in ("train", "val"):
        for b in boundaries:
            axes[key].axvline(b, **BOUNDARY_STYLE)
    axes["train"].legend(fontsize=8)
    return fig


def ablation_data(frame: pd.DataFrame, specs: dict[str, RunSpec]) -> pd.DataFrame:
    """Final val loss of every RaPTr variant with its fixed layers and scaling; baseline row."""
    main = main_table(frame, specs)
    rows = []
    for r in main.itertuples():
        spec = specs.get(r.variant)
        if spec is None or (spec.method_name != "raptr" and r.variant != BASELINE):
            continue
        fixed = ",".join(map(str, spec.method.get("fixed_layers") or [])) or "none"
        rows.append(
            {
                "variant": r.variant,
                "fixed_layers": fixed if r.variant != BASELINE else "",
                "scaling": spec.method.get("scaling", ""),
                "val_loss_mean": r.val_loss_mean,
                "val_loss_ci95": r.val_loss_ci95,
                "val_loss_n": r.val_loss_n,
                "block_flops_rel": r.block_flops_rel,
            }
        )
    return pd.DataFrame(rows)


def plot_ablation(data: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(6, 3.8), layout="constrained")
    ax = fig.subplots()
    bars = data[data["variant"] != BASELINE].reset_index(drop=True)
    labels = [f"I={r.fixed_layers}\n{r.scaling}" for r in bars.itertuples()]
    ax.bar(
        range(len(bars)),
        bars["val_loss_mean"],
        yerr=bars["val_loss_ci95"].fillna(0),
        capsize=4,
        color="tab:blue",
    )
    base = data[data["variant"] == BASELINE]
    if not base.empty:
        ax.axhline(base["val_loss_mean"].iloc[0], color="black", linestyle="--", label="baseline")
        ax.legend(fontsize=8)
    finite = data["val_loss_mean"].dropna()
    if not finite.empty:  # bars of losses that differ in the 2nd decimal: zoom on them
        pad = max(0.02, 0.5 * float(finite.max() - finite.min()))
        ax.set_ylim(float(finite.min()) - pad, float(finite.max()) + pad)
    ax.set_xticks(range(len(bars)), labels)
    ax.set(ylabel="final full-model val loss", title="RaPTr ablation (equal expected FLOPs)")
    return fig


def schedule_data(curves: pd.DataFrame, specs: dict[str, RunSpec]) -> pd.DataFrame:
    """Expected path length per step from the schedule; logged (sampled) path_len, seed mean."""
    rows = [
        pd.DataFrame(
            {
                "variant": v,
                "step": np.arange(spec.steps),
                "path_len": expected_path_len(spec),
                "source": "schedule",
            }
        )
        for v, spec in specs.items()
    ]
    logged = curves.dropna(subset=["path_len"]).groupby(["variant", "step"])["path_len"].mean()
    logged = logged.reset_index().assign(source="logged")
    logged["step"] = logged["step"] - 1  # a record of step s logs the path of step s-1
    return pd.concat([*rows, logged], ignore_index=True)


def _distinct_schedules(schedule: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Variants with the same expected schedule (RaPTr ablations) share one labelled line."""
    groups: dict[tuple, tuple[list[str], pd.DataFrame]] = {}
    for variant in ordered_variants(schedule["variant"].unique()):
        part = schedule[schedule["variant"] == variant].sort_values("step")
        key = tuple(np.round(part["path_len"].to_numpy(), 6))
        groups.setdefault(key, ([], part))[0].append(variant)
    return [(", ".join(names), part) for names, part in groups.values()]


def plot_schedule(data: pd.DataFrame, n_layer: int) -> Figure:
    fig = Figure(figsize=(11, 4), layout="constrained")
    planned, sampled = fig.subplots(1, 2, sharey=True)
    for label, part in _distinct_schedules(data[data["source"] == "schedule"]):
        planned.step(part["step"], part["path_len"], where="post", label=label)
    planned.set(
        xlabel="step",
        ylabel="executed blocks",
        ylim=(0, n_layer + 0.5),
        title="expected path length (schedule functions)",
    )
    planned.legend(fontsize=8)
    logged = data[data["source"] == "logged"]
    for variant in ordered_variants(logged["variant"].unique()):
        part = logged[logged["variant"] == variant]
        plan = data[(data["variant"] == variant) & (data["source"] == "schedule")]
        expected = part["step"].map(plan.set_index("step")["path_len"])
        if np.allclose(part["path_len"], expected):
            continue  # a deterministic depth (baseline, stacking) is already on the left
        dots = sampled.scatter(part["step"], part["path_len"], s=8, alpha=0.5, label=variant)
        sampled.step(plan["step"], plan["path_len"], where="post", color=dots.get_facecolor()[0])
    sampled.set(xlabel="step", title="sampled path_len (logged, mean over seeds) and expected")
    if sampled.has_data():
        sampled.legend(fontsize=8)
    return fig


def make_figures(frame: pd.DataFrame, runs: StudyRuns) -> dict[str, tuple]:
    specs, curves = runs.specs, runs.curves
    boundaries = _boundaries(specs)
    steps = max((s.steps for s in specs.values()), default=1)
    n_layer = max((s.n_layer for s in specs.values()), default=1)
    figures = {
        "raptr_fig_loss_vs_flops": (loss_vs_flops_data(curves, specs), plot_loss_vs_flops),
        "raptr_fig_loss_vs_steps_transitions": (
            transitions_data(curves),
            lambda d: plot_transitions(d, boundaries, steps),
        ),
        "raptr_fig_ablation": (ablation_data(frame, specs), plot_ablation),
        "raptr_fig_schedule": (schedule_data(curves, specs), lambda d: plot_schedule(d, n_layer)),
    }
    return {stem: (plot(data), data) for stem, (data, plot) in figures.items()}
