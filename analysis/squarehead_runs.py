"""Gather the SquareHead study into ``tables/runs.csv`` (one row per run) and ``curves.csv``
(``python -m analysis.build runs --study squarehead --teachers <run> [...]``).

A student's facts (pruner, target, loss, seed) are read from its resolved config.yaml, the
same way from a W&B run's config, never from its folder name; its scores are those of the
same-named folder under ``eval_sparse_nlg``. Teachers (the dense fine-tuned runs) become rows
with ``pruner=none, loss=dense, sparsity=0``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from analysis.collect import read_jsonl, read_run_file

FACTS = ("pruner", "target", "loss", "seed")
LOSS_ORDER = ("ce", "ce_kl", "ce_squarehead", "ce_kl_squarehead")
LOSS_LABELS = {
    "ce": "CE",
    "ce_kl": "CE+KL",
    "ce_squarehead": "CE+SquareHead",
    "ce_kl_squarehead": "CE+KL+SquareHead",
    "dense": "dense teacher",
}
PRUNER_LABELS = {"magnitude": "magnitude", "sparsegpt": "SparseGPT", "gradual": "gradual"}
TRAIN_FIELDS = ["final_val_loss", "dense_val_loss", "pruned_val_loss", "mask_sparsity", "steps",
                "flops_total", "wall_time_s", "train_examples",
                "inference_flops_ratio"]  # fmt: skip
CURVE_FIELDS = ["step", "loss_total", "loss_ce", "loss_kl", "loss_squarehead", "train_loss",
                "val_loss"]  # fmt: skip
CURVE_COLUMNS = [*FACTS, "task", *CURVE_FIELDS]  # curves.csv


class StudyInputError(Exception):
    """A results folder that does not hold what the study should have written."""


def run_facts(config: Mapping[str, Any]) -> dict[str, Any]:
    """A student's pruner, target (``0.7`` or ``2:4``), loss (its nonzero distillation terms,
    ``ce_kl_squarehead``) and seed, from its resolved config."""
    prune, distill = config["prune"], config["distill"]
    terms = [t for t in ("ce", "kl", "squarehead") if float(distill.get(t) or 0.0) > 0.0]
    return {
        "pruner": str(prune["method"]),
        "target": str(prune.get("nm") or float(prune["sparsity"])),
        "loss": "_".join(terms),
        "seed": int(config["seed"]),
    }


def _read(path: Path) -> dict[str, Any]:
    try:
        return read_run_file(path)
    except (OSError, json.JSONDecodeError, yaml.YAMLError) as e:
        raise StudyInputError(f"{path}: unreadable ({e})") from None


def _task_and_facts(config_path: Path, facts=run_facts) -> tuple[str, dict[str, Any]]:
    """(task, facts) of a run from its config.yaml; one error naming the file if it has none."""
    config = _read(config_path)
    try:
        return str(config["task"]["name"]), facts(config)
    except (KeyError, TypeError, ValueError) as e:
        raise StudyInputError(f"{config_path}: not this study's job config (no {e})") from None


def _task_metrics(evals: dict[str, Any], task: str) -> dict[str, float]:
    """``sparselm_e2e_nlg/bleu`` -> ``bleu`` for this task's NLG scores."""
    prefix = f"sparselm_{task}_nlg/" if task == "e2e" else f"sparselm_{task}/"
    return {k.removeprefix(prefix): v for k, v in evals.items() if k.startswith(prefix)}


def student_row(task: str, facts: dict[str, Any], train: dict, evals: dict) -> dict[str, Any]:
    """One student's row from its training metrics and its scores (files or W&B alike)."""
    return {
        "task": task,
        **facts,
        # N:M targets sit on the sparsity axis at their realised (mask) sparsity
        "sparsity": round(float(train["mask_sparsity"]), 4),
        **{k: train.get(k) for k in TRAIN_FIELDS},
        **_task_metrics(evals, task),
        "layerwise_error_pruned": json.dumps(train.get("layerwise_error_pruned")),
        "layerwise_error_final": json.dumps(train.get("layerwise_error_final")),
    }


def teacher_row(task: str, seed: int, train: dict, evals: dict) -> dict[str, Any]:
    """The dense teacher's row: ``pruner=none, loss=dense, sparsity=0``."""
    return {
        "task": task, "pruner": "none", "target": "0.0", "loss": "dense", "seed": seed,
        "sparsity": 0.0, "final_val_loss": train.get("final_val_loss"),
        "steps": train.get("steps"), **_task_metrics(evals, task),
    }  # fmt: skip


def collect(results: Path, teachers: Sequence[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, curves = [], []
    for metrics_path in sorted((results / "sparse_finetune").glob("*/*/metrics.json")):
        run_dir = metrics_path.parent
        task, facts = _task_and_facts(run_dir / "config.yaml")
        eval_path = results / "eval_sparse_nlg" / task / run_dir.name / "metrics.json"
        evals = _read(eval_path) if eval_path.is_file() else {}
        rows.append(student_row(task, facts, _read(metrics_path), evals))
        log = run_dir / "train_log.jsonl"
        if log.is_file():
            curves.extend(curve_rows({"task": task, **facts}, read_jsonl(log)))
    for teacher in teachers:
        task, seed = _task_and_facts(Path(teacher) / "config.yaml", lambda c: int(c["seed"]))
        eval_path = results / "eval_teacher_nlg" / task / f"dense_seed{seed}" / "metrics.json"
        evals = _read(eval_path) if eval_path.is_file() else {}
        rows.append(teacher_row(task, seed, _read(Path(teacher) / "metrics.json"), evals))
    if not rows:
        raise StudyInputError(f"{results}/sparse_finetune: no finished runs")
    return pd.DataFrame(rows), pd.DataFrame(curves, columns=CURVE_COLUMNS)


def curve_rows(facts: dict[str, Any], records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """A student's training curve (its train_log.jsonl or W&B history): per logged step, its
    task and facts and the ``CURVE_FIELDS``."""
    return [{**facts, **{k: record.get(k) for k in CURVE_FIELDS}} for record in records]
