"""Where a study's finished jobs are read from: its results folder or its W&B runs, behind one
interface, so every table and figure reads a job's values the same way from either.

A job is known by its key, its folder from the stage folder on (``pretrain/dense_seed0``,
``finetune/e2e/s0.5_f1.0_seed0``): the key its files lie under, the key the ``run_dir`` its
W&B run logs beside its config ends in, and how one job's config names another
(``pretrained``, ``checkpoint``) wherever the results tree lies.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from sparselm.tracking import as_logged

# stage folder -> how many folders deep its jobs lie (a task folder, then the run's)
STAGE_DEPTH = {
    "pretrain": 1,
    "eval_zeroshot": 1,
    "finetune": 2,
    "eval_nlg": 2,
    "sparse_finetune": 2,
    "eval_sparse_nlg": 2,
    "eval_teacher_nlg": 2,
}


class RunFilesError(Exception):
    """A job lacks a file or key its values are read from; the message names it."""


@dataclass(frozen=True)
class RunRecord:
    """What one job left: its resolved config and its metrics (metrics.json, or a W&B run's
    summary), each with where it was read, for error messages."""

    config: dict[str, Any]
    metrics: dict[str, Any]
    config_at: str
    metrics_at: str


class RunStore(Protocol):
    def keys(self, stage: str) -> list[str]:
        """Every finished job of ``stage``, sorted."""

    def record(self, key: str) -> RunRecord:
        """The job's config and metrics; ``RunFilesError`` naming it if there is no such job."""

    def history(self, key: str) -> Iterator[dict[str, Any]]:
        """The job's logged steps, nested keys flattened as W&B keeps them, nulls left out."""

    def source(self, key: str) -> str:
        """Where the job's metrics were read (a file, a W&B run path)."""


def run_key(path: str | Path) -> str:
    """A run folder's key: the path from its stage folder on."""
    parts = Path(path).parts
    stage_at = max((i for i, part in enumerate(parts) if part in STAGE_DEPTH), default=0)
    return "/".join(parts[stage_at:])


def read_run_file(path: Path) -> dict[str, Any]:
    """A job's metrics.json or config.yaml as a dict (an empty file reads as {})."""
    if not path.is_file():
        raise RunFilesError(f"{path} is missing: its run folder holds no complete job")
    try:
        return (json.loads if path.suffix == ".json" else yaml.safe_load)(path.read_text()) or {}
    except (OSError, json.JSONDecodeError, yaml.YAMLError) as err:
        raise RunFilesError(f"{path}: unreadable ({err})") from None


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    for line in path.read_text().splitlines():
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue  # a half-written last line of a job still running


class FileRuns:
    """A study folder's jobs: a job folder holding a metrics.json (written last) is finished;
    each job's files are read once (every fine-tuning run and evaluation leads back to the same
    pre-training runs)."""

    def __init__(self, study_dir: Path) -> None:
        self.study_dir = Path(study_dir)
        self.record = functools.cache(self._record)

    def keys(self, stage: str) -> list[str]:
        pattern = "*/" * STAGE_DEPTH[stage] + "metrics.json"
        found = (self.study_dir / stage).glob(pattern)
        return [
            f"{stage}/{p.parent.relative_to(self.study_dir / stage).as_posix()}"
            for p in sorted(found)
        ]

    def _record(self, key: str) -> RunRecord:
        folder = self.study_dir / key
        config, metrics = folder / "config.yaml", folder / "metrics.json"
        return RunRecord(read_run_file(config), read_run_file(metrics), str(config), str(metrics))

    def history(self, key: str) -> Iterator[dict[str, Any]]:
        log = self.study_dir / key / "train_log.jsonl"
        return (as_logged(record) for record in read_jsonl(log)) if log.is_file() else iter(())

    def source(self, key: str) -> str:
        return str(self.study_dir / key / "metrics.json")


def as_store(runs: RunStore | Path | str) -> RunStore:
    """``runs`` as a ``RunStore``: a path is a study's results folder, read as its files."""
    return FileRuns(Path(runs)) if isinstance(runs, (str, Path)) else runs
