"""The comparison study's readings on small hand-made curves: loss at equal FLOPs (linear in
log FLOPs), FLOPs to reach dense's final loss (first crossing), the paired step-time ratio,
the table built from them, and the claims read with the interval rule."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.collect import CURVE_COLUMNS, VARIANT_COLUMNS
from analysis.compare_claims import evaluate_claims
from analysis.compare_tables import (
    flops_to_reach,
    loss_at_flops,
    main_markdown,
    main_table,
    paired_with_dense,
    run_table,
)
from analysis.verdicts import FAILED, HELD, INCONCLUSIVE, UNTESTABLE

# --------------------------------------------------------------- the readings of one curve


def test_loss_at_flops_interpolates_linearly_in_log_flops():
    flops, loss = np.array([1e9, 1e11]), np.array([4.0, 2.0])
    # halfway in log FLOPs; linear in FLOPs would read 4 - 2 * 9/99 = 3.82
    assert loss_at_flops(flops, loss, 1e10) == pytest.approx(3.0)
    assert loss_at_flops(flops, loss, 1e11) == pytest.approx(2.0)  # an end point is covered
    assert loss_at_flops(flops[::-1], loss[::-1], 1e10) == pytest.approx(3.0)  # any order


def test_loss_at_flops_never_extrapolates():
    flops, loss = np.array([1e9, 1e10, 1e11]), np.array([4.0, 3.0, 2.0])
    assert math.isnan(loss_at_flops(flops, loss, 5e8))
    assert math.isnan(loss_at_flops(flops, loss, 2e11))
    assert math.isnan(loss_at_flops(np.array([]), np.array([]), 1e10))


def test_flops_to_reach_is_the_first_crossing_interpolated_in_log_flops():
    flops = np.array([1e9, 1e10, 1e11, 1e12])
    loss = np.array([5.0, 3.0, 4.5, 2.0])  # below 4 at 1e10, above again, below at 1e12
    # halfway from 5 to 3 is 4: halfway from 1e9 to 1e10 in log FLOPs, not the later crossing
    assert flops_to_reach(flops, loss, 4.0) == pytest.approx(10**9.5)
    assert flops_to_reach(flops, loss, 6.0) == pytest.approx(1e9)  # the first eval is there
    assert flops_to_reach(flops, loss, 2.0) == pytest.approx(1e12)  # reached exactly, last eval
    assert math.isnan(flops_to_reach(flops, loss, 1.5))  # never reached


def test_paired_ratio_is_the_mean_of_each_seeds_ratio_to_its_own_dense():
    runs = pd.DataFrame(
        {
            "variant": ["dense", "dense", "mst", "mst", "mst"],
            "seed": [0, 1, 0, 1, 2],
            "step_time_s": [0.2, 0.4, 0.1, 0.3, 0.5],
        }
    )
    ratio = paired_with_dense(runs, "step_time_s", "ratio")
    assert ratio.tolist()[:4] == pytest.approx([1.0, 1.0, 0.5, 0.75])
    assert math.isnan(ratio.iloc[4])  # seed 2 has no dense run: no pair
    # the mean of paired ratios (0.625), not the ratio of means (0.4 / 0.3 = 1.33 or 0.667)
    assert ratio.iloc[2:4].mean() == pytest.approx(0.625)
    delta = paired_with_dense(runs, "step_time_s", "delta")
    assert delta.tolist()[2:4] == pytest.approx([-0.1, -0.1])
    with pytest.raises(ValueError, match="how="):
        paired_with_dense(runs, "step_time_s", "quotient")


# --------------------------------------------------------------- a small synthetic study

SEEDS = (0, 1, 2)
STEPS = 100
EVALS = (25, 50, 75, 100)
# variant -> (FLOPs per step, loss offset at equal FLOPs vs dense, seconds per step)
VARIANTS = {
    "dense": (4e9, 0.0, 0.20),
    "static": (1e9, 0.30, 0.21),  # worse at equal FLOPs, never reaches dense, no time saved
    "raptr": (3e9, -0.10, 0.15),  # better at equal FLOPs, time saved as predicted
}


def _loss(variant: str, flops: float, seed: int) -> float:
    return 6.0 + VARIANTS[variant][1] - 0.5 * math.log10(flops / 1e9) + 0.01 * seed


def _study(variants=VARIANTS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(tidy metrics rows as analysis.collect reads them, per-step curves)."""
    rows, steps = [], []
    for variant, (per_step, _, seconds) in variants.items():
        for seed in SEEDS:
            for step in range(5, STEPS + 1, 5):
                flops = per_step * step
                val = _loss(variant, flops, seed) if step in EVALS else math.nan
                # a slow first step (start-up): the median ignores it, a mean would not
                time = 10.0 if step == 5 else seconds * (1 + 0.01 * seed)
                steps.append((variant, seed, step, step * 512, flops, math.nan, val, time, None))
            final = _loss(variant, per_step * STEPS, seed)
            for metric, value in (
                ("final_val_loss", final),
                ("flops_total", per_step * STEPS),
                ("steps", STEPS),
            ):
                rows.append(("pretrain", None, variant, seed, metric, value, "x"))
    frame = pd.DataFrame(rows, columns=VARIANT_COLUMNS)
    return frame, pd.DataFrame(steps, columns=["variant", "seed", *CURVE_COLUMNS])


