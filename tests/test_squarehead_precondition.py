"""SquareHead's distillation claims need a teacher better than every CE student."""

from __future__ import annotations

import pandas as pd

from analysis.squarehead_claims import teacher_check, teacher_precondition


def _runs(teacher: float, ce: list[float]) -> pd.DataFrame:
    rows = [{"loss": "ce", "final_val_loss": v, "dense_val_loss": teacher} for v in ce]
    rows.append({"loss": "ce_squarehead", "final_val_loss": 9.0, "dense_val_loss": teacher})
    return pd.DataFrame(rows)


def test_teacher_better_than_every_student_passes_and_says_so():
    runs = _runs(2.0, [2.3, 2.5])
    assert teacher_check(runs) is None
    assert "holds" in teacher_precondition(runs)


def test_one_student_below_its_teacher_makes_the_claims_untestable():
    runs = _runs(2.4, [2.3, 2.5])
    why = teacher_check(runs)
    assert why is not None and "1 of 2 CE students" in why
    assert "fails" in teacher_precondition(runs)
