"""Evaluate one checkpoint with lm-evaluation-harness; results trace back to the weights."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import lm_eval
import pandas as pd

from sparselm.errors import ConfigError, DataError
from sparselm.evaluation.lm import DEFAULT_MAX_GEN_TOKS, SparselmLM, parse_gen_kwargs

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
# Draws for bootstrapped stderrs (lm-eval bootstraps e.g. perplexity; means use a closed form,
# and it never bootstraps custom aggregations such as our corpus BLEU).
BOOTSTRAP_ITERS = 1000


def task_manager(tasks: list[str], data_dir: Path) -> Any:
    """A TaskManager that knows our tasks and, only if asked for, lm-eval's built-in ones.

    Indexing lm-eval's ~15k built-in YAMLs takes seconds, so it is skipped when every name
    is one of ours. ``data_dir`` reaches our loaders as task metadata.
    """
    from lm_eval.tasks import TaskManager

    meta = {"data_dir": str(data_dir)}
    ours = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata=meta)
    if all(t in ours.all_tasks for t in tasks):
        return ours
    full = TaskManager(include_path=str(TASKS_DIR), metadata=meta)
    unknown = [t for t in tasks if t not in full.all_tasks and not Path(t).is_file()]
    if unknown:
        raise ConfigError(
            f"tasks: unknown task {unknown[0]!r}; ours are "
            f"{', '.join(sorted(ours.all_tasks))} (or any lm-eval task name)"
        )
    return full


def evaluate_checkpoint(
    path: str | Path,
    tasks: list[str],
    data_dir: str | Path,
    limit: int | None = None,
    batch_size: int = 16,
    device: str = "auto",
    gen_overrides: dict[str, Any] | None = None,
    seed: int = 1234,
    num_fewshot: int | None = None,
    generations_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Run lm-eval on a run or checkpoint folder; returns a JSON-ready results dict.

    With ``generations_dir``, every generation task's samples (input, output, references)
    are written there as ``<task>.jsonl``, named in ``results["generations_files"]``.
    """
    tasks = _check_tasks(tasks)
    parse_gen_kwargs(gen_overrides, DEFAULT_MAX_GEN_TOKS)  # fail before loading anything
    if limit is not None and int(limit) < 1:
        raise ConfigError(f"limit={limit} must be a positive integer or null")
    data_dir = Path(data_dir)
    if any(t.startswith("sparselm_") for t in tasks) and not data_dir.is_dir():
        raise DataError(f"paths.data_dir={data_dir} is not a directory (set SPARSELM_DATA_DIR)")
    manager = task_manager(tasks, data_dir)
    lm = SparselmLM(pretrained=path, device=device, batch_size=batch_size)
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=tasks,
        num_fewshot=num_fewshot,
        limit=limit,
        task_manager=manager,
        batch_size=lm.batch_size,
        device=str(lm.device),  # recorded in results["config"]
        gen_kwargs=dict(gen_overrides) if gen_overrides else None,
        log_samples=generations_dir is not None,
        bootstrap_iters=BOOTSTRAP_ITERS,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )
    run_info = {
        "pretrained": str(path),
        "tasks": tasks,
        "limit": limit,
        "num_fewshot": num_fewshot,
        "seed": seed,
    }
    results = collect_results(out, lm, run_info)
    if generations_dir is not None:
        results["generations_files"] = save_generations(out, Path(generations_dir))
    warn_truncated(results["truncated_requests"])
    return results


