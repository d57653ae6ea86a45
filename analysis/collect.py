"""Gather every metrics.json of a study into one tidy frame (and the pre-training curves).

Wildcards (task, sparsity, fraction, seed) are parsed from folder names, never from the JSON:
the folder is what Snakemake asked for, whereas the JSON is what the job happened to write.
Two layouts: ``sparsity`` (SPDF: ``s0.75_seed0``) and ``variant`` (RaPTr: ``raptr_seed0``,
pre-training and zero-shot only).
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
VARIANT_COLUMNS = ["stage", "task", "variant", "seed", "metric", "value", "source"]
VARIANT_CURVE_COLUMNS = [
    "variant",
    "seed",
    "step",
    "tokens",
    "flops_cum",
    "train_loss",
    "val_loss",
    "path_len",
    "step_time_s",
]
VARIANT_PATTERN = re.compile(r"^(?P<variant>[a-z][a-z0-9]*(?:_[a-z0-9]+)*)_seed(?P<seed>\d+)$")
VARIANT_STAGES = ("pretrain", "eval_zeroshot")
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
    for stage, task, wildcards, path in _run_dirs(results_dir):
        rows.extend(_rows_of(stage, task, wildcards, path))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.astype({"sparsity": float, "fraction": float, "seed": int, "value": float})


def collect_variants(results_dir: Path, study: str = "raptr") -> pd.DataFrame:
    """As ``collect`` for a study whose runs are named ``<variant>_seed<seed>``."""
    results_dir = _study_dir(results_dir, study)
    rows: list[dict[str, Any]] = []
    for stage in VARIANT_STAGES:
        for path in sorted((results_dir / stage).glob("*/metrics.json")):
            wildcards = parse_variant_dir(path.parent.name)
            if wildcards is None:
                warnings.warn(f"skipping {path}: folder name is not a run folder", stacklevel=2)
                continue
            rows.extend(_rows_of(stage, None, wildcards, path))
    frame = pd.DataFrame(rows, columns=VARIANT_COLUMNS)
    return frame.astype({"seed": int, "value": float})


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    for line in path.read_text().splitlines():
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue  # a half-written last line of a job still running


def _curves(results_dir: Path, parse, columns: list[str]) -> pd.DataFrame:
    rows = []
    for path in sorted((Path(results_dir) / "pretrain").glob("*/train_log.jsonl")):
        wildcards = parse(path.parent.name)
        if wildcards is None:
            continue
        for record in read_jsonl(path):
            rows.append({**wildcards, **{k: record.get(k) for k in columns[2:]}})
    return pd.DataFrame(rows, columns=columns)


def load_pretrain_curves(results_dir: Path) -> pd.DataFrame:
    """Per logged step of every pre-training run; ``val_loss`` is NaN off eval steps."""
    frame = _curves(results_dir, lambda n: parse_run_dir(n, with_fraction=False), CURVE_COLUMNS)
    frame = frame[CURVE_COLUMNS]
    return frame.astype({c: float for c in CURVE_COLUMNS if c not in ("seed", "step")})


def load_variant_curves(results_dir: Path) -> pd.DataFrame:
    """Per logged step of every ``<variant>_seed<seed>`` run, with the sampled ``path_len``."""
    frame = _curves(results_dir, parse_variant_dir, VARIANT_CURVE_COLUMNS)
    numeric = [c for c in VARIANT_CURVE_COLUMNS if c not in ("variant", "seed", "step")]
    return frame.astype({c: float for c in numeric} | {"seed": int, "step": int})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results/spdf"))
    parser.add_argument("--study", default=None, help="default: spdf, or raptr for variants")
    parser.add_argument("--layout", choices=("sparsity", "variant"), default="sparsity")
    parser.add_argument("--out", type=Path, default=None, help="CSV (default: <results>/tables)")
    args = parser.parse_args(argv)
    gather = collect_variants if args.layout == "variant" else collect
    frame = gather(args.results, args.study or ("raptr" if args.layout == "variant" else "spdf"))
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
