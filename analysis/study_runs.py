"""What a study's tables read beyond its runs table: what each variant ran and the pre-training
curves. ``from_files`` reads them from a results folder; ``analysis.wandb_compare`` builds the
same from W&B runs, so every table is made by one function from either source."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.collect import load_variant_curves
from analysis.run_specs import RunSpec, load_specs


@dataclass(frozen=True)
class StudyRuns:
    """``specs``: variant -> RunSpec (its lowest seed's config); ``curves``: one row per
    logged step of every pre-training run (``collect.VARIANT_CURVE_COLUMNS``). Both are empty
    for a study whose runs are not laid out by variant."""

    specs: dict[str, RunSpec] = field(default_factory=dict)
    curves: pd.DataFrame = field(default_factory=pd.DataFrame)


def from_files(results_dir: Path, layout: str) -> StudyRuns:
    """A study folder's ``StudyRuns``, as its declared ``layout`` lays the runs out."""
    if layout != "variant":
        return StudyRuns()
    return StudyRuns(load_specs(results_dir), load_variant_curves(results_dir))
