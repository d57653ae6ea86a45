"""The SquareHead report's own parts (``python -m analysis.build report --study squarehead``),
from the study's tables and figures only. Its claims are in ``analysis.squarehead_claims``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from analysis.report_engine import (
    StudyFiles,
    study_files,
)
from analysis.squarehead_claims import evaluate_claims, teacher_check
from analysis.squarehead_runs import PRUNER_LABELS
from analysis.verdicts import Claim


@dataclass(frozen=True)
class Inputs(StudyFiles):
    high_sparsity: float


def load_inputs(results: Path, study: str, high_sparsity: float) -> Inputs:
    return Inputs(
        **study_files(study, results, dtype={"target": str}),
        high_sparsity=high_sparsity,
    )


def what_was_run(inputs: Inputs) -> list[str]:
    runs = inputs.runs
    sparse = runs[runs["loss"] != "dense"]
    steps = sorted({int(s) for s in sparse["steps"].dropna()})
    return [
        f"- Task: {', '.join(sorted(runs['task'].unique()))}; the teacher is the SPDF study's "
        "dense fine-tuned model (sparsity 0, fraction 1.0) of the same seed.",
        f"- Pruners: {', '.join(PRUNER_LABELS.get(p, p) for p in sorted(set(sparse['pruner'])))};"
        f" targets: {', '.join(sorted(set(sparse['target'])))} of every block linear (per "
        "layer, exact counts); embeddings and the tied head stay dense.",
        f"- Losses: {', '.join(sorted(set(sparse['loss'])))}; fine-tuning steps per run: "
        f"{', '.join(map(str, steps))}; seeds: "
        f"{', '.join(map(str, sorted(set(runs['seed']))))}.",
        "- Masks: fixed after pruning; weights re-masked after every optimizer step (the "
        "reference's choice); every run checked that masked weights are 0 and nnz unchanged.",
    ]


def report_claims(inputs: Inputs) -> list[Claim]:
    return evaluate_claims(inputs.runs, inputs.high_sparsity)


def summary(claims: list[Claim], inputs: Inputs) -> list[str]:
    note = teacher_check(inputs.runs)
    return [
        *[f"- **{c.statement}: {c.verdict}.**" for c in claims],
        *([f"- Teacher check: {note}"] if note else []),
    ]


def caveats(inputs: Inputs) -> list[str]:
    return [
        "- Verdicts follow the interval rule under *Claims*: with few seeds per cell the "
        "paired intervals are wide, and one seed gives none (INCONCLUSIVE).",
        "- BLEU is lm-eval's corpus BLEU on a `limit`ed slice of E2E test at small scales.",
        "- The paper's setting is MPT-7B on GSM8K; this study keeps its pipeline (dense FT → "
        "one-shot pruning → fixed-mask FT with distillation) on our model and task.",
    ]


def provenance(inputs: Inputs) -> list[str]:
    return [
        f"Every number comes from the metrics.json and train_log.jsonl files under "
        f"{inputs.results_dir} (gathered in `tables/runs.csv`).",
    ]


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--high-sparsity", type=float, default=0.7, help="claims (a) and (b) hold at and above it"
    )
