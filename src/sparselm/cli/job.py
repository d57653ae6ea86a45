"""The tail every training entry point shares: train, then record the metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sparselm.cli.common import write_json_atomic
from sparselm.environment import run_environment
from sparselm.train import TrainRun, train


def train_and_record(
    run: TrainRun, resume: bool, describe: Callable[[dict[str, Any]], dict[str, Any]]
) -> dict[str, Any]:
    """Train, add the job's own fields, and write ``metrics.json`` last (it marks completion).

    ``describe`` maps the training metrics to extra fields; ``environment`` names the machine
    (``sparselm.environment``). A failure closes the tracker as
    failed and leaves no ``metrics.json``, so nothing half-done looks complete. Under torchrun
    only rank 0 records; the other ranks train.
    """
    if not run.dist.is_main:
        return train(run, resume=resume)
    try:
        metrics = train(run, resume=resume)
    except BaseException:
        run.tracker.finish(exit_code=1)
        raise
    metrics |= describe(metrics)
    run.tracker.summary(metrics)
    run.tracker.finish()
    device = next(run.model.parameters()).device
    metrics["environment"] = run_environment(device, run.dist.world_size)
    write_json_atomic(run.out_dir / "metrics.json", metrics)
    return metrics
