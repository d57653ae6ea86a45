"""SPDF figures (spdf.md §8), each as PNG + PDF + the plotted numbers as CSV.

- spdf_fig_flops_vs_metric: BLEU at fraction 1.0 vs total pre-training FLOPs, per task
- spdf_fig_rel_degradation: BLEU change vs dense, tasks ordered by size and by difficulty
- spdf_fig_pretrain_curves: pre-training validation loss vs tokens, per sparsity
- spdf_fig_drop_heatmap: relative BLEU drop over sparsity x fine-tuning fraction, per task
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from analysis.spdf_tables import (
    FULL,
    main_table,
    ordered_tasks,
    rel_drop_table,
    sparsity_label,
    task_name,
)
from analysis.study_runs import StudyRuns

DIFFICULTY_LABEL = "difficulty = dense model's fine-tuned val loss (f=1.0)"


def flops_vs_metric_data(frame: pd.DataFrame) -> pd.DataFrame:
    """Long form of the main table: task, sparsity, pretrain FLOPs, BLEU mean/ci95/n."""
    main = main_table(frame)
    rows = []
    for task in [c.removesuffix("_bleu_mean") for c in main.columns if c.endswith("_bleu_mean")]:
        part = main[["sparsity", "pretrain_flops_total"]].copy()
        part.insert(0, "task", task)
        for stat in ("mean", "ci95", "n"):
            part[f"bleu_{stat}"] = main[f"{task}_bleu_{stat}"]
        rows.append(part.dropna(subset=["pretrain_flops_total", "bleu_mean"]))
    columns = ["task", "sparsity", "pretrain_flops_total", "bleu_mean", "bleu_ci95", "bleu_n"]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=columns)


def plot_flops_vs_metric(data: pd.DataFrame) -> Figure:
    tasks = ordered_tasks(data["task"])
    fig = Figure(figsize=(4 * max(len(tasks), 1), 3.4), layout="constrained")
    axes = fig.subplots(1, max(len(tasks), 1), squeeze=False)[0]
    for ax, task in zip(axes, tasks, strict=False):
        part = data[data["task"] == task].sort_values("sparsity")
        ax.errorbar(
            part["pretrain_flops_total"],
            part["bleu_mean"],
            yerr=part["bleu_ci95"].fillna(0),
            marker="o",
            capsize=3,
        )
        for row in part.itertuples():
            ax.annotate(
                sparsity_label(row.sparsity),
                (row.pretrain_flops_total, row.bleu_mean),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
            )
        dense = part.loc[part["sparsity"] == 0, "bleu_mean"]
        if not dense.empty:
            ax.axhline(dense.iloc[0], linestyle="--", color="grey", label="dense")
            ax.legend(fontsize=8)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on a short range
        ticks = sorted(part["pretrain_flops_total"].dropna())
        ax.set_xticks(ticks, [f"{v:.2g}" for v in ticks], rotation=30)
        ax.set(title=task_name(task), xlabel="pre-training FLOPs", ylabel="BLEU (f=1.0)")
    return fig


def rel_degradation_data(frame: pd.DataFrame) -> pd.DataFrame:
    """Change vs dense (%, negative = worse) at f=1.0, with each task's size and difficulty."""
    drop = rel_drop_table(frame)
    drop = drop[drop["fraction"] == FULL]
    ft = frame[(frame["stage"] == "finetune") & (frame["fraction"] == FULL)]
    size = ft[ft["metric"] == "train_examples"].groupby("task")["value"].mean()
    val = ft[(ft["metric"] == "final_val_loss") & (ft["sparsity"] == 0)]
    difficulty = val.groupby("task")["value"].mean()
    return pd.DataFrame(
        {
            "task": drop["task"],
            "sparsity": drop["sparsity"],
            "rel_change_pct": -drop["rel_drop_pct"],
            "rel_change_ci95": drop["rel_drop_ci95"],
            "train_examples": drop["task"].map(size),
            "dense_ft_val_loss": drop["task"].map(difficulty),
        }
    ).reset_index(drop=True)


def _grouped_bars(ax, data: pd.DataFrame, order: list[str], xlabels: list[str]) -> None:
    levels = sorted(data["sparsity"].unique())
    width = 0.8 / max(len(levels), 1)
    for i, s in enumerate(levels):
        part = data[data["sparsity"] == s].set_index("task").reindex(order)
        x = np.arange(len(order)) + (i - (len(levels) - 1) / 2) * width
        ax.bar(
            x,
            part["rel_change_pct"],
            width,
            yerr=part["rel_change_ci95"].fillna(0),
            capsize=3,
            label=sparsity_label(s),
        )
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(order)), xlabels)
    ax.set_ylabel("BLEU change vs dense (%)")
    if levels:  # an empty legend only draws a warning
        ax.legend(title="sparsity", fontsize=8)


