"""The one rule every study report uses to turn a measured interval into a verdict.

A claim compares one quantity (a paired difference, a ratio) with a tolerance. Its verdict:

- HELD: the whole 95 % interval of the quantity lies on the claim's side of the tolerance;
- DID NOT HOLD: the whole interval lies on the other side;
- INCONCLUSIVE: the interval straddles the tolerance, or there is no interval (one seed);
- NOT TESTABLE: a stated precondition failed (a dense score below its floor, a teacher worse
  than its students, scores at chance, a pretraining gap of zero, missing runs).

A claim made of several checks (one per task, say) HELD when every check HELD, DID NOT HOLD
when any check did not, and is INCONCLUSIVE otherwise. Checks that hold by construction (a FLOP
ledger against its own formula, a solved budget) are reported as checks, never as claims.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd

from analysis.stats import mean_ci

HELD, FAILED, INCONCLUSIVE, UNTESTABLE = "HELD", "DID NOT HOLD", "INCONCLUSIVE", "NOT TESTABLE"
VERDICTS = (HELD, FAILED, INCONCLUSIVE, UNTESTABLE)

RULES_MD = (
    "Each claim compares one quantity with a tolerance, using its 95 % interval (Student t "
    "over seeds, on differences paired by seed: same seed, same data order, same test inputs; "
    "a BLEU difference between two models adds sacrebleu's paired bootstrap over the test "
    "inputs to the seed spread). "
    "**HELD** / **DID NOT HOLD** only when the whole interval lies on one side of the "
    "tolerance; **INCONCLUSIVE** when it straddles it or when one seed gives no interval; "
    "**NOT TESTABLE** when a stated precondition fails. A claim over several checks holds "
    "when every check holds and fails when any check fails. Checks that hold by construction "
    "(a FLOP ledger against its own formula, a solved budget) are reported as checks, not "
    "claims."
)


@dataclass(frozen=True)
class Claim:
    key: str
    statement: str
    verdict: str
    evidence: str

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")


@dataclass(frozen=True)
class Interval:
    """A mean with its 95 % half-width over ``n`` values (half-width NaN: no interval)."""

    mean: float
    half: float
    n: int
    inputs: int = 0  # > 0: the half-width also covers resampling this many test inputs

    @classmethod
    def of(cls, values: Iterable[float]) -> Interval:
        return cls(*mean_ci(values))

    @property
    def resolved(self) -> bool:
        enough = self.n >= 2 or (self.n == 1 and self.inputs > 0)
        return enough and math.isfinite(self.mean) and math.isfinite(self.half)

    @property
    def lo(self) -> float:
        return self.mean - self.half

    @property
    def hi(self) -> float:
        return self.mean + self.half

    def text(self, digits: int = 3, unit: str = "") -> str:
        if not math.isfinite(self.mean):
            return "–"
        if not self.resolved:
            return f"{self.mean:+.{digits}f}{unit} (n={self.n}, no interval)"
        size = f"n={self.n}" + (f" seeds × {self.inputs} inputs, bootstrap" if self.inputs else "")
        return (
            f"{self.mean:+.{digits}f}{unit} [{self.lo:+.{digits}f}, {self.hi:+.{digits}f}] ({size})"
        )


def at_most(interval: Interval, bound: float) -> str:
    """The claim "quantity ≤ bound"."""
    if not interval.resolved:
        return INCONCLUSIVE
    if interval.hi <= bound:
        return HELD
    return FAILED if interval.lo > bound else INCONCLUSIVE


def at_least(interval: Interval, bound: float) -> str:
    """The claim "quantity ≥ bound"."""
    if not interval.resolved:
        return INCONCLUSIVE
    if interval.lo >= bound:
        return HELD
    return FAILED if interval.hi < bound else INCONCLUSIVE


def above(interval: Interval, bound: float) -> str:
    """The claim "quantity > bound" (a strict increase, as in "degradation grows")."""
    if not interval.resolved:
        return INCONCLUSIVE
    if interval.lo > bound:
        return HELD
    return FAILED if interval.hi <= bound else INCONCLUSIVE


def within(interval: Interval, tolerance: float) -> str:
    """The claim "|quantity| ≤ tolerance" (equivalence)."""
    if not interval.resolved:
        return INCONCLUSIVE
    if -tolerance <= interval.lo and interval.hi <= tolerance:
        return HELD
    if interval.lo > tolerance or interval.hi < -tolerance:
        return FAILED
    return INCONCLUSIVE


def combine(verdicts: Sequence[str]) -> str:
    """All checks HELD -> HELD; any DID NOT HOLD -> DID NOT HOLD; else INCONCLUSIVE."""
    if not verdicts:
        return UNTESTABLE
    if any(v == FAILED for v in verdicts):
        return FAILED
    return HELD if all(v == HELD for v in verdicts) else INCONCLUSIVE


def from_checks(key: str, statement: str, checks: Sequence[tuple[str, str]], missing: str) -> Claim:
    """A claim over several (verdict, text) checks; each check's verdict is shown beside it."""
    if not checks:
        return Claim(key, statement, UNTESTABLE, missing)
    lines = [f"{text}: {verdict}" for verdict, text in checks]
    return Claim(key, statement, combine([v for v, _ in checks]), "; ".join(lines) + ".")


def paired(a: pd.Series, b: pd.Series) -> Interval:
    """Interval of ``a − b`` over the seeds (index) both have."""
    shared = a.index.intersection(b.index)
    return Interval.of((a[shared] - b[shared]).tolist())
