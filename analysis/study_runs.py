"""What a study's tables and figures read beyond its runs table: what each variant ran and the
training curves. ``from_files`` reads them from a results folder; ``analysis.wandb_compare``
builds the same from W&B runs, so every table and figure is made by one function from either
source."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.collect import load_curves
from analysis.run_specs import RunSpec, load_specs


@dataclass(frozen=True)
class StudyRuns:
    """``specs``: variant -> RunSpec (its lowest seed's config; a variant-layout study's only);
    ``curves``: one row per logged step of every run that trains, labelled as the layout labels
    its runs (``collect.curves_frame``; a SquareHead student's by its facts and task)."""

    specs: dict[str, RunSpec] = field(default_factory=dict)
    curves: pd.DataFrame = field(default_factory=pd.DataFrame)


def from_files(results_dir: Path, layout: str) -> StudyRuns:
    """A study folder's ``StudyRuns``, as its declared ``layout`` lays the runs out (a SquareHead
    study's curves are the ``tables/curves.csv`` that ``analysis.build runs`` gathered)."""
    if layout == "squarehead":
        path = Path(results_dir) / "tables" / "curves.csv"
        return StudyRuns(curves=pd.read_csv(path, dtype={"target": str}))
    specs = load_specs(results_dir) if layout == "variant" else {}
    return StudyRuns(specs, load_curves(results_dir, layout))
