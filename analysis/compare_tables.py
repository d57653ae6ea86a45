"""Comparison table: dense, static sparse, RaPTr, RigL and MST, each at its own FLOP budget.

One row per variant (``results/compare/pretrain/<variant>_seed<seed>``), every column read
against ``dense`` of the same seed. Values come from the runs' files only: ``metrics.json``
(final val loss, the FLOP ledger's total, steps) and ``train_log.jsonl`` (eval records carry
``val_loss`` and ``flops_cum``, logged steps ``step_time_s``). Written as CSV (full precision)
and Markdown ("mean ± 95 % CI" over seeds).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from analysis import mst_runs, raptr_runs
from analysis.run_specs import RunSpec, in_order
from analysis.stats import cell, format_mean_ci, mean_ci_cells
from analysis.study_runs import StudyRuns
from analysis.variant_stats import variant_stats, zeroshot_accuracy

DENSE = "dense"
VARIANT_ORDER = (DENSE, "static", "raptr", "rigl", "mst")
PATH_METHODS = ("raptr", "stacking", "layer_drop")
# per-run columns summarised per variant (mean, ci95, n over seeds)
SUMMARISED = (
    "final_val_loss", "final_val_loss_delta", "flops_total", "flops_reduction",
    "loss_at_budget", "loss_at_budget_delta", "flops_to_dense", "flops_to_dense_rel",
    "step_time_s", "step_time_rel", "flops_per_step_rel",
)  # fmt: skip


def ordered_variants(names: Iterable[str]) -> list[str]:
    """The comparison study's variants in their canonical order; unknown ones after."""
    return in_order(names, VARIANT_ORDER)


def loss_at_flops(flops: np.ndarray, loss: np.ndarray, budget: float) -> float:
    """Val loss at ``budget`` training FLOPs: linear in log FLOPs between the two evals around
    it; NaN outside the evals' range (a curve is never extrapolated)."""
    keep = np.isfinite(flops) & np.isfinite(loss) & (flops > 0)
    x, y = np.log(flops[keep]), loss[keep]
    if x.size == 0 or not budget > 0:
        return math.nan
    order = np.argsort(x)
    x, y, b = x[order], y[order], math.log(budget)
    if b < x[0] - 1e-12 or b > x[-1] + 1e-12:
        return math.nan
    return float(np.interp(b, x, y))


def flops_to_reach(flops: np.ndarray, loss: np.ndarray, target: float) -> float:
    """Training FLOPs at which the val curve first reaches ``target`` (loss <= target): the
    crossing between the last eval above and the first at or below it, linear in log FLOPs;
    the first eval's FLOPs if it is already there; NaN if the curve never reaches it."""
    keep = np.isfinite(flops) & np.isfinite(loss) & (flops > 0)
    order = np.argsort(flops[keep])
    f, y = flops[keep][order], loss[keep][order]
    if not math.isfinite(target):
        return math.nan
    below = np.nonzero(y <= target)[0]
    if below.size == 0:
        return math.nan
    i = int(below[0])
    if i == 0:
        return float(f[0])
    share = (y[i - 1] - target) / (y[i - 1] - y[i])
    return float(math.exp(math.log(f[i - 1]) + share * (math.log(f[i]) - math.log(f[i - 1]))))


def paired_with_dense(runs: pd.DataFrame, column: str, how: str) -> pd.Series:
    """Per run: ``column`` over (``how="ratio"``) or minus (``"delta"``) dense's value of the
    same seed; NaN where that seed has no dense run."""
    dense = runs[runs["variant"] == DENSE].set_index("seed")[column]
    reference = runs["seed"].map(dense)
    if how == "ratio":
        return runs[column] / reference
    if how == "delta":
        return runs[column] - reference
    raise ValueError(f"how={how!r}: use 'ratio' or 'delta'")


