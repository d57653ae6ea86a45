"""A study's main comparison table from W&B runs (public API) instead of results/ files.

Useful to compare a study while it runs elsewhere. Runs are grouped by study (the W&B group),
stage (job type) and run (the run name: ``<stage>-<variant>-seed<N>`` for the variant studies,
sparsity, task and fraction from the config for SPDF); the table is built by the same function
as from files. Every study is supported: the comparison table reads every pre-training run's
logged history too (its eval curve and step times), SquareHead's rows come from its students'
names (``sparse-ft-<task>-<pruner>-<target>-<loss>-seed<N>``), their scoring jobs and the
teachers'. It needs
network access and a W&B login, so offline (WANDB_MODE=offline, as in tests and ``make``) it
stops with a one-line message.
Example: ``WANDB_MODE=online python -m analysis.wandb_compare --entity E --project sparselm
--group raptr --out table.csv``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import (
    compare_tables,
    mst_tables,
    raptr_tables,
    squarehead_runs,
    squarehead_tables,
)
from analysis.collect import COLUMNS, VARIANT_COLUMNS, VARIANT_CURVE_COLUMNS, eval_metrics
from analysis.run_specs import RunSpec, spec_from_config
from analysis.spdf_tables import main_table

OFFLINE_MODES = {"offline", "disabled", "dryrun"}
VARIANT_STUDIES = ("raptr", "mst", "compare")
STUDIES = ("spdf", *VARIANT_STUDIES, "squarehead")
# logger.name of a variant study's job: pretrain-<variant>-seed<N>, eval-zeroshot-<variant>-seed<N>
RUN_NAME = re.compile(
    r"^(?:pretrain|eval-zeroshot)-(?P<variant>[a-z][a-z0-9_]*)-seed(?P<seed>\d+)$"
)
# SquareHead's jobs: a student, its scoring, a teacher's scoring, a teacher (SPDF-style name)
STUDENT = re.compile(r"^(?P<kind>sparse-ft|eval-sparse)-(?P<task>[a-z0-9]+)-(?P<run>.+-seed\d+)$")
TEACHER_EVAL = re.compile(r"^eval-teacher-(?P<task>[a-z0-9]+)-seed(?P<seed>\d+)$")
TEACHER = re.compile(r"^finetune-(?P<task>[a-z0-9]+)-s0\.0-f1\.0-seed(?P<seed>\d+)$")
TIMEOUT_S = 30


class WandbUnavailable(Exception):
    """The public API can't be reached or used; the message is meant for one line."""


def _get(config: Mapping[str, Any], dotted: str) -> Any:
    """``config["a"]["b"]`` or ``config["a.b"]``: run configs come nested or flattened."""
    if dotted in config:
        return config[dotted]
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    # older runs wrap each config value as {"value": ...}
    return node.get("value") if isinstance(node, Mapping) and "value" in node else node


def _number(value: Any, default: float = math.nan) -> float:
    try:
        return float(value) if value is not None and not isinstance(value, bool) else default
    except (TypeError, ValueError):
        return default


def _summary(run: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(run.summary_metrics or {}).items() if not k.startswith("_")}


def _static_level(config: Mapping[str, Any]) -> float:
    """SPDF's mask level: ``method.level`` of a ``method=static`` run (runs logged before static
    sparsity became a method kept it in ``sparsity.level``); 0 for any other run."""
    if _get(config, "method.name") == "static":
        return _number(_get(config, "method.level"), 0.0)
    return _number(_get(config, "sparsity.level"), 0.0)


