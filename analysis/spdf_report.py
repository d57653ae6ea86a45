"""The SPDF report's own parts (``python -m analysis.build report --study spdf``).

It reads only the study's tables and figures and one pre-training ``config.yaml`` (for the
model's name).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from analysis.report_engine import (
    StudyFiles,
    study_files,
)
from analysis.spdf_claims import Scale, evaluate_claims
from analysis.spdf_tables import FULL, ordered_tasks, sparsity_label, task_name
from analysis.verdicts import Claim


@dataclass(frozen=True)
class Inputs(StudyFiles):
    config: dict
    splits: dict[str, str]  # task -> the split its fine-tuning train set was cut from


def load_inputs(results_dir: Path, study: str) -> Inputs:
    configs = sorted((results_dir / "pretrain").glob("*/config.yaml"))
    # every pre-training run shares the model; the first config names it for all
    config = (yaml.safe_load(configs[0].read_text()) if configs else None) or {}
    return Inputs(
        **study_files(study, results_dir),
        config=config,
        splits=train_splits(results_dir),
    )


def train_splits(results_dir: Path) -> dict[str, str]:
    """task -> ``task.split_map.train`` of its fine-tuning runs (one config.yaml per task)."""
    splits = {}
    for path in sorted((results_dir / "finetune").glob("*/*/config.yaml")):
        task = path.parents[1].name
        if task not in splits:
            config = yaml.safe_load(path.read_text()) or {}
            split = ((config.get("task") or {}).get("split_map") or {}).get("train")
            if split is not None:
                splits[task] = str(split)
    return splits


def scale_of(config: dict) -> Scale:
    model, train = config.get("model") or {}, config.get("train") or {}
    seq = train.get("seq_len") or model.get("block_size")
    return Scale(model=model.get("name"), seq_len=int(seq) if seq is not None else None)


def train_sizes(runs: pd.DataFrame) -> pd.Series:
    """task -> fine-tuning train examples at fraction 1.0 (finetune metrics.json)."""
    rows = runs[
        (runs["stage"] == "finetune")
        & (runs["fraction"] == FULL)
        & (runs["metric"] == "train_examples")
    ]
    return rows.groupby("task")["value"].mean()


def _values(runs: pd.DataFrame, column: str, stage: str | None = None) -> list:
    rows = runs if stage is None else runs[runs["stage"] == stage]
    return sorted(rows[column].dropna().unique())


def seeds_by_cell(runs: pd.DataFrame) -> pd.Series:
    """Number of seeds behind each (stage, task, sparsity, fraction) mean."""
    return runs.groupby(["stage", "task", "sparsity", "fraction"], dropna=False)["seed"].nunique()


def what_was_run(inputs: Inputs) -> list[str]:
    runs, scale = inputs.runs, scale_of(inputs.config)
    pre = runs[runs["stage"] == "pretrain"]
    tokens = sorted(pre.loc[pre["metric"] == "tokens", "value"].unique())
    convention = (inputs.config.get("flops") or {}).get("convention", "unknown")
    seeds_per_cell = sorted(seeds_by_cell(runs).unique())
    return [
        f"- Model: `{scale.model}`, context T={scale.seq_len}; pre-training tokens per run: "
        + ", ".join(f"{t:,.0f}" for t in tokens)
        + f"; FLOP convention `{convention}`.",
        "- Sparsities: " + ", ".join(sparsity_label(s) for s in _values(runs, "sparsity")),
        "- Seeds: "
        + ", ".join(str(int(s)) for s in _values(runs, "seed"))
        + f" (seeds per cell: {', '.join(str(int(n)) for n in seeds_per_cell)})",
        "- Fine-tuning tasks: "
        + ", ".join(task_name(t) for t in ordered_tasks(_values(runs, "task", "finetune"))),
        "- Fine-tuning fractions: "
        + ", ".join(f"{f:g}" for f in _values(runs, "fraction", "finetune")),
        *train_set_lines(inputs),
        "- Zero-shot tasks: " + (", ".join(_values(runs, "task", "eval_zeroshot")) or "none"),
    ]


def train_set_lines(inputs: Inputs) -> list[str]:
    """Which split each task trained on and how many examples that gave at fraction 1.0: claim
    (d) orders tasks by these sizes, which need not be the paper's order."""
    sizes = train_sizes(inputs.runs)
    if sizes.empty:
        return []
    parts = [
        f"{task_name(t)} {sizes[t]:,.0f} from `{inputs.splits.get(t, '?')}`"
        for t in ordered_tasks(sizes.index)
    ]
    line = "- Fine-tuning train examples at fraction 1.0 (claim (d) orders tasks by these): " + (
        ", ".join(parts)
    )
    if any(not s.startswith("train") for s in inputs.splits.values()):
        line += (
            ". A task cut from a split other than `train` (DART's offline copy has no train "
            "split, so it trains on 90 % of dev) is far smaller than in the paper, where DART "
            "is the largest set; with a full download (`task.split_map.train=train`) the "
            "paper's order returns"
        )
    return [line + "."]


def caveats(inputs: Inputs) -> list[str]:
    n_seeds = int(seeds_by_cell(inputs.runs).min())
    return [
        f"- Small-scale numbers are noisy: as few as {n_seeds} seed(s) per cell. Tables show "
        "mean ± 95 % "
        'Student-t CI over seeds ("n=1" where there is a single seed, so no interval).',
        "- Verdicts follow the interval rule under *Claims*: with few seeds the intervals are "
        "wide, so most claims come out INCONCLUSIVE rather than resting on a mean.",
        "- The paper's numbers are for GPT-2 Small and GPT-3 XL trained on The Pile; this study's "
        "model, data and token budget are given under *What was run*.",
    ]


def provenance(inputs: Inputs) -> list[str]:
    sources = inputs.runs["source"].nunique()
    return [
        f"Every number above comes from {sources} metrics.json files and {inputs.n_logs} "
        "train_log.jsonl files under results/spdf (listed in `results/spdf/tables/runs.csv`, "
        "column `source`), plus one pre-training config.yaml for the model name. "
        "No checkpoint was read.",
    ]


def report_claims(inputs: Inputs) -> list[Claim]:
    return evaluate_claims(
        inputs.tables["spdf_table_main"],
        inputs.runs,
        train_sizes(inputs.runs),
        scale_of(inputs.config),
    )
