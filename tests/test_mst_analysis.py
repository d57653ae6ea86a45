"""MST claims on hand-made tables and per-seed runs: the verdict rules of mst.md §6 under the
one interval rule (analysis.verdicts)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from analysis.mst_claims import evaluate_claims
from analysis.mst_report import verdict_sentence
from analysis.verdicts import FAILED, HELD, INCONCLUSIVE, UNTESTABLE

SEEDS = (0, 1, 2)
NOISE = (0.000, 0.002, -0.001)  # shared by every variant of a seed: paired spread is zero
VARIANTS = ("dense", "static", "mst", "mst_nosv", "mst_nohsa")


def _main(losses: dict[str, float], reduction: float, accs: dict[str, float]) -> pd.DataFrame:
    """The main table the report reads (means only: the claims take intervals from runs)."""
    rows = [
        (v, losses[v], 1.0 if v == "dense" else reduction * (0.75 if v == "mst_nohsa" else 1))
        for v in VARIANTS
    ]
    frame = pd.DataFrame(rows, columns=["variant", "val_loss_mean", "flops_reduction"])
    frame["zeroshot_acc_mean"] = frame["variant"].map(accs)
    frame["val_loss_ci95"], frame["val_loss_n"] = math.nan, len(SEEDS)
    frame["val_loss_delta_mean"] = frame["val_loss_mean"] - losses["dense"]
    frame["zeroshot_acc_delta_mean"] = frame["zeroshot_acc_mean"] - accs["dense"]
    frame["zeroshot_tasks"] = 2
    return frame


def _runs(losses: dict[str, float], accs: dict[str, float], spread: float = 0.0) -> pd.DataFrame:
    """Per-seed rows as analysis.collect writes them; ``spread`` adds MST-only seed noise."""
    rows = []
    for v in VARIANTS:
        for seed, noise in zip(SEEDS, NOISE, strict=True):
            own = spread * (seed - 1) if v == "mst" else 0.0
            rows.append(("pretrain", None, v, seed, "final_val_loss", losses[v] + noise + own))
            for task, offset in (("sparselm_arc_easy", -0.1), ("sparselm_piqa", 0.1)):
                rows.append(("eval_zeroshot", task, v, seed, "acc", accs[v] + offset + noise))
    return pd.DataFrame(rows, columns=["stage", "task", "variant", "seed", "metric", "value"])


LOSSES = {"dense": 3.00, "static": 3.10, "mst": 3.015, "mst_nosv": 3.05, "mst_nohsa": 3.005}
ACCS = {"dense": 0.6, "static": 0.59, "mst": 0.6, "mst_nosv": 0.595, "mst_nohsa": 0.6}


def _claims(
    losses=LOSSES, accs=ACCS, reduction=4.0004, spread=0.0, convention="megatron_full_attn"
):
    main, runs = _main(losses, reduction, accs), _runs(losses, accs, spread)
    return {c.key: c for c in evaluate_claims(main, runs, convention)}, main, runs


def test_mst_within_tolerance_holds_every_measured_claim():
    claims, main, runs = _claims()
    # (a) is met by construction (the budget is solved to reach it): a check, not a finding
    assert claims["a"].verdict == UNTESTABLE and "holds by construction" in claims["a"].evidence
    assert [claims[k].verdict for k in "bcde"] == [HELD] * 4
    assert verdict_sentence(main, runs).startswith(
        "**MST matched dense quality here**: at 4.00× fewer training FLOPs"
    )


def test_a_loss_gap_above_two_hundredths_of_a_nat_is_not_a_match():
    claims, main, runs = _claims(LOSSES | {"mst": 3.03}, ACCS | {"mst": 0.59})
    assert claims["b"].verdict == FAILED and "+0.030 nats" in claims["b"].evidence
    assert claims["c"].verdict == FAILED  # −1.0 point on zero-shot, on every seed
    assert claims["d"].verdict == HELD  # still ahead of static
    assert "did not match dense quality here" in verdict_sentence(main, runs)


def test_a_gap_whose_interval_straddles_the_tolerance_is_inconclusive():
    claims, main, runs = _claims(spread=0.03)  # MST's seeds at 2.985, 3.015, 3.045
    assert claims["b"].verdict == INCONCLUSIVE
    assert "inconclusive" in verdict_sentence(main, runs)


def test_zero_shot_at_chance_is_not_testable():
    at_chance = {v: 0.3 for v in VARIANTS}  # arc_easy 0.2 (chance 0.25), piqa 0.4 (chance 0.5)
    claims, _, _ = _claims(accs=at_chance)
    assert claims["c"].verdict == UNTESTABLE and "does not beat guessing" in claims["c"].evidence


@pytest.mark.parametrize("convention", ["megatron_full_attn", "causal_half_attn"])
def test_flop_claim_is_reported_as_a_check(convention):
    for reduction, reached in ((3.99, "does NOT reach"), (4.2, "reaches")):
        claims, _, _ = _claims(reduction=reduction, convention=convention)
        assert claims["a"].verdict == UNTESTABLE
        if convention == "megatron_full_attn":
            assert f"the ledger {reached} 4×" in claims["a"].evidence
        else:
            assert "not the headline convention" in claims["a"].evidence


def test_without_dense_nothing_is_claimed():
    main, runs = _main(LOSSES, 4.0, ACCS), _runs(LOSSES, ACCS)
    main = main[main["variant"] != "dense"]
    claims = evaluate_claims(main, runs, "megatron_full_attn")
    assert [c.verdict for c in claims[:3]] == [UNTESTABLE] * 3
    assert verdict_sentence(main, runs).startswith("MST could not be compared with dense")