def run_metrics(frame: pd.DataFrame) -> pd.DataFrame:
    """Index (variant, seed): each pre-training run's final val loss, ledger total and steps."""
    rows = frame[frame["stage"] == "pretrain"]
    wide = rows.pivot_table(index=["variant", "seed"], columns="metric", values="value")
    return wide.reindex(columns=["final_val_loss", "flops_total", "steps"])


def equal_flops_budget(metrics: pd.DataFrame) -> float:
    """The smallest total training FLOPs any run reached: a budget every curve covers."""
    totals = metrics["flops_total"].dropna()
    return float(totals.min()) if len(totals) else math.nan


def _curve(points: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return points["flops_cum"].to_numpy(float), points["val_loss"].to_numpy(float)


def run_table(frame: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """One row per (variant, seed): the run's own numbers and its readings against dense.

    ``budget`` is the smallest total training FLOPs any run reached, so every curve covers it;
    ``step_time_s`` is the median of the run's logged step times (robust to the odd slow step).
    """
    metrics = run_metrics(frame)
    budget, runs = equal_flops_budget(metrics), metrics.reset_index()
    evals = curves.dropna(subset=["val_loss", "flops_cum"]).sort_values("step")
    by_run = {key: part for key, part in evals.groupby(["variant", "seed"])}
    times = curves.groupby(["variant", "seed"])["step_time_s"].median()
    dense_final = runs[runs["variant"] == DENSE].set_index("seed")["final_val_loss"]
    at_budget, to_dense = [], []
    for variant, seed in runs[["variant", "seed"]].itertuples(index=False):
        points = by_run.get((variant, seed))
        if points is None:
            at_budget.append(math.nan)
            to_dense.append(math.nan)
            continue
        at_budget.append(loss_at_flops(*_curve(points), budget))
        to_dense.append(flops_to_reach(*_curve(points), dense_final.get(seed, math.nan)))
    runs["budget"] = budget
    runs["loss_at_budget"] = at_budget
    runs["flops_to_dense"] = to_dense
    runs["flops_per_step"] = runs["flops_total"] / runs["steps"]
    keys = pd.MultiIndex.from_frame(runs[["variant", "seed"]])
    runs["step_time_s"] = times.reindex(keys).to_numpy()
    runs["final_val_loss_delta"] = paired_with_dense(runs, "final_val_loss", "delta")
    runs["loss_at_budget_delta"] = paired_with_dense(runs, "loss_at_budget", "delta")
    runs["flops_reduction"] = 1.0 / paired_with_dense(runs, "flops_total", "ratio")
    runs["flops_to_dense_rel"] = runs["flops_to_dense"] / runs["seed"].map(
        runs[runs["variant"] == DENSE].set_index("seed")["flops_total"]
    )
    runs["step_time_rel"] = paired_with_dense(runs, "step_time_s", "ratio")
    runs["flops_per_step_rel"] = paired_with_dense(runs, "flops_per_step", "ratio")
    return runs


def labels_from_specs(specs: dict[str, RunSpec]) -> dict[str, tuple[str, str]]:
    """variant -> (method name, what it trains in one line), from the variants' run specs
    (their runs' config.yaml and, for a solved MST budget, the knob its job logged), wherever
    they were read from."""
    labels = {}
    for variant, spec in specs.items():
        if mst_runs.has_masks(spec):
            text = mst_runs.schedule_label(spec)
        elif spec.method_name in PATH_METHODS:
            text = raptr_runs.schedule_label(spec)
        else:
            text = f"dense, {spec.model.get('n_layer', '?')} layers"
        labels[variant] = (spec.method_name, text)
    return labels


def main_table(
    frame: pd.DataFrame, curves: pd.DataFrame, labels: dict[str, tuple[str, str]] | None = None
) -> pd.DataFrame:
    """Rows variant: mean / ci95 / n over seeds of every per-run column (paired with dense of
    the same seed where it is a delta or a ratio), the equal-FLOPs budget, seeds that reached
    dense's final loss, and the mean zero-shot accuracy where the study scored any."""
    runs = run_table(frame, curves)
    parts = [
        variant_stats(runs[["variant", "seed", col]].rename(columns={col: "value"}), col)
        for col in SUMMARISED
    ]
    table = pd.concat(parts, axis=1)
    table["seeds"] = runs.groupby("variant")["seed"].nunique()
    table["budget"] = runs["budget"].iloc[0] if len(runs) else math.nan
    acc = zeroshot_accuracy(frame)
    if len(acc):
        table = table.join(variant_stats(acc, "zeroshot_acc"), how="left")
    labels = labels or {}
    table["method"] = [labels.get(v, ("", ""))[0] for v in table.index]
    table["schedule"] = [labels.get(v, ("", ""))[1] for v in table.index]
    table = table.reindex(ordered_variants(table.index))
    return table.rename_axis("variant").reset_index()


def _paired(table: pd.DataFrame, prefix: str, digits: int) -> list[str]:
    """A signed paired difference: ``+0.271 ± 0.050``, ``+0.271 (n=1)``; dense: reference."""
    cols = ["variant", f"{prefix}_mean", f"{prefix}_ci95", f"{prefix}_n"]
    shown = []
    for variant, mean, ci, n in table[cols].itertuples(index=False):
        if variant == DENSE:
            shown.append("reference")
        elif pd.isna(mean):
            shown.append("–")
        elif pd.isna(ci):
            shown.append(f"{mean:+.{digits}f} (n={0 if pd.isna(n) else int(n)})")
        else:
            shown.append(f"{mean:+.{digits}f} ± {ci:.{digits}f}")
    return shown


def _reached(table: pd.DataFrame) -> list[str]:
    """``2.519e+11 FLOPs, 0.631× ± 0.010 dense's (3/3 seeds)`` over the seeds that reached
    dense's final loss; ``not reached (0/3 seeds)`` when none did."""
    out = []
    for row in table.itertuples(index=False):
        n = 0 if pd.isna(row.flops_to_dense_n) else int(row.flops_to_dense_n)
        if n == 0:
            out.append(f"not reached (0/{row.seeds:.0f} seeds)")
            continue
        rel = format_mean_ci(row.flops_to_dense_rel_mean, row.flops_to_dense_rel_ci95, n, 3)
        rel = rel.replace(" ", "× ", 1) if " ± " in rel else rel.split(" ")[0] + "×"
        out.append(f"{row.flops_to_dense_mean:.3e}, {rel} dense's ({n}/{row.seeds:.0f} seeds)")
    return out


def main_markdown(table: pd.DataFrame) -> pd.DataFrame:
    budget = table["budget"].iloc[0] if len(table) else math.nan
    shown = pd.DataFrame(
        {
            "variant": table["variant"],
            "schedule": table["schedule"],
            "final val loss": mean_ci_cells(table, "final_val_loss", 3),
            "Δ vs dense (paired)": _paired(table, "final_val_loss_delta", 3),
            "train FLOPs (ledger)": table["flops_total_mean"].map(cell("{:.3e}")),
            "FLOP reduction vs dense": mean_ci_cells(table, "flops_reduction", 3, "×"),
            f"val loss at {budget:.3e} FLOPs": mean_ci_cells(table, "loss_at_budget", 3),
            "Δ vs dense at equal FLOPs": _paired(table, "loss_at_budget_delta", 3),
            "FLOPs to reach dense's final loss": _reached(table),
            "step time vs dense (measured)": mean_ci_cells(table, "step_time_rel", 2, "×"),
            "FLOPs per step vs dense (ledger)": table["flops_per_step_rel_mean"].map(
                cell("{:.3f}×")
            ),
        }
    )
    if "zeroshot_acc_mean" in table:
        shown["zero-shot acc"] = mean_ci_cells(table, "zeroshot_acc", 4)
    return shown


def make_tables(frame: pd.DataFrame, runs: StudyRuns) -> dict[str, tuple]:
    """The comparison table from the study's runs table (``analysis.build runs``) and runs."""
    main = main_table(frame, runs.curves, labels_from_specs(runs.specs))
    return {"compare_table_main": (main, main_markdown(main))}
