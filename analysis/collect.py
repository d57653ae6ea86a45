"""Gather every metrics.json of a study into one tidy frame (and the pre-training curves).

An SPDF run's values (sparsity, fraction, seed) are read from its own files, never from its
folder name: a pre-training run's mask level from its metrics.json and its seed from its
config.yaml; a fine-tuning run adds its fraction and task to those of the run it started from
(config.yaml ``pretrained``); an evaluation takes those of the checkpoint it scored
(``checkpoint``). A variant study's run (``raptr_seed0``: pre-training and zero-shot only)
carries its variant's name in the study's grid in its folder name, a label; its seed is read
from its config.yaml, and an evaluation takes both from the run it scored.
"""

from __future__ import annotations

import functools
import json
import math
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from sparselm.tracking import flatten


class RunFilesError(Exception):
    """A run folder lacks a file or key its values are read from; the message names it."""


COLUMNS = ["stage", "task", "sparsity", "fraction", "seed", "metric", "value", "source"]
VARIANT_COLUMNS = ["stage", "task", "variant", "seed", "metric", "value", "source"]
# a pre-training curve's labels per study layout, and the values every curve has (NaN where a
# run did not log them); every other logged value follows them
CURVE_LABELS = {"sparsity": ["sparsity", "seed"], "variant": ["variant", "seed"]}
CURVE_COLUMNS = ["step", "tokens", "flops_cum", "train_loss", "val_loss", "step_time_s", "path_len"]
VARIANT_PATTERN = re.compile(r"^(?P<variant>[a-z][a-z0-9]*(?:_[a-z0-9]+)*)_seed(?P<seed>\d+)$")
VARIANT_STAGES = ("pretrain", "eval_zeroshot")
# stage folder -> (has a task folder, metrics.json is lm-eval's flat "task/metric" dict)
STAGES: dict[str, tuple[bool, bool]] = {
    "pretrain": (False, False),
    "finetune": (True, False),
    "eval_zeroshot": (False, True),
    "eval_nlg": (True, True),
}


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but keep_mask=True is a flag, not a measurement
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_variant_dir(name: str) -> dict[str, Any] | None:
    """``raptr_noscale_seed1`` -> {variant: raptr_noscale, seed: 1}; None if no match."""
    match = VARIANT_PATTERN.match(name)
    return None if match is None else {"variant": match["variant"], "seed": int(match["seed"])}


def short_task(lm_eval_task: str) -> str:
    """``sparselm_e2e_nlg`` -> ``e2e``: the lm-eval name minus our prefix and the _nlg suffix."""
    name = lm_eval_task.removeprefix("sparselm_")
    return name.removesuffix("_nlg") or name


def eval_metrics(flat: dict[str, Any], folder_task: str | None) -> Iterator[tuple[str, str, float]]:
    """(task, metric, value) from a flat ``"<lm-eval task>/<metric>[,filter]"`` dict."""
    for key, value in flat.items():
        if not _is_number(value):
            continue
        lm_task, slash, metric = key.partition("/")
        if not slash:  # no task prefix: the folder names the task
            lm_task, metric = "", key
        # lm-eval appends the filter after a comma ("acc,none"); tables want the bare metric
        metric = metric.split(",", 1)[0]
        yield (short_task(lm_task) if lm_task else folder_task), metric, float(value)


@dataclass(frozen=True)
class RunRecord:
    """What one job left: its resolved config and its metrics (metrics.json, or a W&B run's
    summary), each with where it was read, for error messages."""

    config: dict[str, Any]
    metrics: dict[str, Any]
    config_at: str
    metrics_at: str


def run_key(path: str | Path) -> str:
    """A run folder from its stage folder on (``finetune/e2e/s0.5_f1.0_seed0``): how one job's
    config names another run (``pretrained``, ``checkpoint``) wherever the results tree lies."""
    parts = Path(path).parts
    stage_at = max((i for i, part in enumerate(parts) if part in STAGES), default=0)
    return "/".join(parts[stage_at:])