def run_rows(run: Any) -> list[dict[str, Any]]:
    """Tidy rows (collect.COLUMNS) from one W&B run's job type, config and summary."""
    config = dict(run.config or {})
    stage = getattr(run, "job_type", None) or _get(config, "logger.job_type")
    task = _get(config, "task.name")
    if str(stage).startswith("eval") and stage not in ("eval_nlg", "eval_zeroshot"):
        # a generic "eval" job: NLG evaluations are the ones configured with a task
        stage = "eval_nlg" if task else "eval_zeroshot"
    summary = _summary(run)
    if str(stage).startswith("eval"):
        triples = list(eval_metrics(summary, task))
    else:
        triples = [
            (task, k, float(v))
            for k, v in summary.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
    base = {
        "stage": stage,
        "sparsity": _static_level(config),
        "fraction": _number(_get(config, "task.fraction")) if stage != "pretrain" else math.nan,
        "seed": int(_number(_get(config, "seed"), -1)),
        "source": "wandb:" + "/".join(getattr(run, "path", []) or [str(run.id)]),
    }
    return [base | {"task": t, "metric": m, "value": v} for t, m, v in triples]


def variant_rows(run: Any) -> list[dict[str, Any]]:
    """Tidy rows (collect.VARIANT_COLUMNS) of a variant study's run; [] for a run whose name
    is not one of the study's jobs."""
    match = RUN_NAME.match(str(getattr(run, "name", "")))
    if match is None:
        return []
    named = {"variant": match["variant"], "seed": int(match["seed"])}
    return [{k: row[k] for k in VARIANT_COLUMNS if k in row} | named for row in run_rows(run)]


def curve_rows(run: Any) -> list[dict[str, Any]]:
    """Per logged step of a variant study's pre-training run (collect.VARIANT_CURVE_COLUMNS),
    from its W&B history; [] for any other run."""
    match = RUN_NAME.match(str(getattr(run, "name", "")))
    if match is None or not str(run.name).startswith("pretrain-"):
        return []
    named = {"variant": match["variant"], "seed": int(match["seed"])}
    numeric = [c for c in VARIANT_CURVE_COLUMNS if c not in ("variant", "seed", "step")]
    return [
        named | {"step": int(record["_step"])} | {c: _number(record.get(c)) for c in numeric}
        for record in run.scan_history()
        if record.get("_step") is not None
    ]


def variant_specs(runs: list[Any]) -> dict[str, RunSpec]:
    """variant -> RunSpec from the lowest seed's pretraining run config (and an MST run's
    solved knob its logged steps carry, which W&B keeps in the run summary)."""
    chosen: dict[str, tuple[int, Any]] = {}
    for run in runs:
        match = RUN_NAME.match(str(getattr(run, "name", "")))
        if match is None or not str(run.name).startswith("pretrain-"):
            continue
        variant, seed = match["variant"], int(match["seed"])
        if variant not in chosen or seed < chosen[variant][0]:
            chosen[variant] = (seed, run)
    return {
        variant: spec_from_config(variant, dict(run.config or {}), dict(run.summary_metrics or {}))
        for variant, (_, run) in chosen.items()
    }


def squarehead_frame(runs: list[Any]) -> tuple[pd.DataFrame, int]:
    """``tables/runs.csv`` of the SquareHead study (one row per student and teacher) from its
    W&B runs, through the rows ``analysis.squarehead_runs`` builds from files."""
    students, student_evals, teachers, teacher_evals = {}, {}, {}, {}
    for run in runs:
        name = str(getattr(run, "name", ""))
        if match := STUDENT.match(name):
            # sparse-ft-e2e-magnitude-s0.8-ce_squarehead-seed0 -> magnitude_s0.8_ce_squarehead_seed0
            folder = match["run"].replace("-", "_")
            side = students if match["kind"] == "sparse-ft" else student_evals
            side[(match["task"], folder)] = _summary(run)
        elif match := TEACHER_EVAL.match(name):
            teacher_evals[(match["task"], int(match["seed"]))] = _summary(run)
        elif match := TEACHER.match(name):
            teachers[(match["task"], int(match["seed"]))] = _summary(run)
    rows = [
        squarehead_runs.student_row(task, facts, train, student_evals.get((task, folder), {}))
        for (task, folder), train in sorted(students.items())
        if (facts := squarehead_runs.parse_run(folder)) is not None
    ]
    rows += [
        squarehead_runs.teacher_row(task, seed, train, teacher_evals.get((task, seed), {}))
        for (task, seed), train in sorted(teachers.items())
    ]
    if not rows:
        raise WandbUnavailable("no squarehead jobs (sparse-ft-<task>-...-seed<N>) among the runs")
    n_runs = len(students) + len(student_evals) + len(teachers) + len(teacher_evals)
    return pd.DataFrame(rows), n_runs


def study_table(study: str, runs: list[Any]) -> tuple[pd.DataFrame, int]:
    """The study's main table from its W&B runs, and how many runs it read."""
    if study == "squarehead":
        frame, n_runs = squarehead_frame(runs)
        return squarehead_tables.main_table(frame), n_runs
    if study == "spdf":
        rows = [row for run in runs for row in run_rows(run)]
        return main_table(pd.DataFrame(rows, columns=COLUMNS)), len(runs)
    rows = [row for run in runs for row in variant_rows(run)]
    if not rows:
        raise WandbUnavailable(f"no {study} jobs (pretrain-<variant>-seed<N>) among the runs")
    frame = pd.DataFrame(rows, columns=VARIANT_COLUMNS).astype({"seed": int, "value": float})
    n_runs = len({r["source"] for r in rows})
    if study == "compare":
        curves = pd.DataFrame([r for run in runs for r in curve_rows(run)])
        curves = curves.reindex(columns=VARIANT_CURVE_COLUMNS).astype({"seed": int, "step": int})
        labels = compare_tables.labels_from_specs(variant_specs(runs))
        return compare_tables.main_table(frame, curves, labels), n_runs
    specs = variant_specs(runs)
    table_of = raptr_tables.main_table if study == "raptr" else mst_tables.main_table
    return table_of(frame, specs), n_runs


def fetch_runs(entity: str, project: str, group: str, api: Any = None) -> list[Any]:
    """Every run of ``group`` (one study) through the public API."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if api is None and mode in OFFLINE_MODES:
        raise WandbUnavailable(
            f"W&B is {mode} (WANDB_MODE={mode}); the public API needs "
            "WANDB_MODE=online and a W&B login"
        )
    try:
        if api is None:
            import wandb  # only when online: importing it is slow and may print

            api = wandb.Api(timeout=TIMEOUT_S)
        runs = list(api.runs(f"{entity}/{project}", filters={"group": group}))
    except Exception as err:  # network, auth, bad path: all end the same way for the user
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise WandbUnavailable(
            f"cannot read {entity}/{project} group {group}: {type(err).__name__}: {first}"
        ) from None
    if not runs:
        raise WandbUnavailable(f"no runs in {entity}/{project} with group {group}")
    return runs


def fetch_frame(entity: str, project: str, group: str, api: Any = None) -> pd.DataFrame:
    """Every run of ``group`` as the same tidy frame ``analysis.collect`` builds from files."""
    runs = fetch_runs(entity, project, group, api)
    return pd.DataFrame([row for run in runs for row in run_rows(run)], columns=COLUMNS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entity", required=True)
    parser.add_argument("--project", default="sparselm")
    parser.add_argument("--group", default="spdf", help="the W&B run group (the study's name)")
    parser.add_argument("--study", choices=STUDIES, help="which table (default: the group)")
    parser.add_argument("--out", type=Path, required=True, help="CSV for the main table")
    args = parser.parse_args(argv)
    study = args.study or args.group
    if study not in STUDIES:
        print(
            f"wandb_compare: --study {study!r} is not one of {', '.join(STUDIES)}", file=sys.stderr
        )
        return 2
    try:
        table, n_runs = study_table(study, fetch_runs(args.entity, args.project, args.group))
    except WandbUnavailable as err:
        print(f"wandb_compare: {err}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(f"wandb_compare: {n_runs} runs -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
