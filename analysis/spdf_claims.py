"""The paper's claims (spdf.md §7) as checks on our tables, each with a verdict and evidence.

Inputs are the tables' CSVs (themselves built from results/ files), so every number a verdict
quotes can be traced to a metrics.json. Verdicts compare means over seeds; they are ordering
and threshold checks, not significance tests (the report says so).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from analysis.spdf_tables import FULL, MIN_DENSE_BLEU, sparsity_label, task_name

HELD, FAILED, UNTESTABLE = "HELD", "DID NOT HOLD", "NOT TESTABLE"
PAPER_REDUCTION = 2.5  # GPT-3 XL, T=2048, 75 % sparsity [abstract]; §6 gives 2.49
PAPER_SPARSITY = 0.75
BLEU_TOLERANCE = 1.0  # |ΔBLEU| at 75 % (spdf.md §7 acceptance check)
ACCOUNTING_TOLERANCE = 0.02  # measured vs analytic FLOP reduction, relative


@dataclass(frozen=True)
class Claim:
    key: str
    statement: str
    verdict: str
    evidence: str


@dataclass(frozen=True)
class Scale:
    """What the reduction depends on: the model shape's name and the context length."""

    model: str | None
    seq_len: int | None


def _row(table: pd.DataFrame, sparsity: float) -> pd.Series | None:
    rows = table[table["sparsity"] == sparsity]
    return None if rows.empty else rows.iloc[0]


def claim_flops(main: pd.DataFrame, scale: Scale) -> Claim:
    """(a) the 75 % FLOP reduction: ledger total vs the analytic per-token value for our model."""
    statement = (
        f"{PAPER_SPARSITY:.0%} sparsity cuts pre-training FLOPs "
        f"(paper: {PAPER_REDUCTION}× for GPT-3 XL at T=2048)"
    )
    dense, sparse = _row(main, 0.0), _row(main, PAPER_SPARSITY)
    if dense is None or sparse is None:
        return Claim("a", statement, UNTESTABLE, "needs a dense and a 75 % pre-training run.")
    analytic = float(sparse["flops_reduction"])
    measured = float(dense["pretrain_flops_total"]) / float(sparse["pretrain_flops_total"])
    if not (math.isfinite(analytic) and math.isfinite(measured)):
        return Claim("a", statement, UNTESTABLE, "pre-training FLOP counts are missing.")
    consistent = abs(measured / analytic - 1) <= ACCOUNTING_TOLERANCE
    paper_scale = scale.model == "gpt3_xl" and scale.seq_len == 2048
    held = consistent and (abs(analytic - PAPER_REDUCTION) <= 0.05 if paper_scale else analytic > 1)
    evidence = (
        f"measured {measured:.2f}× fewer total pre-training FLOPs at 75 % (dense "
        f"flops_total / 75 % flops_total); the §6 formula predicts {analytic:.2f}× per "
        f"token for our model ({scale.model}, T={scale.seq_len}; metrics.json "
        "flops_reduction). "
    )
    if paper_scale:
        evidence += f"This is the paper's scale, so the target is {PAPER_REDUCTION}× (± 0.05)."
    else:
        evidence += (
            f"The paper's {PAPER_REDUCTION}× is for GPT-3 XL at T=2048 and is not "
            "expected at our scale, so the check is measured vs our analytic value "
            f"(within {ACCOUNTING_TOLERANCE:.0%})."
        )
    return Claim("a", statement, HELD if held else FAILED, evidence)


def _at(drop: pd.DataFrame, fraction: float, sparsity: float | None = None) -> pd.DataFrame:
    rows = drop[(drop["fraction"] == fraction) & drop["rel_drop_pct"].notna()]
    return rows if sparsity is None else rows[rows["sparsity"] == sparsity]


def claim_bleu_within_one(drop: pd.DataFrame) -> Claim:
    """(b) |ΔBLEU| at 75 % vs dense ≤ 1 BLEU on every task (fraction 1.0)."""
    statement = (
        f"|ΔBLEU| of the {PAPER_SPARSITY:.0%} model vs dense is ≤ {BLEU_TOLERANCE:g} "
        "BLEU on each task (fine-tuning fraction 1.0)"
    )
    rows = drop[(drop["fraction"] == FULL) & (drop["sparsity"] == PAPER_SPARSITY)]
    rows = rows[rows["delta_bleu"].notna()]
    if rows.empty:
        return Claim("b", statement, UNTESTABLE, "no 75 % and dense BLEU at fraction 1.0.")
    weak = rows[rows["dense_bleu"] < MIN_DENSE_BLEU]
    if not weak.empty:
        names = ", ".join(f"{task_name(r.task)} {r.dense_bleu:.2f}" for r in weak.itertuples())
        return Claim(
            "b",
            statement,
            UNTESTABLE,
            f"dense BLEU below {MIN_DENSE_BLEU:g} ({names}): at this scale the dense "
            "model does not yet produce scoreable text, so a small ΔBLEU means nothing.",
        )
    parts = [f"{task_name(r.task)} {r.delta_bleu:+.2f}" for r in rows.itertuples()]
    held = bool((rows["delta_bleu"].abs() <= BLEU_TOLERANCE).all())
    return Claim("b", statement, HELD if held else FAILED, "ΔBLEU: " + ", ".join(parts) + ".")


