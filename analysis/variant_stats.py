"""Per-variant statistics shared by the variant studies (RaPTr, MST): one row per variant,
mean and CI over seeds, and differences to a reference variant paired on the seed."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import pandas as pd

from analysis.stats import mean_ci_cells, summarize
from analysis.verdicts import paired
from analysis.zeroshot import zeroshot_scores

ACCURACY = ("acc_norm", "acc")  # averaged into a main table's zero-shot score


def pretrain_metric(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The pre-training rows of one metric (variant, seed, value, ...)."""
    return frame[(frame["stage"] == "pretrain") & (frame["metric"] == metric)]


def final_loss(runs: pd.DataFrame, variant: str) -> pd.Series:
    """A variant's final (full-model) val loss by seed, for paired differences."""
    rows = pretrain_metric(runs, "final_val_loss")
    return rows[rows["variant"] == variant].groupby("seed")["value"].mean()


def variant_stats(rows: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """Index variant; columns ``<prefix>_mean``, ``_ci95``, ``_n`` over seeds."""
    out = summarize(rows, ["variant"]).set_index("variant")
    return out.rename(columns={c: f"{prefix}_{c}" for c in ("mean", "ci95", "n")})


def paired_delta(rows: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per variant: value − ``reference`` on the same seed, mean and 95 % CI over shared seeds."""
    by_seed = rows.pivot_table(index="seed", columns="variant", values="value")
    out = []
    for variant in by_seed.columns:
        if reference not in by_seed:
            mean = ci = math.nan
        else:
            delta = paired(by_seed[variant], by_seed[reference])
            mean, ci = delta.mean, delta.half
        out.append((variant, mean, ci))
    return pd.DataFrame(out, columns=["variant", "delta_mean", "delta_ci95"]).set_index("variant")


def loss_flops_wall(
    frame: pd.DataFrame, reference: str, also: Iterable[tuple[str, str]] = ()
) -> pd.DataFrame:
    """Index variant: final val loss over seeds and its difference to ``reference`` paired by
    seed, each ``(metric, prefix)`` of ``also``, mean training FLOPs and wall clock, and both
    relative to ``reference`` (``flops_rel``, ``wall_rel``): a variant study's main columns."""
    loss, wall = pretrain_metric(frame, "final_val_loss"), pretrain_metric(frame, "wall_time_s")
    flops = variant_stats(pretrain_metric(frame, "flops_total"), "flops_total")
    table = pd.concat(
        [
            variant_stats(loss, "val_loss"),
            paired_delta(loss, reference).add_prefix("val_loss_"),
            *[variant_stats(pretrain_metric(frame, metric), prefix) for metric, prefix in also],
            flops[["flops_total_mean"]],
            variant_stats(wall, "wall_time_s"),
        ],
        axis=1,
    )
    ref = table.loc[reference] if reference in table.index else None
    for col, of in (("flops_rel", "flops_total_mean"), ("wall_rel", "wall_time_s_mean")):
        table[col] = table[of] / ref[of] if ref is not None else math.nan
    return table


def zeroshot_accuracy(frame: pd.DataFrame) -> pd.DataFrame:
    """(variant, seed, value): the mean accuracy over the zero-shot tasks of each run."""
    scores = zeroshot_scores(frame)
    acc = scores[scores["metric"].isin(ACCURACY)]
    return acc.groupby(["variant", "seed"], as_index=False)["value"].mean()


def zeroshot_table(
    frame: pd.DataFrame, ordered: Callable[[Iterable[str]], list[str]]
) -> pd.DataFrame:
    """Rows variant (in the study's ``ordered`` order); mean/ci95/n of every zero-shot task's
    main metric."""
    scores = zeroshot_scores(frame)
    parts = [
        variant_stats(rows, f"{task}_{metric}")
        for (task, metric), rows in scores.groupby(["task", "metric"], sort=True)
    ]
    if not parts:
        return pd.DataFrame(columns=["variant"])
    table = pd.concat(parts, axis=1)
    return table.reindex(ordered(table.index)).rename_axis("variant").reset_index()


def zeroshot_markdown(table: pd.DataFrame) -> pd.DataFrame:
    shown = pd.DataFrame({"variant": table["variant"]})
    for col in [c.removesuffix("_mean") for c in table.columns if c.endswith("_mean")]:
        shown[col.replace("_", " ")] = mean_ci_cells(table, col, 2 if "perplexity" in col else 4)
    return shown


def variant_row(main: pd.DataFrame, variant: str) -> pd.Series | None:
    """A main table's row of ``variant``; None when the study has no such variant."""
    rows = main[main["variant"] == variant]
    return None if rows.empty else rows.iloc[0]


def loss_text(row: pd.Series) -> str:
    """A main-table row's final val loss as ``3.412 ± 0.020 (n=3)``."""
    ci = row["val_loss_ci95"]
    spread = f" ± {ci:.3f}" if math.isfinite(ci) else ""
    return f"{row['val_loss_mean']:.3f}{spread} (n={int(row['val_loss_n'])})"
