"""Comparison figure, as PNG + PDF + the plotted numbers as CSV.

- compare_fig_loss_vs_flops: val loss against cumulative training FLOPs (the run's own ledger,
  log x), one line per variant (mean over seeds at each eval, a 95 % band where there are two
  seeds or more), with the equal-FLOPs budget the table reads every curve at.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.compare_tables import DENSE, equal_flops_budget, ordered_variants, run_metrics
from analysis.stats import mean_ci
from analysis.study_runs import StudyRuns

COLUMNS = [
    "variant", "step", "flops_cum", "val_loss_mean", "val_loss_ci95", "n_seeds",
    "equal_flops_budget",
]  # fmt: skip


def loss_curve_data(curves: pd.DataFrame, budget: float) -> pd.DataFrame:
    """Per (variant, eval step): mean cumulative FLOPs and mean val loss over seeds, the val
    loss's 95 % half-width (NaN with one seed), and the equal-FLOPs budget."""
    evals = curves.dropna(subset=["val_loss", "flops_cum"])
    rows = []
    for (variant, step), group in evals.groupby(["variant", "step"], sort=True):
        mean, ci, n = mean_ci(group["val_loss"])
        rows.append([variant, step, float(group["flops_cum"].mean()), mean, ci, n, budget])
    return pd.DataFrame(rows, columns=COLUMNS)


def plot_loss_vs_flops(data: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for variant in ordered_variants(data["variant"].unique()):
        part = data[data["variant"] == variant].sort_values("flops_cum")
        style = {"color": "black", "linestyle": "--"} if variant == DENSE else {}
        (line,) = ax.plot(part["flops_cum"], part["val_loss_mean"], marker=".", label=variant,
                          **style)  # fmt: skip
        band = part.dropna(subset=["val_loss_ci95"])
        if len(band):
            mean, half = band["val_loss_mean"], band["val_loss_ci95"]
            ax.fill_between(band["flops_cum"], mean - half, mean + half,
                            color=line.get_color(), alpha=0.15, linewidth=0)  # fmt: skip
    budget = data["equal_flops_budget"].iloc[0] if len(data) else math.nan
    if np.isfinite(budget):
        ax.axvline(budget, color="grey", linestyle=":", label="equal-FLOPs budget")
    ax.set(
        xscale="log",
        xlabel="cumulative training FLOPs (the run's ledger)",
        ylabel="val loss (mean over seeds)",
        title="Val loss vs training FLOPs, each method at its own budget",
    )
    if ax.has_data():
        ax.legend(fontsize=8)
    return fig


def make_figures(frame: pd.DataFrame, runs: StudyRuns) -> dict[str, tuple]:
    data = loss_curve_data(runs.curves, equal_flops_budget(run_metrics(frame)))
    return {"compare_fig_loss_vs_flops": (plot_loss_vs_flops(data), data)}
