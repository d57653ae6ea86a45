"""Gather every metrics.json of a study into one tidy frame (and the pre-training curves).

Wildcards (task, sparsity, fraction, seed) are parsed from folder names, never from the JSON:
the folder is what Snakemake asked for, whereas the JSON is what the job happened to write.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

COLUMNS = ["stage", "task", "sparsity", "fraction", "seed", "metric", "value", "source"]
CURVE_COLUMNS = ["sparsity", "seed", "step", "tokens", "flops_cum", "train_loss", "val_loss"]

_NUM = r"\d+(?:\.\d+)?"
RUN_PATTERNS = {
    False: re.compile(rf"^s(?P<sparsity>{_NUM})_seed(?P<seed>\d+)$"),
    True: re.compile(rf"^s(?P<sparsity>{_NUM})_f(?P<fraction>{_NUM})_seed(?P<seed>\d+)$"),
}
# stage folder -> (has a task folder, run folder carries a fine-tuning fraction, flat eval dict)
STAGES: dict[str, tuple[bool, bool, bool]] = {
    "pretrain": (False, False, False),
    "finetune": (True, True, False),
    "eval_zeroshot": (False, False, True),
    "eval_nlg": (True, True, True),
}


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but keep_mask=True is a flag, not a measurement
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_run_dir(name: str, with_fraction: bool) -> dict[str, Any] | None:
    """``s0.75_f0.1_seed2`` -> {sparsity: 0.75, fraction: 0.1, seed: 2}; None if no match."""
    match = RUN_PATTERNS[with_fraction].match(name)
    if match is None:
        return None
    groups = match.groupdict()
    return {
        "sparsity": float(groups["sparsity"]),
        "fraction": float(groups["fraction"]) if with_fraction else math.nan,
        "seed": int(groups["seed"]),
    }


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


def _run_dirs(results_dir: Path) -> Iterator[tuple[str, str | None, dict[str, Any], Path]]:
    for stage, (has_task, with_fraction, _) in STAGES.items():
        pattern = "*/*/metrics.json" if has_task else "*/metrics.json"
        for path in sorted((results_dir / stage).glob(pattern)):
            wildcards = parse_run_dir(path.parent.name, with_fraction)
            if wildcards is None:
                warnings.warn(f"skipping {path}: folder name is not a run folder", stacklevel=2)
                continue
            task = path.parent.parent.name if has_task else None
            yield stage, task, wildcards, path


def _rows_of(stage: str, task: str | None, wildcards: dict, path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text())
    if STAGES[stage][2]:
        triples = list(eval_metrics(data, task))
    else:
        triples = [(task, k, float(v)) for k, v in data.items() if _is_number(v)]
    return [
        {"stage": stage, "task": t, **wildcards, "metric": m, "value": v, "source": str(path)}
        for t, m, v in triples
    ]


def collect(results_dir: Path, study: str = "spdf") -> pd.DataFrame:
    """One tidy row per (run, metric) from every metrics.json under ``results_dir``.

    ``results_dir`` is the study folder (``results/spdf``); if it is the parent ``results``
    folder, ``study`` picks the sub-folder.
    """
    results_dir = Path(results_dir)
    if not any((results_dir / stage).is_dir() for stage in STAGES):
        results_dir = results_dir / study
    rows: list[dict[str, Any]] = []
    for stage, task, wildcards, path in _run_dirs(results_dir):
        rows.extend(_rows_of(stage, task, wildcards, path))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.astype({"sparsity": float, "fraction": float, "seed": int, "value": float})


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    for line in path.read_text().splitlines():
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue  # a half-written last line of a job still running


def load_pretrain_curves(results_dir: Path) -> pd.DataFrame:
    """Per logged step of every pre-training run; ``val_loss`` is NaN off eval steps."""
    rows = []
    for path in sorted((Path(results_dir) / "pretrain").glob("*/train_log.jsonl")):
        wildcards = parse_run_dir(path.parent.name, with_fraction=False)
        if wildcards is None:
            continue
        for record in _read_jsonl(path):
            row = {k: record.get(k) for k in CURVE_COLUMNS[2:]}
            rows.append({"sparsity": wildcards["sparsity"], "seed": wildcards["seed"], **row})
    frame = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    return frame.astype({c: float for c in CURVE_COLUMNS if c not in ("seed", "step")})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results/spdf"))
    parser.add_argument("--study", default="spdf")
    parser.add_argument("--out", type=Path, default=None, help="CSV (default: <results>/tables)")
    args = parser.parse_args(argv)
    frame = collect(args.results, args.study)
    if frame.empty:
        print(f"collect: no metrics.json found under {args.results}", file=sys.stderr)
        return 1
    out = args.out or args.results / "tables" / "runs.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    print(f"collect: {len(frame)} rows from {frame['source'].nunique()} files -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
