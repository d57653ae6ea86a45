"""SPDF tables (spdf.md §7): main comparison, zero-shot, and relative BLEU drop vs dense.

Rows are sparsity levels (and fine-tuning fractions), each cell "mean ± 95 % CI" over seeds
in the Markdown view.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd

from analysis.stats import cell, format_mean_ci, mean_ci_cells, summarize
from analysis.study_runs import StudyRuns
from analysis.zeroshot import ZEROSHOT_PREFERENCE, zeroshot_scores

NLG_TASKS = ("e2e", "webnlg", "dart")  # canonical column order (spdf.md §5.1)
TASK_NAMES = {"e2e": "E2E", "webnlg": "WebNLG", "dart": "DART"}
FULL = 1.0  # the fine-tuning fraction of the paper's main table
BLEU = "bleu"
PRETRAIN_METRICS = ("flops_total", "train_flops_per_token", "flops_reduction", "final_val_loss")


def sparsity_label(sparsity: float) -> str:
    return "dense" if sparsity == 0 else f"{sparsity * 100:g}%"


def task_name(task: str) -> str:
    return TASK_NAMES.get(task, task)


def ordered_tasks(tasks: Iterable[str]) -> list[str]:
    """The paper's tasks first, in the paper's order; anything else after, alphabetically."""
    found = set(tasks)
    return [t for t in NLG_TASKS if t in found] + sorted(found - set(NLG_TASKS))


def bleu_stats(frame: pd.DataFrame) -> pd.DataFrame:
    """BLEU over seeds per (task, fraction, sparsity): columns + mean, ci95, n."""
    rows = frame[(frame["stage"] == "eval_nlg") & (frame["metric"] == BLEU)]
    return summarize(rows, ["task", "fraction", "sparsity"])


def pretrain_stats(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (metric, sparsity) over seeds, for the pre-training metrics the main table shows."""
    rows = frame[(frame["stage"] == "pretrain") & frame["metric"].isin(PRETRAIN_METRICS)]
    return summarize(rows, ["metric", "sparsity"])


def _wide(stats: pd.DataFrame, prefix: str, keep: Sequence[str]) -> pd.DataFrame:
    out = stats.set_index("sparsity")[list(keep)]
    return out.rename(columns={c: f"{prefix}_{c}" for c in keep})


def main_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows sparsity; BLEU at fraction 1.0 per task; pre-training FLOPs and val loss."""
    bleu = bleu_stats(frame)
    bleu = bleu[bleu["fraction"] == FULL]
    pre = pretrain_stats(frame)
    parts = [
        _wide(bleu[bleu["task"] == t], f"{t}_bleu", ["mean", "ci95", "n"])
        for t in ordered_tasks(bleu["task"])
    ]
    for metric, name in (
        ("flops_total", "pretrain_flops_total"),
        ("train_flops_per_token", "train_flops_per_token"),
        ("flops_reduction", "flops_reduction"),
    ):
        parts.append(
            _wide(pre[pre["metric"] == metric], name, ["mean"]).rename(
                columns={f"{name}_mean": name}
            )
        )
    val = pre[pre["metric"] == "final_val_loss"]
    parts.append(_wide(val, "pretrain_val_loss", ["mean", "ci95", "n"]))
    table = pd.concat(parts, axis=1, join="outer").sort_index()
    return table.rename_axis("sparsity").reset_index()


def main_markdown(table: pd.DataFrame) -> pd.DataFrame:
    shown = pd.DataFrame({"sparsity": table["sparsity"].map(sparsity_label)})
    tasks = [c.removesuffix("_bleu_mean") for c in table.columns if c.endswith("_bleu_mean")]
    for t in tasks:
        shown[f"{task_name(t)} BLEU (f=1.0)"] = mean_ci_cells(table, f"{t}_bleu")
    shown["pretrain FLOPs"] = table["pretrain_flops_total"].map(cell("{:.3e}"))
    shown["train FLOPs/token"] = table["train_flops_per_token"].map(cell("{:.3e}"))
    shown["FLOP reduction vs dense"] = table["flops_reduction"].map(cell("{:.2f}×"))
    shown["pretrain val loss"] = mean_ci_cells(table, "pretrain_val_loss", digits=3)
    return shown


MIN_DENSE_BLEU = 1.0  # below this the dense model produces no scoreable text


def zeroshot_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows sparsity; one mean/ci95/n triple per zero-shot task's main metric."""
    scores = zeroshot_scores(frame, ("sparsity", "seed"))
    parts = [
        _wide(summarize(rows, ["sparsity"]), f"{task}_{metric}", ["mean", "ci95", "n"])
        for (task, metric), rows in scores.groupby(["task", "metric"], sort=True)
    ]
    if not parts:
        return pd.DataFrame(columns=["sparsity"])
    return pd.concat(parts, axis=1).sort_index().rename_axis("sparsity").reset_index()


