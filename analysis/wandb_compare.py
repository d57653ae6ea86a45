"""A study's tables (and figures) from W&B runs (public API) instead of results/ files.

Useful to compare a study while it runs elsewhere. Runs are grouped by study (the W&B group)
and run: the run name ``<stage>-<variant>-seed<N>`` for the variant studies, whose pre-training
runs' logged histories give the curves (eval losses, step times, path lengths); for SPDF, the
values its files would give (``analysis.collect.run_values``, through the runs each config
names, found by the ``run_dir`` every job logs beside its config); a SquareHead student's facts
come from its config, paired with its scoring job by name
(``sparse-ft-<task>-<pruner>-<target>-<loss>-seed<N>``), its curve from its own history.
From these every table (and, with ``--figures``, figure) the study declares is made by the same
``make_tables`` (``make_figures``) as from files (``analysis.study_runs``), so every declared
study is supported, its runs read as its declared ``layout`` lays them out. It needs network
access and a W&B login, so offline (WANDB_MODE=offline, as in tests and ``make``) it stops with
one line. Example: ``WANDB_MODE=online python -m analysis.wandb_compare --entity E --project
sparselm --group raptr --out results/wandb_tables/raptr --figures`` writes
``raptr_table_main.csv``/``.md``, ``raptr_fig_loss_vs_flops.png``/``.pdf``/``.csv`` and the
rest there.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import squarehead_runs
from analysis.collect import (
    COLUMNS,
    STAGES,
    VARIANT_COLUMNS,
    RunFilesError,
    RunRecord,
    curves_frame,
    metric_rows,
    run_key,
    run_values,
)
from analysis.outputs import save_figure, write_table
from analysis.run_specs import RunSpec, spec_from_config
from analysis.study_declaration import (
    STUDIES_DIR,
    StudyDeclaration,
    declared_studies,
    load_declaration,
)
from analysis.study_runs import StudyRuns

OFFLINE_MODES = {"offline", "disabled", "dryrun"}
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


def _summary(run: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(run.summary_metrics or {}).items() if not k.startswith("_")}


def _source(run: Any) -> str:
    return "wandb:" + "/".join(getattr(run, "path", []) or [str(run.id)])


def spdf_rows(runs: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Tidy rows (collect.COLUMNS) of the SPDF study's runs, and its pre-training runs' curves
    (``history_rows``). Each run is labelled as its files would label it
    (``collect.run_values``: an evaluation by the run it scored, a fine-tuning run by the one
    it started from), the runs found by the folder every job logs beside its config
    (``run_dir``)."""
    records: dict[str, tuple[Any, RunRecord]] = {}
    for run in runs:
        config, where = dict(run.config or {}), f"W&B run {_source(run)}"
        if "run_dir" not in config:
            raise WandbUnavailable(
                f"{where} has no run_dir in its config: logged by an older sparselm"
            )
        key = run_key(config["run_dir"])
        if key.split("/")[0] in STAGES:
            records[key] = (
                run,
                RunRecord(config, _summary(run), f"{where} config", f"{where} summary"),
            )

    def record_of(key: str) -> RunRecord:
        if key not in records:
            raise WandbUnavailable(f"no run of the results folder {key} among the W&B runs")
        return records[key][1]

    rows, curves = [], []
    for key, (run, record) in records.items():
        values = run_values(key, record_of)
        stage, task = key.split("/")[0], values.pop("task")
        rows += metric_rows(stage, task, values, record.metrics, _source(run))
        if stage == "pretrain":
            curves += history_rows(run, {"sparsity": values["sparsity"], "seed": values["seed"]})
    return rows, curves


def history_rows(run: Any, labels: dict[str, Any]) -> list[dict[str, Any]]:
    """Per logged step of ``run``'s W&B history: ``labels`` and every value it logged (W&B's
    own ``_`` keys left out), as ``collect.load_curves`` reads a train_log.jsonl."""
    return [
        labels | {k: v for k, v in record.items() if not k.startswith("_") and v is not None}
        for record in run.scan_history()
        if record.get("_step") is not None
    ]


