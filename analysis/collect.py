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

import math
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.run_store import RunFilesError, RunRecord, RunStore, as_store, run_key

COLUMNS = ["stage", "task", "sparsity", "fraction", "seed", "metric", "value", "source"]
VARIANT_COLUMNS = ["stage", "task", "variant", "seed", "metric", "value", "source"]
# a pre-training curve's labels per study layout, and the values every curve has (NaN where a
# run did not log them); every other logged value follows them
CURVE_LABELS = {"sparsity": ["sparsity", "seed"], "variant": ["variant", "seed"]}
CURVE_COLUMNS = ["step", "tokens", "flops_cum", "train_loss", "val_loss", "step_time_s", "path_len"]
VARIANT_PATTERN = re.compile(r"^(?P<variant>[a-z][a-z0-9]*(?:_[a-z0-9]+)*)_seed(?P<seed>\d+)$")
VARIANT_STAGES = ("pretrain", "eval_zeroshot")
SPDF_STAGES = ("pretrain", "finetune", "eval_zeroshot", "eval_nlg")
# stages whose metrics.json is lm-eval's flat "task/metric" dict (how deep each stage's jobs
# lie is run_store.STAGE_DEPTH)
EVAL_STAGES = ("eval_zeroshot", "eval_nlg")


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


def metric_rows(
    stage: str, task: str | None, labels: dict[str, Any], data: dict[str, Any], source: str
) -> list[dict[str, Any]]:
    """One tidy row per number of a job's metrics (metrics.json or a W&B summary): an
    evaluation's ``task/metric`` keys split, a training job's keys under its ``task``."""
    if stage in EVAL_STAGES:
        triples = list(eval_metrics(data, task))
    else:
        triples = [(task, k, float(v)) for k, v in data.items() if _is_number(v)]
    return [
        {"stage": stage, "task": t, **labels, "metric": m, "value": v, "source": source}
        for t, m, v in triples
    ]


def collect(runs: RunStore | Path) -> pd.DataFrame:
    """One tidy row per (run, metric) of every finished job of an SPDF-layout study, from its
    results folder or its W&B runs."""
    store, rows = as_store(runs), []
    for stage in SPDF_STAGES:
        for key in store.keys(stage):
            values = run_values(key, store.record)
            metrics = store.record(key).metrics
            rows.extend(metric_rows(stage, values.pop("task"), values, metrics, store.source(key)))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.astype({"sparsity": float, "fraction": float, "seed": int, "value": float})


def collect_variants(runs: RunStore | Path) -> pd.DataFrame:
    """As ``collect`` for a study whose runs are named ``<variant>_seed<seed>``."""
    store, rows = as_store(runs), []
    for stage in VARIANT_STAGES:
        for key in store.keys(stage):
            values, where = variant_values(key, store.record), store.source(key)
            if values is None:  # a folder of another kind, or an evaluation of one
                warnings.warn(f"skipping {where}: not a <variant>_seed<N> run", stacklevel=2)
                continue
            rows.extend(metric_rows(stage, None, values, store.record(key).metrics, where))
    frame = pd.DataFrame(rows, columns=VARIANT_COLUMNS)
    return frame.astype({"seed": int, "value": float})


def curves_frame(rows: list[dict[str, Any]], layout: str) -> pd.DataFrame:
    """One row per logged step of every pre-training run: the run's labels
    (``CURVE_LABELS[layout]``), ``CURVE_COLUMNS``, then every other logged value by name, nested
    keys flattened as the W&B tracker logs them (``sparsity_by_kind/qkv``)."""
    labels, frame = CURVE_LABELS[layout], pd.DataFrame(rows)
    extra = sorted(set(frame.columns) - {*labels, *CURVE_COLUMNS})
    frame = frame.reindex(columns=[*labels, *CURVE_COLUMNS, *extra])
    numbers = {c: float for c in CURVE_COLUMNS if c != "step"} | {"seed": int, "step": int}
    return frame.astype(numbers | ({"sparsity": float} if layout == "sparsity" else {}))


def load_curves(runs: RunStore | Path, layout: str = "variant") -> pd.DataFrame:
    """``curves_frame`` of every finished pre-training run's logged steps (its train_log.jsonl
    or W&B history), labelled as ``run_values`` (sparsity, seed) or ``variant_values``
    (variant, seed) label it; ``val_loss`` is NaN off eval steps."""
    store, rows = as_store(runs), []
    for key in store.keys("pretrain"):
        if layout == "variant":
            values = variant_values(key, store.record)
            if values is None:
                continue
        else:
            found = run_values(key, store.record)
            values = {"sparsity": found["sparsity"], "seed": found["seed"]}
        rows.extend(values | record for record in store.history(key))
    return curves_frame(rows, layout)
