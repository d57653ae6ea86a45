"""MST tables (mst.md §6-7): main comparison, zero-shot scores, FLOP budget per variant.

Rows are variants, compared with ``dense``; each table is returned as its full-precision
numbers and a rounded Markdown view ("mean ± 95 % CI" over seeds).
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.mst_runs import DENSE, budget, ordered_variants, schedule_label
from analysis.run_specs import RunSpec
from analysis.stats import cell, delta_cells, mean_ci_cells
from analysis.study_runs import StudyRuns
from analysis.variant_stats import (
    loss_flops_wall,
    paired_delta,
    variant_stats,
    zeroshot_accuracy,
    zeroshot_markdown,
    zeroshot_table,
)
from analysis.zeroshot import zeroshot_scores


def main_table(frame: pd.DataFrame, specs: dict[str, RunSpec]) -> pd.DataFrame:
    """Rows variant: final val loss and perplexity (dense attention), paired Δ vs dense, the
    ledger's training FLOPs and their reduction vs dense, wall clock, zero-shot accuracy."""
    acc = zeroshot_accuracy(frame)
    table = loss_flops_wall(frame, DENSE, also=[("final_val_ppl", "val_ppl")])
    table["flops_reduction"] = 1.0 / table["flops_rel"]
    table = table.join(variant_stats(acc, "zeroshot_acc"), how="left")
    table = table.join(paired_delta(acc, DENSE).add_prefix("zeroshot_acc_"), how="left")
    table["zeroshot_tasks"] = zeroshot_scores(frame)["task"].nunique()
    table["schedule"] = [schedule_label(specs[v]) if v in specs else "" for v in table.index]
    table = table.reindex(ordered_variants(table.index))
    return table.rename_axis("variant").reset_index()


def main_markdown(table: pd.DataFrame) -> pd.DataFrame:
    n_tasks = int(table["zeroshot_tasks"].max()) if len(table) else 0
    return pd.DataFrame(
        {
            "variant": table["variant"],
            "final val loss": mean_ci_cells(table, "val_loss", 3),
            "Δ vs dense (paired)": delta_cells(table, "val_loss", DENSE, 3),
            "val perplexity": mean_ci_cells(table, "val_ppl", 1),
            "train FLOPs": table["flops_total_mean"].map(cell("{:.3e}")),
            "FLOP reduction vs dense": table["flops_reduction"].map(cell("{:.3f}×")),
            "wall clock (s)": mean_ci_cells(table, "wall_time_s", 1),
            "wall vs dense": table["wall_rel"].map(cell("{:.2f}")),
            f"zero-shot acc ({n_tasks} tasks)": mean_ci_cells(table, "zeroshot_acc", 4),
            "zero-shot Δ vs dense (pt)": delta_cells(table, "zeroshot_acc", DENSE, 2, scale=100.0),
        }
    )


def budget_table(frame: pd.DataFrame, specs: dict[str, RunSpec]) -> pd.DataFrame:
    """Rows variant: what each run's FLOP budget fixed (solved knob), the plan's reduction and
    the measured one, DST overhead, update and HSA steps, and the schedule in words."""
    measured = main_table(frame, specs).set_index("variant")["flops_reduction"]
    rows = []
    for variant in ordered_variants(specs):
        spec = specs[variant]
        row = budget(spec) | {"schedule": schedule_label(spec), "steps": spec.steps}
        row["measured_reduction"] = measured.get(variant, math.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def budget_markdown(table: pd.DataFrame) -> pd.DataFrame:
    def col(name: str) -> pd.Series:
        return table[name] if name in table else pd.Series(math.nan, index=table.index)

    pairs = zip(col("knob"), col("knob_value"), strict=True)
    knob = ["–" if pd.isna(v) else f"{k} = {v:.4f}" for k, v in pairs]
    return pd.DataFrame(
        {
            "variant": table["variant"],
            "schedule": table["schedule"],
            "solved knob": knob,
            "planned reduction": col("planned_reduction").map(cell("{:.3f}×")),
            "measured reduction": col("measured_reduction").map(cell("{:.3f}×")),
            "DST overhead (share of FLOPs)": col("dst_overhead_share").map(cell("{:.1%}")),
            "mask updates (no optimizer step)": col("updates").map(cell("{:.0f}")),
            "HSA steps": col("hsa_steps").map(cell("{:.0f}")),
            "HSA attention density": col("hsa_attn_density").map(cell("{:.3f}")),
        }
    )


def make_tables(frame: pd.DataFrame, runs: StudyRuns) -> dict[str, tuple]:
    """All three tables from the study's runs table (``analysis.build runs``) and its runs."""
    specs = runs.specs
    main, zero = main_table(frame, specs), zeroshot_table(frame, ordered_variants)
    spend = budget_table(frame, specs)
    return {
        "mst_table_main": (main, main_markdown(main)),
        "mst_table_zeroshot": (zero, zeroshot_markdown(zero)),
        "mst_table_budget": (spend, budget_markdown(spend)),
    }
