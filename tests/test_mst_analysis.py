"""MST claims on hand-made tables: the verdict rules of mst.md §6, stated plainly."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from analysis.mst_claims import evaluate_claims
from analysis.mst_report import verdict_sentence
from analysis.spdf_claims import FAILED, HELD, UNTESTABLE


def _main(mst_loss: float, reduction: float, mst_acc: float = 0.500) -> pd.DataFrame:
    """A main table with dense (loss 3.00), static, MST and two ablations, one seed each."""
    rows = [
        ("dense", 3.00, 1.0, 0.500),
        ("static", 3.10, reduction, 0.490),
        ("mst", mst_loss, reduction, mst_acc),
        ("mst_nosv", 3.05, reduction, 0.495),
        ("mst_nohsa", mst_loss - 0.01, reduction * 0.75, 0.500),
    ]
    frame = pd.DataFrame(
        rows, columns=["variant", "val_loss_mean", "flops_reduction", "zeroshot_acc_mean"]
    )
    frame["val_loss_ci95"], frame["val_loss_n"] = math.nan, 1
    frame["val_loss_delta_mean"] = frame["val_loss_mean"] - 3.00
    frame["val_loss_delta_ci95"] = math.nan
    frame["zeroshot_acc_delta_mean"] = frame["zeroshot_acc_mean"] - 0.500
    frame["zeroshot_acc_delta_ci95"], frame["zeroshot_tasks"] = math.nan, 3
    return frame


def test_mst_within_tolerance_at_four_times_holds_every_claim():
    claims = evaluate_claims(_main(3.015, 4.0004), "megatron_full_attn")
    assert [c.verdict for c in claims] == [HELD] * 5
    assert verdict_sentence(_main(3.015, 4.0004)).startswith(
        "**MST matched dense quality here**: at 4.00× fewer training FLOPs"
    )


def test_a_loss_gap_above_two_hundredths_of_a_nat_is_not_a_match():
    main = _main(3.03, 4.0004, mst_acc=0.490)
    by_key = {c.key: c for c in evaluate_claims(main, "megatron_full_attn")}
    assert by_key["b"].verdict == FAILED and "Δ = +0.030 nats" in by_key["b"].evidence
    assert by_key["c"].verdict == FAILED  # −1.0 point on zero-shot
    assert by_key["d"].verdict == HELD  # still ahead of static
    assert "did not match dense quality here" in verdict_sentence(main)


@pytest.mark.parametrize(
    ("reduction", "convention", "verdict"),
    [
        (3.99, "megatron_full_attn", FAILED),
        (4.2, "causal_half_attn", FAILED),  # not the headline convention
        (4.2, "megatron_full_attn", HELD),
    ],
)
def test_flop_claim_needs_four_times_under_the_headline_convention(reduction, convention, verdict):
    assert evaluate_claims(_main(3.0, reduction), convention)[0].verdict == verdict


def test_without_dense_nothing_is_claimed():
    main = _main(3.0, 4.0)
    main = main[main["variant"] != "dense"]
    claims = evaluate_claims(main, "megatron_full_attn")
    assert [c.verdict for c in claims[:3]] == [UNTESTABLE] * 3
    assert verdict_sentence(main).startswith("MST could not be compared with dense")