def plot_rel_degradation(data: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    by_size, by_difficulty = fig.subplots(1, 2)
    tasks = data.drop_duplicates("task").set_index("task")
    panels = (
        (by_size, "train_examples", "{:,.0f}", "fine-tuning train examples (f=1.0)"),
        (by_difficulty, "dense_ft_val_loss", "{:.3f}", DIFFICULTY_LABEL),
    )
    for ax, key, fmt, ordered_by in panels:
        order = tasks.sort_values(key, kind="stable").index.tolist()
        labels = [f"{task_name(t)}\n{fmt.format(tasks.at[t, key])}" for t in order]
        _grouped_bars(ax, data, order, labels)
        ax.set_xlabel(f"task, ordered by {ordered_by}")
    return fig


def pretrain_curves_data(curves: pd.DataFrame) -> pd.DataFrame:
    """Validation loss per (sparsity, tokens), mean over seeds; eval steps only."""
    curves = curves.dropna(subset=["val_loss"])
    grouped = curves.groupby(["sparsity", "tokens"])["val_loss"]
    out = grouped.agg(val_loss_mean="mean", n_seeds="count").reset_index()
    return out.sort_values(["sparsity", "tokens"], ignore_index=True)


def plot_pretrain_curves(data: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(5, 3.6), layout="constrained")
    ax = fig.subplots()
    for s, part in data.groupby("sparsity"):
        ax.plot(part["tokens"], part["val_loss_mean"], marker="o", label=sparsity_label(s))
    ax.set(xlabel="pre-training tokens", ylabel="validation loss (mean over seeds)")
    ax.legend(title="sparsity", fontsize=8)
    return fig


def drop_heatmap_data(frame: pd.DataFrame) -> pd.DataFrame:
    drop = rel_drop_table(frame)
    return drop[["task", "sparsity", "fraction", "rel_drop_pct", "n"]].reset_index(drop=True)


def plot_drop_heatmap(data: pd.DataFrame) -> Figure:
    tasks = ordered_tasks(data["task"])
    fig = Figure(figsize=(3.6 * max(len(tasks), 1), 3.2), layout="constrained")
    axes = fig.subplots(1, max(len(tasks), 1), squeeze=False)[0]
    finite = data["rel_drop_pct"].dropna()
    # one colour scale for all panels, so the same colour means the same drop everywhere
    vmax = float(finite.abs().max()) if not finite.empty else 1.0
    image = None
    for ax, task in zip(axes, tasks, strict=False):
        grid = data[data["task"] == task].pivot(
            index="sparsity", columns="fraction", values="rel_drop_pct"
        )
        image = ax.imshow(grid.to_numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
        for (i, j), value in np.ndenumerate(grid.to_numpy()):
            dark = not np.isnan(value) and abs(value) > 0.6 * vmax  # white text on dark cells
            ax.text(
                j,
                i,
                "–" if np.isnan(value) else f"{value:.1f}",
                ha="center",
                va="center",
                color="white" if dark else "black",
            )
        ax.set_xticks(range(grid.shape[1]), [f"{f:g}" for f in grid.columns])
        ax.set_yticks(range(grid.shape[0]), [sparsity_label(s) for s in grid.index])
        ax.set(title=task_name(task), xlabel="fine-tuning fraction", ylabel="sparsity")
    if image is not None:
        fig.colorbar(image, ax=list(axes), label="BLEU drop vs dense (%)")
    return fig


def make_figures(frame: pd.DataFrame, runs: StudyRuns) -> dict[str, tuple]:
    figures = {
        "spdf_fig_flops_vs_metric": (flops_vs_metric_data(frame), plot_flops_vs_metric),
        "spdf_fig_rel_degradation": (rel_degradation_data(frame), plot_rel_degradation),
        "spdf_fig_pretrain_curves": (pretrain_curves_data(runs.curves), plot_pretrain_curves),
        "spdf_fig_drop_heatmap": (drop_heatmap_data(frame), plot_drop_heatmap),
    }
    return {stem: (plot(data), data) for stem, (data, plot) in figures.items()}