def value_of(data: dict[str, Any], key: str, where: str) -> Any:
    """``data[key]``; a one-line error naming ``where`` (the file) and the key otherwise."""
    if key not in data:
        raise RunFilesError(f"{where} has no {key!r}: it was not written by this suite's job")
    return data[key]


def run_values(key: str, record_of: Callable[[str], RunRecord]) -> dict[str, Any]:
    """sparsity, fraction, seed and task of the SPDF-layout run ``key`` (see the module
    docstring), through ``record_of`` (a run's files, or a study's W&B runs)."""
    run = record_of(key)
    if "checkpoint" in run.config:  # an evaluation: the values of the run it scored
        return run_values(run_key(run.config["checkpoint"]), record_of)
    seed = int(value_of(run.config, "seed", run.config_at))
    if "pretrained" in run.config:  # fine-tuning: its own fraction and task on its start's level
        start = run_values(run_key(run.config["pretrained"]), record_of)
        fraction = float(value_of(run.metrics, "fraction", run.metrics_at))
        task = value_of(run.metrics, "task", run.metrics_at)
        return start | {"fraction": fraction, "seed": seed, "task": task}
    level = float(value_of(run.metrics, "static_sparsity", run.metrics_at))
    return {"sparsity": level, "fraction": math.nan, "seed": seed, "task": None}


def variant_values(key: str, record_of: Callable[[str], RunRecord]) -> dict[str, Any] | None:
    """variant and seed of the variant-layout run ``key``: the variant is its folder's label
    (``<variant>_seed<N>``), the seed its config's; an evaluation's are those of the run its
    ``checkpoint`` names. None for a folder that is no run's (no such label)."""
    label = parse_variant_dir(Path(key).name)
    if label is None:
        return None
    run = record_of(key)
    if "checkpoint" in run.config:
        return variant_values(run_key(run.config["checkpoint"]), record_of)
    return {"variant": label["variant"], "seed": int(value_of(run.config, "seed", run.config_at))}


def read_run_file(path: Path) -> dict[str, Any]:
    """A job's metrics.json or config.yaml as a dict (an empty file reads as {})."""
    return (json.loads if path.suffix == ".json" else yaml.safe_load)(path.read_text()) or {}


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RunFilesError(f"{path} is missing: its run folder holds no complete job")
    return read_run_file(path)


def file_records(study_dir: Path) -> Callable[[str], RunRecord]:
    """``record_of`` over a study's folders: a run's config.yaml and metrics.json, each read
    once (every fine-tuning run and evaluation leads back to the same pre-training runs)."""

    @functools.cache
    def record_of(key: str) -> RunRecord:
        config, metrics = study_dir / key / "config.yaml", study_dir / key / "metrics.json"
        return RunRecord(_read(config), _read(metrics), str(config), str(metrics))

    return record_of


def metric_rows(
    stage: str, task: str | None, labels: dict[str, Any], data: dict[str, Any], source: str
) -> list[dict[str, Any]]:
    """One tidy row per number of a job's metrics (metrics.json or a W&B summary): an
    evaluation's ``task/metric`` keys split, a training job's keys under its ``task``."""
    if STAGES[stage][1]:
        triples = list(eval_metrics(data, task))
    else:
        triples = [(task, k, float(v)) for k, v in data.items() if _is_number(v)]
    return [
        {"stage": stage, "task": t, **labels, "metric": m, "value": v, "source": source}
        for t, m, v in triples
    ]


def _study_dir(results_dir: Path, study: str) -> Path:
    results_dir = Path(results_dir)
    if not any((results_dir / stage).is_dir() for stage in STAGES):
        return results_dir / study
    return results_dir


