"""SquareHead figures (squarehead.md §5): score vs sparsity, loss curves, layer-wise error."""

from __future__ import annotations

import json

import pandas as pd
from matplotlib.figure import Figure

from analysis.squarehead_runs import (
    LOSS_LABELS,
    LOSS_ORDER,
    PRUNER_LABELS,
)
from analysis.stats import summarize
from analysis.study_runs import StudyRuns

COLORS = {"ce": "tab:blue", "ce_kl": "tab:orange", "ce_squarehead": "tab:green",
          "ce_kl_squarehead": "tab:red"}  # fmt: skip
STYLES = {"magnitude": "--", "sparsegpt": "-", "gradual": ":"}


def _losses(frame: pd.DataFrame) -> list[str]:
    return [loss for loss in LOSS_ORDER if loss in set(frame["loss"])]


def _pruners(frame: pd.DataFrame) -> list[str]:
    return sorted(set(frame["pruner"]) - {"none"})


def acc_vs_sparsity(runs: pd.DataFrame) -> tuple[Figure, pd.DataFrame]:
    """BLEU and val CE against sparsity: one line per loss and pruner, the teacher dashed."""
    panels = [c for c in ("bleu", "final_val_loss") if c in runs and runs[c].notna().any()]
    fig = Figure(figsize=(5.5 * len(panels), 4.2), layout="constrained")
    data = []
    for i, column in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        sparse = runs[(runs["loss"] != "dense") & runs["target"].str.match(r"^\d")]
        for pruner in _pruners(sparse):
            for loss in _losses(sparse):
                cell = sparse[(sparse["pruner"] == pruner) & (sparse["loss"] == loss)]
                stats = summarize(cell.dropna(subset=[column]), ["sparsity"], column)
                if stats.empty:
                    continue
                ax.errorbar(
                    stats["sparsity"] * 100, stats["mean"], yerr=stats["ci95"].fillna(0),
                    color=COLORS[loss], linestyle=STYLES[pruner], marker="o", capsize=3,
                    label=f"{PRUNER_LABELS[pruner]}, {LOSS_LABELS[loss]}",
                )  # fmt: skip
                data.append(stats.assign(metric=column, pruner=pruner, loss=loss))
        dense = runs.loc[runs["loss"] == "dense", column].dropna()
        if not dense.empty:
            ax.axhline(dense.mean(), color="black", linestyle=":", label="dense teacher")
            data.append(pd.DataFrame([{"metric": column, "loss": "dense", "sparsity": 0.0,
                                       "mean": dense.mean(), "n": len(dense)}]))  # fmt: skip
        ax.set_xlabel("weight sparsity of the block linears (%)")
        ax.set_ylabel({"bleu": "E2E BLEU (lm-eval)", "final_val_loss": "val CE (nats)"}[column])
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7)
    fig.suptitle("Sparse fine-tuning: quality vs sparsity per loss and pruner")
    return fig, pd.concat(data, ignore_index=True)


def _highest(runs: pd.DataFrame) -> float:
    unstructured = runs[(runs["loss"] != "dense") & runs["target"].str.match(r"^\d")]
    return float(unstructured["sparsity"].max())


def loss_curves(runs: pd.DataFrame, curves: pd.DataFrame) -> tuple[Figure, pd.DataFrame]:
    """Training CE per step at the highest sparsity: does the loss matter to the task loss?"""
    top = _highest(runs)
    target = runs.loc[(runs["sparsity"] == top) & (runs["loss"] != "dense"), "target"].iloc[0]
    cells = curves[curves["target"].astype(str) == str(target)]
    pruners = _pruners(cells) or ["sparsegpt"]
    fig = Figure(figsize=(5.5 * len(pruners), 4.2), layout="constrained")
    for i, pruner in enumerate(pruners):
        ax = fig.add_subplot(1, len(pruners), i + 1)
        for loss in _losses(cells):
            cell = cells[(cells["pruner"] == pruner) & (cells["loss"] == loss)]
            mean = cell.groupby("step")["loss_ce"].mean()
            ax.plot(mean.index, mean.values, color=COLORS[loss], label=LOSS_LABELS[loss])
        ax.set_title(f"{PRUNER_LABELS.get(pruner, pruner)}, {top:.0%} sparse")
        ax.set_xlabel("fine-tuning step")
        ax.set_ylabel("train CE on completions (nats)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig, cells


def layerwise_error(runs: pd.DataFrame) -> tuple[Figure, pd.DataFrame]:
    """Normalised per-layer error vs the teacher at the highest sparsity, before and after FT."""
    top = _highest(runs)
    cells = runs[(runs["sparsity"] == top) & (runs["loss"] != "dense")]
    pruners = _pruners(cells)
    fig = Figure(figsize=(5.5 * len(pruners), 4.2), layout="constrained")
    rows = []
    for i, pruner in enumerate(pruners):
        ax = fig.add_subplot(1, len(pruners), i + 1)
        cell = cells[cells["pruner"] == pruner]
        series = [("after pruning", "layerwise_error_pruned", cell.head(1), "gray")]
        series += [
            (f"after FT, {LOSS_LABELS[loss]}", "layerwise_error_final",
             cell[cell["loss"] == loss], COLORS[loss])
            for loss in _losses(cell)
        ]  # fmt: skip
        for label, column, frame, color in series:
            values = [json.loads(v) for v in frame[column] if isinstance(v, str) and v != "null"]
            if not values:
                continue
            mean = pd.DataFrame(values).mean(axis=0)
            layers = list(range(1, len(mean) + 1))
            ax.plot(layers, mean.values, marker="o", color=color, label=label)
            rows += [{"pruner": pruner, "series": label, "layer": k, "error": e}
                     for k, e in zip(layers, mean.values, strict=True)]  # fmt: skip
        ax.set_yscale("log")
        ax.set_xticks(layers)
        ax.set_title(f"{PRUNER_LABELS.get(pruner, pruner)}, {top:.0%} sparse")
        ax.set_xlabel("block (hidden state after it)")
        if i == 0:
            ax.set_ylabel("mean (h_S − h_T)² / mean h_T²  (val tokens)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig, pd.DataFrame(rows)


def make_figures(runs: pd.DataFrame, study_runs: StudyRuns) -> dict[str, tuple]:
    curves = study_runs.curves
    return {
        "sqhead_fig_acc_vs_sparsity": acc_vs_sparsity(runs),
        "sqhead_fig_loss_curves": loss_curves(runs, curves),
        "sqhead_fig_layerwise_error": layerwise_error(runs),
    }