def test_run_table_reads_every_run_at_the_smallest_budget_and_against_its_own_dense():
    runs = run_table(*_study()).set_index(["variant", "seed"])
    budget = 1e9 * STEPS  # static's total: the smallest
    assert (runs["budget"] == budget).all()
    for (variant, seed), row in runs.iterrows():
        assert row["loss_at_budget"] == pytest.approx(_loss(variant, budget, seed))
    assert runs.loc[("raptr", 1), "loss_at_budget_delta"] == pytest.approx(-0.10)
    assert runs.loc[("static", 2), "flops_reduction"] == pytest.approx(4.0)
    # RaPTr reaches dense's final loss (dense at 4e11 FLOPs) 0.1 nats early: 0.2 decades early
    expected = 4e11 * 10 ** (-0.2)
    assert runs.loc[("raptr", 0), "flops_to_dense"] == pytest.approx(expected, rel=1e-9)
    assert math.isnan(runs.loc[("static", 0), "flops_to_dense"])
    assert runs.loc[("raptr", 0), "step_time_s"] == pytest.approx(0.15)  # the median
    assert runs.loc[("raptr", 2), "step_time_rel"] == pytest.approx(0.75)
    assert runs.loc[("raptr", 2), "flops_per_step_rel"] == pytest.approx(0.75)


def test_main_table_has_one_row_per_variant_and_says_not_reached():
    table = main_table(*_study()).set_index("variant")
    assert list(table.index) == ["dense", "static", "raptr"]
    assert table.loc["dense", "flops_to_dense_rel_mean"] == pytest.approx(1.0)
    assert table.loc["static", "flops_to_dense_n"] == 0
    assert table.loc["raptr", "loss_at_budget_delta_mean"] == pytest.approx(-0.10)
    assert table.loc["raptr", "loss_at_budget_delta_ci95"] == pytest.approx(0.0, abs=1e-9)
    assert table.loc["static", "final_val_loss_n"] == len(SEEDS)
    shown = main_markdown(table.reset_index()).set_index("variant")
    assert shown.loc["static", "FLOPs to reach dense's final loss"] == "not reached (0/3 seeds)"
    reached = "2.524e+11, 0.631× ± 0.000 dense's (3/3 seeds)"  # 10 ** -0.2 of dense's 4e11
    assert shown.loc["raptr", "FLOPs to reach dense's final loss"] == reached
    assert shown.loc["raptr", "Δ vs dense at equal FLOPs"] == "-0.100 ± 0.000"
    assert shown.loc["dense", "Δ vs dense at equal FLOPs"] == "reference"


def test_claims_follow_the_interval_rule():
    claims = {c.key: c for c in evaluate_claims(run_table(*_study()))}
    assert claims["a"].statement.startswith("static") and claims["a"].verdict == FAILED
    assert claims["b"].statement.startswith("raptr") and claims["b"].verdict == HELD
    # static: 1.05x dense's step time for 0.25x its FLOPs; RaPTr 0.75x for 0.75x
    assert claims["c"].verdict == FAILED
    assert "static: step time 1.05× dense's against 0.250× its FLOPs" in claims["c"].evidence
    assert "raptr" in claims["c"].evidence and ": HELD" in claims["c"].evidence


def test_one_seed_is_inconclusive_and_no_dense_is_not_testable():
    frame, curves = _study()
    one = run_table(frame[frame["seed"] == 0], curves[curves["seed"] == 0])
    assert {c.verdict for c in evaluate_claims(one)} == {INCONCLUSIVE}
    no_dense = run_table(frame[frame["variant"] != "dense"], curves[curves["variant"] != "dense"])
    assert {c.verdict for c in evaluate_claims(no_dense)} == {UNTESTABLE}
