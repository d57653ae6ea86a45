"""What a study's tables and figures read: its runs table and, beyond it, what each variant ran
and the training curves, read from a ``run_store.RunStore``, so the one reader serves the
results folder (``analysis.build``) and the W&B runs (``analysis.wandb_compare``) alike, and
every table and figure is made by one function from either source."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis import squarehead_runs
from analysis.collect import collect, collect_variants, load_curves
from analysis.run_specs import RunSpec, load_specs
from analysis.run_store import FileRuns, RunStore


@dataclass(frozen=True)
class StudyRuns:
    """``specs``: variant -> RunSpec (its lowest seed's config; a variant-layout study's only);
    ``curves``: one row per logged step of every run that trains, labelled as the layout labels
    its runs (``collect.curves_frame``; a SquareHead student's by its facts and task)."""

    specs: dict[str, RunSpec] = field(default_factory=dict)
    curves: pd.DataFrame = field(default_factory=pd.DataFrame)


def runs_table(store: RunStore, layout: str) -> pd.DataFrame:
    """The study's runs table (``tables/runs.csv``), as its declared ``layout`` lays runs out."""
    if layout == "squarehead":
        return squarehead_runs.collect(store)
    return collect(store) if layout == "sparsity" else collect_variants(store)


def study_runs(store: RunStore, layout: str) -> StudyRuns:
    """The study's ``StudyRuns``, as its declared ``layout`` lays runs out."""
    if layout == "squarehead":
        return StudyRuns(curves=squarehead_runs.curves(store))
    specs = load_specs(store) if layout == "variant" else {}
    return StudyRuns(specs, load_curves(store, layout))


def from_files(results_dir: Path, layout: str) -> StudyRuns:
    """A study folder's ``StudyRuns``."""
    return study_runs(FileRuns(results_dir), layout)
