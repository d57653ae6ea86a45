"""A study's tables (and figures) from W&B runs (public API) instead of results/ files.

Useful to compare a study while it runs elsewhere. The study's runs are its W&B group; each is
known by the folder its job ran in (the ``run_dir`` every job logs beside its config), so the
readers that read the study's files read its runs (``analysis.study_runs`` through
``WandbRuns``): a run's values come from its config and summary, labelled exactly as its files
would label it, and the curves from its logged history.
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
import importlib.util
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.build import make_outputs
from analysis.outputs import write_outputs
from analysis.run_store import STAGE_DEPTH, RunFilesError, RunRecord, run_key
from analysis.study_declaration import (
    STUDIES_DIR,
    StudyDeclaration,
    declared_studies,
    load_declaration,
)
from analysis.study_runs import StudyRuns, runs_table, study_runs
from sparselm.tracking import as_logged

OFFLINE_MODES = {"offline", "disabled", "dryrun"}
TIMEOUT_S = 30


class WandbUnavailable(Exception):
    """The public API can't be reached or used; the message is meant for one line."""


def _source(run: Any) -> str:
    return "wandb:" + "/".join(getattr(run, "path", []) or [str(run.id)])


class WandbRuns:
    """A study's W&B runs as a ``run_store.RunStore``: each known by the folder its job ran in
    (the ``run_dir`` the tracker logs beside its config), so its values are read exactly as
    its files would give them; its metrics are its summary (W&B's own ``_`` keys left out)."""

    def __init__(self, runs: list[Any]) -> None:
        self.runs: dict[str, Any] = {}
        for run in runs:
            config = dict(run.config or {})
            if "run_dir" not in config:
                raise WandbUnavailable(
                    f"W&B run {_source(run)} has no run_dir in its config: logged by an older "
                    "sparselm"
                )
            key = run_key(config["run_dir"])
            if key.split("/")[0] in STAGE_DEPTH:
                self.runs[key] = run

    def keys(self, stage: str) -> list[str]:
        return sorted(key for key in self.runs if key.split("/")[0] == stage)

    def record(self, key: str) -> RunRecord:
        if key not in self.runs:
            raise RunFilesError(f"no run of the results folder {key} among the W&B runs")
        run, where = self.runs[key], f"W&B run {_source(self.runs[key])}"
        summary = {k: v for k, v in dict(run.summary_metrics or {}).items() if k[:1] != "_"}
        return RunRecord(dict(run.config or {}), summary, f"{where} config", f"{where} summary")

    def history(self, key: str) -> Iterator[dict[str, Any]]:
        for record in self.runs[key].scan_history():
            if record.get("_step") is not None:
                yield as_logged({k: v for k, v in record.items() if not k.startswith("_")})

    def source(self, key: str) -> str:
        return _source(self.runs[key])


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
    """The study's runs table and ``StudyRuns`` from its W&B runs, by the readers that read
    its files (``analysis.study_runs``) for its ``layout``, and how many runs were read."""
    store = WandbRuns(runs)
    frame = runs_table(store, layout)
    if frame.empty:
        raise WandbUnavailable(f"no finished {study} jobs among the runs (none logged a run_dir)")
    return frame, study_runs(store, layout), len(store.runs)


def study_outputs(
    declaration: StudyDeclaration, runs: list[Any], kinds: Sequence[str] = ("tables",)
) -> tuple[dict[str, dict[str, tuple]], int]:
    """kind -> every table (stem -> numbers, Markdown view) or figure (stem -> figure, plotted
    numbers) the study declares, from its W&B runs, made as from files (``build.make_outputs``);
    and how many runs it read.
    ``declaration``: from ``study_declaration``, which checks the modules exist."""
    frame, study_runs, n_runs = study_frames(declaration.layout, declaration.study, runs)
    return {kind: make_outputs(declaration, kind, frame, study_runs) for kind in kinds}, n_runs


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
        write_outputs(kind, outputs, args.out)
    counts = ", ".join(f"{len(outputs)} {kind}" for kind, outputs in made.items())
    print(f"wandb_compare: {n_runs} runs -> {counts} in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
