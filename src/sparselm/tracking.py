"""Experiment tracking: Weights & Biases (offline by default) and a null tracker alike."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd


class Tracker(Protocol):
    def log(self, record: dict[str, Any], step: int) -> None: ...
    def summary(self, metrics: dict[str, Any]) -> None: ...
    def log_table(self, name: str, frame: pd.DataFrame) -> None: ...
    def finish(self, exit_code: int = 0) -> None: ...


class NullTracker:
    """Accepts everything and keeps nothing; used when tracking is disabled."""

    def log(self, record: dict[str, Any], step: int) -> None:
        pass

    def summary(self, metrics: dict[str, Any]) -> None:
        pass

    def log_table(self, name: str, frame: pd.DataFrame) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


@dataclass(frozen=True)
class TrackerConfig:
    enabled: bool = True
    project: str = "sparselm"
    mode: str = "offline"  # offline | online | disabled
    group: str | None = None  # the study
    job_type: str | None = None  # the stage
    name: str | None = None
    run_id: str | None = None  # stable id from the job's wildcards; a rerun resumes it
    dir: str | None = None
    tags: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)


class WandbTracker:
    def __init__(self, cfg: TrackerConfig) -> None:
        import wandb  # imported here so the null tracker never needs it

        self._wandb = wandb
        run_dir = Path(cfg.dir) if cfg.dir else Path.cwd()
        run_dir.mkdir(parents=True, exist_ok=True)
        mode = os.environ.get("WANDB_MODE", cfg.mode)
        self.run = wandb.init(
            project=cfg.project,
            group=cfg.group,
            job_type=cfg.job_type,
            name=cfg.name,
            id=cfg.run_id,
            resume="allow" if cfg.run_id else None,
            dir=str(run_dir),
            config=cfg.config,
            mode=mode,
            tags=list(cfg.tags),
            reinit="finish_previous",
            settings=wandb.Settings(silent=True, console="off"),
        )

    def log(self, record: dict[str, Any], step: int) -> None:
        self.run.log(as_logged(record), step=step)

    def summary(self, metrics: dict[str, Any]) -> None:
        for k, v in flatten(metrics).items():
            self.run.summary[k] = v

    def log_table(self, name: str, frame: pd.DataFrame) -> None:
        self.run.log({name: self._wandb.Table(dataframe=frame)})

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)


def build_tracker(cfg: TrackerConfig) -> Tracker:
    if not cfg.enabled or cfg.mode == "disabled":
        return NullTracker()
    return WandbTracker(cfg)


def as_logged(record: dict[str, Any]) -> dict[str, Any]:
    """A step's record as W&B keeps it: nested keys flattened, null values left out."""
    return {k: v for k, v in flatten(record).items() if v is not None}


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested keys joined by ``/`` (``sparsity_by_kind/qkv``), as W&B keeps what is logged."""
    out: dict[str, Any] = {}
    for k, v in record.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "/"))
        else:
            out[key] = v
    return out