def variant_labels(run: Any) -> dict[str, Any] | None:
    """variant (the name's label, as a run folder's) and seed (its config's, as from files) of
    a variant study's job; None for a run whose name is not one of the study's jobs."""
    match = RUN_NAME.match(str(getattr(run, "name", "")))
    if match is None:
        return None
    config = dict(run.config or {})
    if "seed" not in config:
        raise WandbUnavailable(f"W&B run {_source(run)} has no seed in its config")
    return {"variant": match["variant"], "seed": int(config["seed"])}


def variant_rows(run: Any) -> list[dict[str, Any]]:
    """Tidy rows (collect.VARIANT_COLUMNS) of a variant study's run; [] for a run whose name
    is not one of the study's jobs."""
    named = variant_labels(run)
    if named is None:
        return []
    stage = "pretrain" if str(run.name).startswith("pretrain-") else "eval_zeroshot"
    return metric_rows(stage, None, named, _summary(run), _source(run))


def curve_rows(run: Any) -> list[dict[str, Any]]:
    """Per logged step of a variant study's pre-training run, from its W&B history; [] for any
    other run."""
    named = variant_labels(run)
    if named is None or not str(run.name).startswith("pretrain-"):
        return []
    return history_rows(run, named)


def variant_specs(runs: list[Any]) -> dict[str, RunSpec]:
    """variant -> RunSpec from the lowest seed's pretraining run config (and an MST run's
    solved knob its logged steps carry, which W&B keeps in the run summary)."""
    chosen: dict[str, tuple[int, Any]] = {}
    for run in runs:
        named = variant_labels(run)
        if named is None or not str(run.name).startswith("pretrain-"):
            continue
        variant, seed = named["variant"], named["seed"]
        if variant not in chosen or seed < chosen[variant][0]:
            chosen[variant] = (seed, run)
    return {
        variant: spec_from_config(variant, dict(run.config or {}), dict(run.summary_metrics or {}))
        for variant, (_, run) in chosen.items()
    }


def squarehead_frame(runs: list[Any]) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """``tables/runs.csv`` (one row per student and teacher) and ``curves.csv`` of the
    SquareHead study from its W&B runs, through the rows ``analysis.squarehead_runs`` builds
    from files, and how many runs were read."""
    students, student_evals, teachers, teacher_evals = {}, {}, {}, {}
    for run in runs:
        name = str(getattr(run, "name", ""))
        if match := STUDENT.match(name):  # a student and its scoring share the name's tail
            side = students if match["kind"] == "sparse-ft" else student_evals
            side[(match["task"], match["run"])] = run
        elif match := TEACHER_EVAL.match(name):
            teacher_evals[(match["task"], int(match["seed"]))] = _summary(run)
        elif match := TEACHER.match(name):
            teachers[(match["task"], int(match["seed"]))] = _summary(run)
    rows, curves = [], []
    for (task, key), run in sorted(students.items()):
        facts = squarehead_runs.run_facts(dict(run.config or {}))  # as from its config.yaml
        evals = _summary(student_evals[(task, key)]) if (task, key) in student_evals else {}
        rows.append(squarehead_runs.student_row(task, facts, _summary(run), evals))
        curves += squarehead_runs.curve_rows({"task": task, **facts}, run.scan_history())
    rows += [
        squarehead_runs.teacher_row(task, seed, train, teacher_evals.get((task, seed), {}))
        for (task, seed), train in sorted(teachers.items())
    ]
    if not rows:
        raise WandbUnavailable("no squarehead jobs (sparse-ft-<task>-...-seed<N>) among the runs")
    n_runs = len(students) + len(student_evals) + len(teachers) + len(teacher_evals)
    return pd.DataFrame(rows), pd.DataFrame(curves, columns=squarehead_runs.CURVE_COLUMNS), n_runs