def collect(results_dir: Path, study: str = "spdf") -> pd.DataFrame:
    """One tidy row per (run, metric) from every metrics.json under ``results_dir``.

    ``results_dir`` is the study folder (``results/spdf``); if it is the parent ``results``
    folder, ``study`` picks the sub-folder.
    """
    results_dir = _study_dir(results_dir, study)
    rows: list[dict[str, Any]] = []
    record_of = file_records(results_dir)
    for stage, (has_task, _) in STAGES.items():
        pattern = "*/*/metrics.json" if has_task else "*/metrics.json"
        for path in sorted((results_dir / stage).glob(pattern)):
            key = run_key(path.parent)
            values = run_values(key, record_of)
            data = record_of(key).metrics
            rows.extend(metric_rows(stage, values.pop("task"), values, data, str(path)))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.astype({"sparsity": float, "fraction": float, "seed": int, "value": float})


def collect_variants(results_dir: Path, study: str = "raptr") -> pd.DataFrame:
    """As ``collect`` for a study whose runs are named ``<variant>_seed<seed>``."""
    results_dir = _study_dir(results_dir, study)
    rows: list[dict[str, Any]] = []
    record_of = file_records(results_dir)
    for stage in VARIANT_STAGES:
        for path in sorted((results_dir / stage).glob("*/metrics.json")):
            key = run_key(path.parent)
            values = variant_values(key, record_of)
            if values is None:  # a folder of another kind, or an evaluation of one
                warnings.warn(f"skipping {path}: not a <variant>_seed<N> run", stacklevel=2)
                continue
            rows.extend(metric_rows(stage, None, values, record_of(key).metrics, str(path)))
    frame = pd.DataFrame(rows, columns=VARIANT_COLUMNS)
    return frame.astype({"seed": int, "value": float})


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    for line in path.read_text().splitlines():
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue  # a half-written last line of a job still running


def pretrain_logs(
    results_dir: Path, layout: str = "variant"
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(the run's values, one record) per line of every finished pre-training run's
    train_log.jsonl, in folder order; the values as ``run_values`` (sparsity, seed) or
    ``variant_values`` (variant, seed) read them. A job still running (no metrics.json) is left
    out."""
    study_dir = Path(results_dir)
    record_of = file_records(study_dir)
    for path in sorted((study_dir / "pretrain").glob("*/train_log.jsonl")):
        key = run_key(path.parent)
        if not (path.parent / "metrics.json").is_file():
            continue
        if layout == "variant":
            values = variant_values(key, record_of)
            if values is None:
                continue
        else:
            found = run_values(key, record_of)
            values = {"sparsity": found["sparsity"], "seed": found["seed"]}
        for record in read_jsonl(path):
            yield values, record


def curves_frame(rows: list[dict[str, Any]], layout: str) -> pd.DataFrame:
    """One row per logged step of every pre-training run (files or W&B histories alike): the
    run's labels (``CURVE_LABELS[layout]``), ``CURVE_COLUMNS``, then every other logged value
    by name, nested keys flattened as the W&B tracker logs them (``sparsity_by_kind/qkv``)."""
    labels, frame = CURVE_LABELS[layout], pd.DataFrame(rows)
    extra = sorted(set(frame.columns) - {*labels, *CURVE_COLUMNS})
    frame = frame.reindex(columns=[*labels, *CURVE_COLUMNS, *extra])
    numbers = {c: float for c in CURVE_COLUMNS if c != "step"} | {"seed": int, "step": int}
    return frame.astype(numbers | ({"sparsity": float} if layout == "sparsity" else {}))


def load_curves(results_dir: Path, layout: str = "variant") -> pd.DataFrame:
    """``curves_frame`` of a study folder's ``train_log.jsonl`` files; ``val_loss`` is NaN off
    eval steps. A value logged as null is left out, as the tracker leaves it out of W&B."""
    rows = [
        values | {k: v for k, v in flatten(record).items() if v is not None}
        for values, record in pretrain_logs(results_dir, layout)
    ]
    return curves_frame(rows, layout)
