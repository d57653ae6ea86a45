"""The one verdict rule: an interval wholly on one side of the tolerance, or INCONCLUSIVE."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from analysis.verdicts import (
    FAILED,
    HELD,
    INCONCLUSIVE,
    UNTESTABLE,
    Claim,
    Interval,
    above,
    at_least,
    at_most,
    combine,
    from_checks,
    paired,
    within,
)


def iv(lo: float, hi: float, n: int = 3) -> Interval:
    return Interval((lo + hi) / 2, (hi - lo) / 2, n)


@pytest.mark.parametrize(
    "interval, verdict",
    [
        (iv(-0.05, 0.005), HELD),  # wholly below +0.01
        (iv(0.02, 0.08), FAILED),  # wholly above
        (iv(-0.3, 0.5), INCONCLUSIVE),  # straddles: the RaPTr (a) case, Δ = +0.108 ± 0.551
        (Interval(-1.0, math.nan, 1), INCONCLUSIVE),  # one seed: no interval, even far below
    ],
)
def test_at_most(interval: Interval, verdict: str) -> None:
    assert at_most(interval, 0.01) == verdict


@pytest.mark.parametrize(
    "interval, verdict",
    [
        (iv(-0.4, 0.4), HELD),
        (iv(1.2, 3.0), FAILED),
        (iv(-3.0, -1.5), FAILED),
        (iv(0.5, 1.5), INCONCLUSIVE),
    ],
)
def test_within(interval: Interval, verdict: str) -> None:
    assert within(interval, 1.0) == verdict


def test_at_least_and_above() -> None:
    assert at_least(iv(-0.4, 0.2), -0.5) == HELD
    assert at_least(iv(-2.0, -0.6), -0.5) == FAILED
    assert at_least(iv(-0.8, 0.2), -0.5) == INCONCLUSIVE
    assert above(iv(0.1, 0.3), 0.0) == HELD
    assert above(iv(-0.3, 0.0), 0.0) == FAILED  # "grows" needs more than no change
    assert above(iv(-0.1, 0.3), 0.0) == INCONCLUSIVE


def test_combine_checks() -> None:
    assert combine([HELD, HELD]) == HELD
    assert combine([HELD, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([INCONCLUSIVE, FAILED, HELD]) == FAILED
    assert combine([]) == UNTESTABLE
    claim = from_checks("x", "s", [(HELD, "task A"), (INCONCLUSIVE, "task B")], "none")
    assert claim.verdict == INCONCLUSIVE and "task B: INCONCLUSIVE" in claim.evidence
    assert from_checks("x", "s", [], "needs runs").verdict == UNTESTABLE


def test_paired_uses_shared_seeds_and_student_t() -> None:
    a = pd.Series({0: 1.0, 1: 2.0, 2: 3.0, 7: 100.0})
    b = pd.Series({0: 0.5, 1: 1.0, 2: 2.0})
    d = paired(a, b)  # seed 7 has no partner: left out
    assert d.n == 3 and d.mean == pytest.approx(2.5 / 3)
    # t(0.975, 2) = 4.303; sd of (0.5, 1, 1) = 0.2887
    assert d.half == pytest.approx(4.303 * 0.288675 / math.sqrt(3), rel=1e-3)


def test_a_claim_refuses_an_unknown_verdict() -> None:
    with pytest.raises(ValueError, match="PASSED"):
        Claim("a", "s", "PASSED", "e")
