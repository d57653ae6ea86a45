"""Build a declared study's runs table, tables, figures or report from its results folder:

    python -m analysis.build runs --study raptr     # results/raptr/tables/runs.csv
    python -m analysis.build tables --study raptr   # results/raptr/tables/<stem>.csv + .md
    python -m analysis.build figures --study raptr  # results/raptr/figures/<stem>.png/.pdf/.csv
    python -m analysis.build report --study raptr   # results/reports/raptr.md

The study's declaration (``pipelines/studies/<study>.yaml``) names the analysis modules that
make its outputs (``analysis.<modules>_tables``, ``_figures``, ``_report``: its own, or another
study's it reuses), the outputs' stems and how its runs are laid out (``runs`` reads them so).
A missing input is one line on stderr and exit 1, with nothing written.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pandas as pd

from analysis.study_declaration import StudyDeclaration, declared_studies, load_declaration

if TYPE_CHECKING:
    from analysis.study_runs import StudyRuns

KINDS = ("runs", "tables", "figures", "report")
COMMON_OPTIONS = ("kind", "study", "results", "out", "scale")  # the rest: a report's


def read_runs(results: Path) -> pd.DataFrame:
    """The study's runs table, as ``build_runs`` wrote it; empty when it has not been built."""
    path = results / "tables" / "runs.csv"
    # SquareHead's N:M targets ("2:4") and unstructured ones ("0.5") both stay text
    return pd.read_csv(path, dtype={"target": str}) if path.is_file() else pd.DataFrame()


def build_runs(declared: StudyDeclaration, results: Path, out: Path) -> int:
    """``runs.csv``: one tidy row per (run, metric), as the study's layout lays its runs out (a
    SquareHead study's: one row per run). Written whole or not at all."""
    from analysis.run_store import RunFilesError, as_store  # pandas-heavy, only when building
    from analysis.study_runs import runs_table

    study = declared.study
    try:
        table = runs_table(as_store(results), declared.layout)
    except RunFilesError as err:
        print(f"{study}_runs: {err}", file=sys.stderr)
        return 1
    if table.empty:
        print(f"{study}_runs: no metrics.json found under {results}", file=sys.stderr)
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".tmp")
    table.to_csv(partial, index=False)
    os.replace(partial, out)
    print(f"{study}_runs: {len(table)} rows -> {out}")
    return 0


def make_outputs(
    declared: StudyDeclaration, kind: str, runs: pd.DataFrame, study_runs: StudyRuns
) -> dict[str, tuple]:
    """Every table or figure ``analysis.<modules>_<kind>.make_<kind>`` makes from the runs table
    and the ``study_runs.StudyRuns`` (of files or W&B runs), by stem; the stems must be the ones
    the declaration names (the names its rules and report use)."""
    module = importlib.import_module(f"analysis.{declared.modules}_{kind}")
    made = getattr(module, f"make_{kind}")(runs, study_runs)
    names = getattr(declared, kind)
    if set(made) != set(names):  # a code error: the declaration names every output
        raise ValueError(f"{declared.study}_{kind} makes {sorted(made)}; declared: {sorted(names)}")
    return made


def build_outputs(declared: StudyDeclaration, kind: str, results: Path, out: Path) -> int:
    """Write every table or figure the study declares (``make_outputs``) from its results folder."""
    from analysis.outputs import write_outputs

    study = declared.study
    runs = read_runs(results)  # the rule's input: the runs are gathered once, by build_runs
    if runs.empty:
        print(
            f"{study}_{kind}: no runs table {results}/tables/runs.csv; build it first: "
            f"python -m analysis.build runs --study {study}",
            file=sys.stderr,
        )
        return 1
    from analysis.study_runs import from_files  # what W&B runs give as well (wandb_compare)

    made = make_outputs(declared, kind, runs, from_files(results, declared.layout))
    for path in write_outputs(kind, made, out):
        print(path)
    return 0


def report_module(argv: Sequence[str]) -> ModuleType | None:
    """The report module a ``report --study <study>`` command line names (its options join the
    command line's, ``--help`` included); None for any other command line."""
    studies = [a.split("=", 1)[1] for a in argv if a.startswith("--study=")]
    studies += [b for a, b in zip(argv, argv[1:], strict=False) if a == "--study"]
    if "report" not in argv or len(studies) != 1 or studies[0] not in declared_studies():
        return None
    return importlib.import_module(f"analysis.{load_declaration(studies[0]).modules}_report")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser("python -m analysis.build", description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--study", required=True, choices=declared_studies())
    parser.add_argument("--results", type=Path, default=None, help="default: results/<study>")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default: <results>/<kind>; runs: <results>/tables/runs.csv; a report: "
        "results/reports/<study>.md",
    )
    parser.add_argument("--scale", default=None, help="a report: the scale of its results")
    module = report_module(argv)
    if module is not None and hasattr(module, "add_args"):
        module.add_args(parser)
    args = parser.parse_args(argv)
    declared = load_declaration(args.study)
    results = args.results or Path(f"results/{args.study}")
    if args.kind == "runs":
        out = args.out or results / "tables" / "runs.csv"
        return build_runs(declared, results, out)
    if args.kind != "report":
        return build_outputs(declared, args.kind, results, args.out or results / args.kind)
    from analysis.report_engine import build_report

    options = {k: v for k, v in vars(args).items() if k not in COMMON_OPTIONS}
    out = args.out or Path(f"results/reports/{args.study}.md")
    return build_report(module, declared, results, out, args.scale, options)


if __name__ == "__main__":
    sys.exit(main())