def generation_records(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """lm-eval samples of a generation task -> what the model was given, wrote, and should have."""
    records = []
    for sample in sorted(samples, key=lambda s: s["doc_id"]):
        doc = sample.get("doc", {})
        refs = doc.get("references") or [sample.get("target")]
        (context, _), *_ = sample["arguments"]
        output = sample["filtered_resps"]
        records.append(
            {
                "doc_id": sample["doc_id"],
                "input": context,
                "output": output[0] if isinstance(output, list) else output,
                "references": list(refs),
            }
        )
    return records


def save_generations(out: dict[str, Any], folder: Path) -> dict[str, str]:
    """One JSON line per input of each generation task; returns {task: file name}."""
    files = {}
    for task, cfg in out.get("configs", {}).items():
        if cfg.get("output_type") != "generate_until" or task not in out.get("samples", {}):
            continue
        folder.mkdir(parents=True, exist_ok=True)
        lines = [
            json.dumps(jsonable(r), ensure_ascii=False)
            for r in generation_records(out["samples"][task])
        ]
        (folder / f"{task}.jsonl").write_text("".join(line + "\n" for line in lines))
        files[task] = f"{folder.name}/{task}.jsonl"
    return files


def warn_truncated(counts: dict[str, int]) -> None:
    for task, n in counts.items():
        if n:
            print(
                f"warning: {task}: {n} request(s) did not fit the context window and were "
                "left-cut (see truncated_requests in results.json)",
                file=sys.stderr,
            )


def collect_results(out: dict[str, Any], lm: SparselmLM, run_info: dict[str, Any]) -> dict:
    """What results.json holds: lm-eval's scores plus what ties them to weights and settings."""
    configs = out.get("configs", {})
    generation = {
        name: cfg.get("generation_kwargs")
        for name, cfg in configs.items()
        if cfg.get("output_type") == "generate_until"
    }
    record = {
        "checkpoint": str(lm.ckpt_dir),
        "weights_sha256": lm.weights_sha256,
        "lm_eval_version": lm_eval.__version__,
        "max_length": lm.max_length,
        **run_info,
        # per task: log-likelihood continuations longer than the window, or prompts that
        # alone fill it; these are scored on their last max_length tokens
        "truncated_requests": {t: int(lm.truncated.get(t, 0)) for t in out.get("n-samples", {})},
        "generation": generation,
        "results": out["results"],
        "groups": out.get("groups", {}),
        "group_subtasks": out.get("group_subtasks", {}),
        "versions": out["versions"],
        "n-samples": out["n-samples"],
        "higher_is_better": out.get("higher_is_better", {}),
        "config": out.get("config", {}),
    }
    return jsonable(record)


def _check_tasks(tasks: Any) -> list[str]:
    if isinstance(tasks, str):
        tasks = [tasks]
    tasks = list(tasks or [])
    if not tasks or not all(isinstance(t, str) and t for t in tasks):
        raise ConfigError(f"tasks={tasks!r}: expected a non-empty list of task names")
    return tasks


def jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars become numbers, NaN/inf become null, others str."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if hasattr(value, "item"):  # numpy / torch scalar
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value if isinstance(value, (str, int, bool)) else str(value)


def results_table(results: dict[str, Any]) -> pd.DataFrame:
    """One row per task x metric (x filter), with stderr, version and sample count."""
    rows = []
    for task, metrics in results["results"].items():
        for key, value in metrics.items():
            metric, comma, filt = key.partition(",")
            # lm-eval keys scores "<metric>,<filter>"; others (alias, sample_len) are bookkeeping
            if not comma or metric.endswith("_stderr") or not _is_number(value):
                continue
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            n = results.get("n-samples", {}).get(task, {})
            rows.append(
                {
                    "task": task,
                    "metric": metric,
                    "filter": filt or "none",
                    "value": float(value),
                    "stderr": float(stderr) if _is_number(stderr) else None,
                    "higher_is_better": results.get("higher_is_better", {})
                    .get(task, {})
                    .get(metric),
                    "version": results.get("versions", {}).get(task),
                    "n_samples": n.get("effective"),
                }
            )
    columns = [
        "task",
        "metric",
        "filter",
        "value",
        "stderr",
        "higher_is_better",
        "version",
        "n_samples",
    ]
    return pd.DataFrame(rows, columns=columns)


def flat_metrics(results: dict[str, Any]) -> dict[str, float]:
    """``{"<task>/<metric>": value}``; a non-default filter is appended as ``/<filter>``."""
    table = results_table(results)
    flat = {
        f"{r.task}/{r.metric}" + ("" if r.filter == "none" else f"/{r.filter}"): r.value
        for r in table.itertuples()
    }
    for task, n in results.get("truncated_requests", {}).items():
        flat[f"{task}/truncated_requests"] = float(n)
    return flat


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