def study_declaration(
    study: str, studies_dir: Path | None = None, kinds: Sequence[str] = ("tables",)
) -> StudyDeclaration:
    """``study``'s declaration, if its outputs of ``kinds`` (tables, figures) can be made here;
    one line naming what is missing otherwise."""
    studies_dir = studies_dir or STUDIES_DIR
    declared = declared_studies(studies_dir)
    if study not in declared:
        raise WandbUnavailable(f"--study {study!r} is not a declared study: {', '.join(declared)}")
    declaration = load_declaration(study, studies_dir)
    for kind in kinds:
        module = f"analysis.{declaration.modules}_{kind}"
        if importlib.util.find_spec(module) is None:
            raise WandbUnavailable(f"study {study!r}: its {kind} module {module} does not exist")
    return declaration


def study_frames(layout: str, study: str, runs: list[Any]) -> tuple[pd.DataFrame, StudyRuns, int]:
    """The study's runs table and ``StudyRuns`` from its W&B runs, as its files give them for
    its ``layout``, and how many runs were read."""
    if layout == "squarehead":
        frame, curves, n_runs = squarehead_frame(runs)
        return frame, StudyRuns(curves=curves), n_runs
    if layout == "sparsity":
        rows, curves = spdf_rows(runs)
        frame = pd.DataFrame(rows, columns=COLUMNS)
        return frame, StudyRuns(curves=curves_frame(curves, layout)), len(runs)
    rows = [row for run in runs for row in variant_rows(run)]
    if not rows:
        raise WandbUnavailable(f"no {study} jobs (pretrain-<variant>-seed<N>) among the runs")
    frame = pd.DataFrame(rows, columns=VARIANT_COLUMNS).astype({"seed": int, "value": float})
    curves = curves_frame([r for run in runs for r in curve_rows(run)], layout)
    n_runs = len({r["source"] for r in rows})
    return frame, StudyRuns(variant_specs(runs), curves), n_runs


def study_outputs(
    declaration: StudyDeclaration, runs: list[Any], kinds: Sequence[str] = ("tables",)
) -> tuple[dict[str, dict[str, tuple]], int]:
    """kind -> every table (stem -> numbers, Markdown view) or figure (stem -> figure, plotted
    numbers) the study declares, from its W&B runs, made by the ``make_tables`` and
    ``make_figures`` that make them from files; and how many runs it read.
    ``declaration``: from ``study_declaration``, which checks the modules exist."""
    frame, study_runs, n_runs = study_frames(declaration.layout, declaration.study, runs)
    made = {}
    for kind in kinds:
        module = importlib.import_module(f"analysis.{declaration.modules}_{kind}")
        made[kind] = getattr(module, f"make_{kind}")(frame, study_runs)
    return made, n_runs


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entity", required=True)
    parser.add_argument("--project", default="sparselm")
    parser.add_argument("--group", default="spdf", help="the W&B run group (the study's name)")
    parser.add_argument("--study", help="a declared study: which tables (default: the group)")
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for the tables (<stem>.csv and .md)"
    )
    parser.add_argument(
        "--figures", action="store_true", help="also the figures (<stem>.png, .pdf, .csv)"
    )
    args = parser.parse_args(argv)
    kinds = ("tables", "figures") if args.figures else ("tables",)
    try:
        declaration = study_declaration(args.study or args.group, kinds=kinds)  # before the network
        runs = fetch_runs(args.entity, args.project, args.group)
        made, n_runs = study_outputs(declaration, runs, kinds)
    except (WandbUnavailable, RunFilesError) as err:
        print(f"wandb_compare: {err}", file=sys.stderr)
        return 2
    for kind, outputs in made.items():
        write = write_table if kind == "tables" else save_figure
        for stem, (first, second) in outputs.items():
            write(first, second, stem, args.out)
    counts = ", ".join(f"{len(outputs)} {kind}" for kind, outputs in made.items())
    print(f"wandb_compare: {n_runs} runs -> {counts} in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
