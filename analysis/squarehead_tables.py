"""SquareHead tables from ``tables/runs.csv``: scores per pruner x sparsity x loss, and the
held-out loss gap to the dense teacher right after pruning and after fine-tuning.
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.squarehead_runs import (
    LOSS_LABELS,
    LOSS_ORDER,
    PRUNER_LABELS,
)
from analysis.stats import format_mean_ci, summarize
from analysis.study_runs import StudyRuns

KEYS = ["pruner", "target", "sparsity", "loss"]
SCORES = {  # column in runs.csv -> shown name; BLEU & co. come from lm-eval
    "bleu": "BLEU",
    "final_val_loss": "val CE after FT",
    "pruned_val_loss": "val CE after pruning",
    "inference_flops_ratio": "inference FLOPs, dense / sparse",
}


GAPS = {
    "damage": "val CE − teacher's, after pruning",
    "gap": "val CE − teacher's, after FT",
}


def gaps(runs: pd.DataFrame) -> pd.DataFrame:
    """Val CE above the dense teacher's (same batches): after pruning, and after fine-tuning.

    A share "recovered" would divide by the pruning damage, which is ~0 at low sparsity; the
    two gaps say the same without blowing up. A negative gap after FT means the student,
    trained for more steps than the teacher, passed it.
    """
    return runs.assign(
        damage=runs["pruned_val_loss"] - runs["dense_val_loss"],
        gap=runs["final_val_loss"] - runs["dense_val_loss"],
    )


def _order(frame: pd.DataFrame) -> pd.DataFrame:
    ranks = {
        "loss": {loss: i for i, loss in enumerate(("dense", *LOSS_ORDER))},
        "pruner": {p: i for i, p in enumerate(("none", "magnitude", "sparsegpt", "gradual"))},
    }
    return frame.sort_values(
        ["pruner", "sparsity", "loss"], key=lambda c: c.map(ranks[c.name]) if c.name in ranks else c
    ).reset_index(drop=True)


def main_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (pruner, target, loss): mean, CI and n over seeds of each score."""
    out = None
    for column in SCORES:
        if column not in runs:
            continue
        stats = summarize(runs.dropna(subset=[column]), KEYS, column).rename(
            columns={"mean": f"{column}_mean", "ci95": f"{column}_ci95", "n": f"{column}_n"}
        )
        out = stats if out is None else out.merge(stats, on=KEYS, how="outer")
    return _order(out)


def gap_table(runs: pd.DataFrame) -> pd.DataFrame:
    sparse = gaps(runs[runs["loss"] != "dense"])
    out = None
    for column in GAPS:
        stats = summarize(sparse.dropna(subset=[column]), KEYS, column).rename(
            columns={"mean": f"{column}_mean", "ci95": f"{column}_ci95", "n": f"{column}_n"}
        )
        out = stats if out is None else out.merge(stats, on=KEYS, how="outer")
    return _order(out)


def _shown(table: pd.DataFrame, columns: dict[str, str], digits: int = 2) -> pd.DataFrame:
    shown = pd.DataFrame(
        {
            "pruner": table["pruner"].map(lambda p: PRUNER_LABELS.get(p, "—")),
            "target": table["target"],
            "sparsity": table["sparsity"].map(lambda s: f"{s:.0%}"),
            "loss": table["loss"].map(LOSS_LABELS),
        }
    )
    for column, name in columns.items():
        if f"{column}_mean" not in table:
            continue
        n = table[f"{column}_n"]
        shown[name] = [
            format_mean_ci(m, c, 0 if math.isnan(k) else int(k), digits)
            for m, c, k in zip(table[f"{column}_mean"], table[f"{column}_ci95"], n, strict=True)
        ]
    return shown


def make_tables(frame: pd.DataFrame, runs: StudyRuns) -> dict[str, tuple]:
    """Both tables, from the study's runs table (``analysis.build runs``) alone."""
    main, gap = main_table(frame), gap_table(frame)
    return {
        "sqhead_table_main": (main, _shown(main, SCORES)),
        "sqhead_table_gap": (gap, _shown(gap, GAPS, digits=3)),
    }
