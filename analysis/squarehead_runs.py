"""Gather the SquareHead study into ``tables/runs.csv`` (one row per run, ``python -m
analysis.build runs --study squarehead``) and its students' training curves.

A student's facts (pruner, target, loss, seed) are read from its resolved config.yaml, the
same way from a W&B run's config, never from its folder name; its scores are those of the
same-named folder under ``eval_sparse_nlg``. Teachers (the dense fine-tuned runs) become rows
with ``pruner=none, loss=dense, sparsity=0``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.run_store import RunFilesError, RunRecord, RunStore, as_store

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
CURVE_COLUMNS = [*FACTS, "task", *CURVE_FIELDS]


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


def _task_and_facts(record: RunRecord, facts=run_facts) -> tuple[str, dict[str, Any]]:
    """(task, facts) of a job from its config; one error naming the config if it has none."""
    try:
        return str(record.config["task"]["name"]), facts(record.config)
    except (KeyError, TypeError, ValueError) as e:
        raise RunFilesError(f"{record.config_at}: not this study's job config (no {e})") from None


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


def collect(runs: RunStore | Path) -> pd.DataFrame:
    """``tables/runs.csv``: one row per student (``sparse_finetune``) with its scores
    (``eval_sparse_nlg``, the same folder name), and per dense teacher (``finetune``) with its
    own (``eval_teacher_nlg/<task>/dense_seed<N>``), from the results folder or W&B runs."""
    store, rows = as_store(runs), []
    scored = {*store.keys("eval_sparse_nlg"), *store.keys("eval_teacher_nlg")}

    def scores(key: str) -> dict[str, Any]:  # a scoring job's metrics; {} if it has not run
        return store.record(key).metrics if key in scored else {}

    for key in store.keys("sparse_finetune"):
        task, facts = _task_and_facts(store.record(key))
        evals = scores(f"eval_sparse_nlg/{task}/{Path(key).name}")
        rows.append(student_row(task, facts, store.record(key).metrics, evals))
    for key in store.keys("finetune"):
        task, seed = _task_and_facts(store.record(key), lambda c: int(c["seed"]))
        evals = scores(f"eval_teacher_nlg/{task}/dense_seed{seed}")
        rows.append(teacher_row(task, seed, store.record(key).metrics, evals))
    if not rows:
        raise RunFilesError("no finished sparse_finetune or finetune job")
    return pd.DataFrame(rows)


def curves(runs: RunStore | Path) -> pd.DataFrame:
    """Every student's training curve (``curve_rows``), labelled by its task and facts."""
    store, rows = as_store(runs), []
    for key in store.keys("sparse_finetune"):
        task, facts = _task_and_facts(store.record(key))
        rows += curve_rows({"task": task, **facts}, store.history(key))
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def curve_rows(facts: dict[str, Any], records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """A student's training curve (its train_log.jsonl or W&B history): per logged step, its
    task and facts and the ``CURVE_FIELDS``."""
    return [{**facts, **{k: record.get(k) for k in CURVE_FIELDS}} for record in records]