def zeroshot_markdown(table: pd.DataFrame) -> pd.DataFrame:
    shown = pd.DataFrame({"sparsity": table["sparsity"].map(sparsity_label)})
    for col in [c.removesuffix("_mean") for c in table.columns if c.endswith("_mean")]:
        # preference order matters: "..._acc_norm" must not be read as metric "norm"
        metric = next(m for m in ZEROSHOT_PREFERENCE if col.endswith(f"_{m}"))
        task = col.removesuffix(f"_{metric}")
        shown[f"{task} {metric}"] = mean_ci_cells(
            table, col, digits=2 if "perplexity" in col else 4
        )
    return shown


def rel_drop_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Sparse runs' BLEU vs the dense mean at the same (task, fraction), in % (drop > 0 = worse).

    The CI is the sparse seeds' interval scaled by the dense mean; the dense mean's own
    uncertainty is not propagated (it is shown separately in the main table).
    """
    stats = bleu_stats(frame)
    dense = stats[stats["sparsity"] == 0].set_index(["task", "fraction"])["mean"]
    sparse = stats[stats["sparsity"] > 0].copy()
    base = sparse.set_index(["task", "fraction"]).index.map(dense.get)
    sparse["dense_bleu"] = pd.Series(base, index=sparse.index, dtype=float)
    sparse = sparse.rename(columns={"mean": "bleu", "ci95": "bleu_ci95"})
    sparse["delta_bleu"] = sparse["bleu"] - sparse["dense_bleu"]
    # a relative drop against a dense BLEU near 0 is noise (or ±inf), so it stays undefined
    base_ok = sparse["dense_bleu"].where(sparse["dense_bleu"] >= MIN_DENSE_BLEU)
    sparse["rel_drop_pct"] = -100.0 * sparse["delta_bleu"] / base_ok
    sparse["rel_drop_ci95"] = 100.0 * sparse["bleu_ci95"] / base_ok
    order = {t: i for i, t in enumerate(ordered_tasks(sparse["task"]))}
    sparse = sparse.sort_values(["task", "fraction", "sparsity"], key=_by(order))
    cols = [
        "sparsity",
        "task",
        "fraction",
        "dense_bleu",
        "bleu",
        "bleu_ci95",
        "n",
        "delta_bleu",
        "rel_drop_pct",
        "rel_drop_ci95",
    ]
    return sparse[cols].reset_index(drop=True)


def _by(order: dict[str, int]):
    return lambda col: col.map(order) if col.name == "task" else col


def rel_drop_markdown(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sparsity": table["sparsity"].map(sparsity_label),
            "task": table["task"].map(task_name),
            "fraction": table["fraction"].map(lambda x: f"{x:g}"),
            "dense BLEU": table["dense_bleu"].map(cell("{:.2f}")),
            "BLEU": mean_ci_cells(
                table.rename(columns={"bleu": "bleu_mean", "n": "bleu_n"}), "bleu"
            ),
            "ΔBLEU": table["delta_bleu"].map(cell("{:+.2f}")),
            "drop vs dense": [
                format_mean_ci(m, c, int(n), 1) + " %"
                for m, c, n in table[["rel_drop_pct", "rel_drop_ci95", "n"]].itertuples(index=False)
            ],
        }
    )


def make_tables(frame: pd.DataFrame, runs: StudyRuns) -> dict[str, tuple]:
    """All three tables, from the study's runs table (``analysis.build runs``) alone."""
    main, zs, drop = main_table(frame), zeroshot_table(frame), rel_drop_table(frame)
    return {
        "spdf_table_main": (main, main_markdown(main)),
        "spdf_table_zeroshot": (zs, zeroshot_markdown(zs)),
        "spdf_table_rel_drop": (drop, rel_drop_markdown(drop)),
    }
