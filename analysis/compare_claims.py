"""The comparison study's claims, read with the one verdict rule (analysis/verdicts.py).

- one claim per efficient method: at equal training FLOPs (the smallest budget any run
  reached) its val loss is below dense's, paired by seed;
- one claim over every method: the FLOPs its ledger saves per step are time saved here, i.e.
  its measured step time relative to dense is at most ``TIME_TOLERANCE`` times the ledger's
  FLOPs-per-step ratio, paired by seed.

A method's FLOP reduction is not a claim: the ledger meets its own formula by construction
(and MST's is solved to its budget); the table reports it as a number.
"""

from __future__ import annotations

import string

import pandas as pd

from analysis.compare_tables import DENSE, ordered_variants
from analysis.verdicts import UNTESTABLE, Claim, Interval, at_most, from_checks

LOSS_TOLERANCE = 0.0  # nats: "below dense" at equal FLOPs, with no margin
TIME_TOLERANCE = 1.10  # measured step-time ratio may exceed the FLOP ratio by 10 % (noise)


def ratio_text(interval: Interval) -> str:
    """``1.23× [1.10, 1.36] (n=3)``, or ``1.23× (n=1, no interval)``."""
    if not interval.resolved:
        return f"{interval.mean:.2f}× (n={interval.n}, no interval)"
    return f"{interval.mean:.2f}× [{interval.lo:.2f}, {interval.hi:.2f}] (n={interval.n})"


def _by_seed(runs: pd.DataFrame, variant: str, column: str) -> pd.Series:
    rows = runs[runs["variant"] == variant].set_index("seed")[column]
    return rows.dropna()


def equal_flops_claim(key: str, runs: pd.DataFrame, variant: str) -> Claim:
    """``variant``'s val loss at the equal-FLOPs budget minus dense's, paired by seed, < 0."""
    statement = f"{variant} reaches a lower val loss than dense at equal training FLOPs"
    delta = _by_seed(runs, variant, "loss_at_budget_delta")
    if delta.empty:
        return Claim(
            key,
            statement,
            UNTESTABLE,
            f"no seed has both a dense and a {variant} curve covering the budget.",
        )
    interval = Interval.of(delta.tolist())
    budget = float(runs["budget"].iloc[0])
    evidence = (
        f"val loss at {budget:.3e} training FLOPs (the smallest total any run reached), "
        f"{variant} − dense of the same seed: {interval.text(3, ' nats')}; the claim holds "
        f"when the interval lies below {LOSS_TOLERANCE:g}."
    )
    return Claim(key, statement, at_most(interval, LOSS_TOLERANCE), evidence)


def time_claim(key: str, runs: pd.DataFrame, variants: list[str]) -> Claim:
    """Per method: (measured step-time ratio) / (ledger FLOPs-per-step ratio) <= tolerance."""
    statement = (
        f"the FLOPs each method saves per step are time saved here (measured step time vs "
        f"dense at most {TIME_TOLERANCE:g}× the ledger's FLOPs-per-step ratio)"
    )
    checks = []
    for variant in variants:
        rows = runs[runs["variant"] == variant].dropna(
            subset=["step_time_rel", "flops_per_step_rel"]
        )
        if rows.empty:
            continue
        excess = Interval.of((rows["step_time_rel"] / rows["flops_per_step_rel"]).tolist())
        text = (
            f"{variant}: step time {rows['step_time_rel'].mean():.2f}× dense's against "
            f"{rows['flops_per_step_rel'].mean():.3f}× its FLOPs, measured/predicted "
            f"{ratio_text(excess)}"
        )
        checks.append((at_most(excess, TIME_TOLERANCE), text))
    return from_checks(key, statement, checks, "no method has a dense run of the same seed.")


def evaluate_claims(runs: pd.DataFrame) -> list[Claim]:
    """(a), (b), ...: one equal-FLOPs claim per method but dense, then the step-time claim."""
    variants = [v for v in ordered_variants(runs["variant"].unique()) if v != DENSE]
    keys = iter(string.ascii_lowercase)
    claims = [equal_flops_claim(next(keys), runs, v) for v in variants]
    return [*claims, time_claim(next(keys), runs, variants)]
