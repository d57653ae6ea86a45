"""Evaluate a checkpoint with lm-evaluation-harness: ``python -m sparselm.cli.evaluate``.

    python -m sparselm.cli.evaluate checkpoint=<run or checkpoint dir> \
        tasks=[sparselm_arc_easy,sparselm_e2e_nlg] limit=20 generation.num_beams=4 \
        hydra.run.dir=<out>

Writes into ``hydra.run.dir``: ``config.yaml`` (resolved), ``results.json`` (lm-eval's results,
task versions, sample counts, generation settings, weights sha256, checkpoint, lm-eval
version, limit, truncated requests per task), ``results.csv`` (one row per task x metric),
``generations/<task>.jsonl`` (every generation task's input, output and references, one JSON
line per input) and, last, ``metrics.json`` (flat ``task/metric -> value``, with
``task/truncated_requests``), whose presence marks the job complete.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sparselm.cli import builders
from sparselm.cli.checks import check_job
from sparselm.cli.common import (
    compose_config,
    pick_device,
    run_cli,
    save_resolved_config,
    write_json_atomic,
    write_text_atomic,
)
from sparselm.cli.run_folder import require_finished
from sparselm.errors import ConfigError


def main(argv: Sequence[str]) -> int:
    cfg, run_dir = compose_config("evaluate", argv)
    check_job(cfg)
    args = evaluate_args(cfg)
    require_finished(args["path"], "checkpoint")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_resolved_config(cfg, run_dir)
    # imported late: lm-eval and datasets take seconds to import, config errors should not
    from sparselm.evaluation.run import evaluate_checkpoint, flat_metrics, results_table

    results = evaluate_checkpoint(**args, generations_dir=run_dir / "generations")
    table = results_table(results)
    metrics = flat_metrics(results)
    write_json_atomic(run_dir / "results.json", results)
    write_text_atomic(run_dir / "results.csv", table.to_csv(index=False))
    tracker = builders.tracker(cfg, run_dir, job_type="evaluate")
    try:
        tracker.summary(metrics | {"weights_sha256": results["weights_sha256"]})
        tracker.log_table("eval/results", table)
    except BaseException:
        tracker.finish(exit_code=1)
        raise
    tracker.finish()
    write_json_atomic(run_dir / "metrics.json", metrics)  # last: marks the job complete
    for key, value in metrics.items():
        print(f"{key}: {value:.6g}")
    return 0


def evaluate_args(cfg: DictConfig) -> dict[str, Any]:
    """Keyword arguments of ``evaluate_checkpoint`` from the composed config."""
    if OmegaConf.is_missing(cfg, "checkpoint") or not cfg.checkpoint:
        raise ConfigError("checkpoint: required; pass checkpoint=<run or checkpoint folder>")
    tasks = cfg.tasks
    tasks = [tasks] if isinstance(tasks, str) else list(tasks or [])
    if not tasks or not all(isinstance(t, str) and t for t in tasks):
        raise ConfigError(f"tasks={tasks!r}: expected a list of task or group names")
    generation = cfg.get("generation")
    if generation is not None and not isinstance(generation, DictConfig):
        raise ConfigError(f"generation={generation!r}: expected a mapping of decoding settings")
    return {
        "path": Path(str(cfg.checkpoint)),
        "tasks": tasks,
        "data_dir": Path(str(cfg.paths.data_dir)),
        "limit": _int(cfg.limit, "limit", optional=True),
        "batch_size": _int(cfg.batch_size, "batch_size"),
        "device": str(pick_device(str(cfg.device))),
        "gen_overrides": _set_values(generation),
        "seed": _int(cfg.seed, "seed"),
        "num_fewshot": _int(cfg.get("num_fewshot"), "num_fewshot", optional=True),
    }


def _int(value: Any, key: str, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}={value!r} must be an integer" + (" or null" if optional else ""))
    return value


def _set_values(generation: DictConfig | None) -> dict | None:
    """Only the decoding settings given a value override a task's defaults."""
    if not generation:
        return None
    given = {k: v for k, v in OmegaConf.to_container(generation).items() if v is not None}
    return given or None


if __name__ == "__main__":
    run_cli(main, "evaluate")