def _non_decreasing(values: Sequence[float]) -> bool:
    return all(b >= a for a, b in zip(values, values[1:], strict=False))


def claim_grows_with_sparsity(drop: pd.DataFrame) -> Claim:
    """(c) per task, the BLEU drop at 75 % is at least the drop at 50 % (fraction 1.0)."""
    statement = "degradation grows with sparsity (drop at 75 % ≥ drop at 50 %, per task, f=1.0)"
    checks = []
    for task, rows in _at(drop, FULL).groupby("task", sort=False):
        rows = rows.sort_values("sparsity")
        if len(rows) >= 2:
            steps = " → ".join(
                f"{sparsity_label(s)} {d:.1f} %"
                for s, d in zip(rows["sparsity"], rows["rel_drop_pct"], strict=True)
            )
            drops = list(rows["rel_drop_pct"])
            # "grows" needs an actual degradation at the top level, not a smaller gain
            checks.append((_non_decreasing(drops) and drops[-1] > 0, f"{task_name(task)}: {steps}"))
    return _verdict(
        "c", statement, checks, f"needs two sparse levels with dense BLEU ≥ {MIN_DENSE_BLEU:g}."
    )


def claim_smaller_data_smaller_drop(drop: pd.DataFrame, sizes: pd.Series) -> Claim:
    """(d) smaller fine-tuning sets (tasks by train_examples; fractions) degrade less."""
    statement = (
        "degradation is smaller on smaller datasets: across tasks ordered by train "
        "examples, and across fine-tuning fractions within a task"
    )
    checks = []
    full = _at(drop, FULL)
    if not full.empty:
        top = full["sparsity"].max()
        rows = full[full["sparsity"] == top].assign(size=lambda f: f["task"].map(sizes))
        rows = rows.dropna(subset=["size"]).sort_values("size", kind="stable")
        if len(rows) >= 2:
            order = ", ".join(
                f"{task_name(r.task)} ({r.size:,.0f} ex.) {r.rel_drop_pct:.1f} %"
                for r in rows.itertuples()
            )
            checks.append(
                (
                    _non_decreasing(list(rows["rel_drop_pct"])),
                    f"tasks at {sparsity_label(top)}, f=1.0: {order}",
                )
            )
    valid = drop[drop["rel_drop_pct"].notna()]
    for (task, s), rows in valid.groupby(["task", "sparsity"], sort=False):
        rows = rows.sort_values("fraction")
        if len(rows) >= 2:
            steps = " → ".join(
                f"f={f:g} {d:.1f} %"
                for f, d in zip(rows["fraction"], rows["rel_drop_pct"], strict=True)
            )
            checks.append(
                (
                    _non_decreasing(list(rows["rel_drop_pct"])),
                    f"{task_name(task)} {sparsity_label(s)}: {steps}",
                )
            )
    return _verdict(
        "d",
        statement,
        checks,
        f"needs relative drops (dense BLEU ≥ {MIN_DENSE_BLEU:g}) for two tasks or two fractions.",
    )


def _verdict(key: str, statement: str, checks: list[tuple[bool, str]], missing: str) -> Claim:
    """HELD if every check passes, DID NOT HOLD if any fails; failing checks are marked."""
    if not checks:
        return Claim(key, statement, UNTESTABLE, missing)
    lines = [text if ok else f"{text} (**fails**)" for ok, text in checks]
    held = all(ok for ok, _ in checks)
    return Claim(key, statement, HELD if held else FAILED, "; ".join(lines) + ".")


def evaluate_claims(
    main: pd.DataFrame, drop: pd.DataFrame, sizes: pd.Series, scale: Scale
) -> list[Claim]:
    """All four claims; ``sizes`` maps task -> fine-tuning train examples at fraction 1.0."""
    return [
        claim_flops(main, scale),
        claim_bleu_within_one(drop),
        claim_grows_with_sparsity(drop),
        claim_smaller_data_smaller_drop(drop, sizes),
    ]
