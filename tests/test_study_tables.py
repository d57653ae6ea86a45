"""The five studies' tables, remade from recorded smoke-study job files, equal the recorded
tables: a change to the analysis (collect, tables, the study engine) keeps every table's rows
and values, or fails here (see ``tests/fixtures/study_tables/record.py`` to accept one)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pandas as pd
import pytest

HERE = Path(__file__).resolve().parent / "fixtures" / "study_tables"
_spec = importlib.util.spec_from_file_location("record_study_tables", HERE / "record.py")
record = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(record)


@pytest.mark.parametrize("study", record.STUDIES)
def test_tables_remade_from_recorded_jobs_equal_the_recorded_tables(study, tmp_path) -> None:
    record.analyse(HERE / "results", study, tmp_path)
    assert_recorded_tables(tmp_path, study)


def assert_recorded_tables(made: Path, study: str) -> None:
    """The files in ``made`` are the study's recorded tables: Markdown exactly, numbers to rel
    1e-9 (a CSV's text round trip; numpy's reductions may take another SIMD path on another
    CPU), everything else exactly."""
    expected = sorted(p.name for p in (HERE / "expected" / study).iterdir())
    assert sorted(p.name for p in made.iterdir()) == expected
    for name in expected:
        ours, theirs = made / name, HERE / "expected" / study / name
        if name.endswith(".md"):
            assert ours.read_text() == theirs.read_text(), name
            continue
        pd.testing.assert_frame_equal(
            pd.read_csv(ours), pd.read_csv(theirs), check_exact=False, rtol=1e-9, obj=name
        )


@pytest.mark.parametrize("study", record.STUDIES)
def test_wandb_runs_recorded_from_the_jobs_give_the_recorded_tables(study, tmp_path) -> None:
    """Every table of every study, rebuilt from W&B runs recorded from its smoke jobs (config,
    summary, per-step history) and written as ``analysis.wandb_compare`` writes them, equals
    the recorded table."""
    from helpers import recorded_runs

    from analysis import wandb_compare
    from analysis.outputs import write_table

    runs = recorded_runs(HERE / "results" / study)
    made, _ = wandb_compare.study_outputs(wandb_compare.study_declaration(study), runs)
    for stem, (numbers, shown) in made["tables"].items():
        write_table(numbers, shown, stem, tmp_path)
    assert_recorded_tables(tmp_path, study)


@pytest.mark.parametrize("study", record.STUDIES)
def test_wandb_runs_give_the_figures_the_files_give(study, tmp_path) -> None:
    """Every figure (and table) of every study, made from the W&B runs recorded from its smoke
    jobs (the per-step histories give the curves), plots the numbers its files give."""
    from helpers import assert_wandb_outputs_are_the_files, recorded_runs

    from analysis import build

    work = tmp_path / study
    shutil.copytree(HERE / "results" / study, work)
    assert build.main(["runs", "--study", study, "--results", str(work)]) == 0
    assert_wandb_outputs_are_the_files(study, work, recorded_runs(work))
