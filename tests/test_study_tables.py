"""The five studies' tables, remade from recorded smoke-study job files, equal the recorded
tables: a change to the analysis (collect, tables, the study engine) keeps every table's rows
and values, or fails here (see ``tests/fixtures/study_tables/record.py`` to accept one)."""

from __future__ import annotations

import importlib.util
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
    expected = sorted(p.name for p in (HERE / "expected" / study).iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == expected
    for name in expected:
        ours, theirs = tmp_path / name, HERE / "expected" / study / name
        if name.endswith(".md"):
            assert ours.read_text() == theirs.read_text(), name
            continue
        # numbers to rel 1e-9 (a CSV's text round trip; numpy's reductions may take another
        # SIMD path on another CPU), everything else exactly
        pd.testing.assert_frame_equal(
            pd.read_csv(ours), pd.read_csv(theirs), check_exact=False, rtol=1e-9, obj=name
        )
