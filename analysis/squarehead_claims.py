"""SquareHead's claims (squarehead.md §1) as checks on the collected runs, each with verdict and
evidence: does CE+SquareHead recover more than plain CE at high sparsity, by task score (BLEU,
when the students score enough for it to mean something) and by held-out task loss; and does
SparseGPT damage the model less than magnitude pruning. Verdicts follow ``analysis.verdicts``.
"""

from __future__ import annotations

import pandas as pd

from analysis.squarehead_runs import PRUNER_LABELS
from analysis.verdicts import UNTESTABLE, Claim, above, from_checks, paired

MIN_BLEU = 5.0  # below this a model barely writes scoreable text


def _high_cells(runs: pd.DataFrame, high: float) -> pd.DataFrame:
    """Unstructured-target students at or above the high sparsity."""
    return runs[(runs["sparsity"] >= high - 1e-9) & runs["target"].str.match(r"^\d")]


def _by_seed(rows: pd.DataFrame, loss: str, metric: str) -> pd.Series:
    return rows[rows["loss"] == loss].groupby("seed")[metric].mean()


def _gain_checks(runs: pd.DataFrame, metric: str, high: float, higher_is_better: bool) -> list:
    """Per high-sparsity (pruner, sparsity) cell: SquareHead's gain over CE, paired by seed
    (positive: SquareHead better), judged > 0."""
    checks = []
    if metric not in runs:
        return checks
    for (pruner, sparsity), cell in _high_cells(runs, high).groupby(["pruner", "sparsity"]):
        sq, ce = _by_seed(cell, "ce_squarehead", metric), _by_seed(cell, "ce", metric)
        if sq.empty or ce.empty:
            continue
        gain = paired(sq, ce) if higher_is_better else paired(ce, sq)
        text = (
            f"{PRUNER_LABELS.get(pruner, pruner)} {sparsity:.0%}: SquareHead {sq.mean():.3f} vs "
            f"CE {ce.mean():.3f}, gain {gain.text(3)}"
        )
        checks.append((above(gain, 0.0), text))
    return checks


def evaluate_claims(runs: pd.DataFrame, high: float) -> list[Claim]:
    """(a) BLEU and (b) held-out loss: SquareHead's gain over CE at ``high`` sparsity and above;
    (c) SparseGPT against magnitude pruning."""
    statement_a = (
        f"CE+SquareHead recovers more task quality (BLEU) than CE at ≥ {high:.0%} sparsity"
    )
    statement_b = (
        f"CE+SquareHead reaches a lower held-out task loss than CE at ≥ {high:.0%} sparsity"
    )
    weak_teacher = teacher_check(runs)
    if weak_teacher is not None:  # distillation towards a worse teacher tests nothing
        why = f"{weak_teacher} Distilling towards a teacher worse than its students is no test."
        return [
            Claim("a", statement_a, UNTESTABLE, why),
            Claim("b", statement_b, UNTESTABLE, why),
            _pruner_claim(runs),
        ]
    cells = _high_cells(runs, high)
    ce_bleu = cells.loc[cells["loss"] == "ce", "bleu"] if "bleu" in cells else pd.Series()
    best_ce = float(ce_bleu.max()) if len(ce_bleu) else float("nan")
    if not best_ce >= MIN_BLEU:  # NaN too: nothing scored
        claim_a = Claim("a", statement_a, UNTESTABLE, (
            f"The CE students' BLEU at high sparsity is at most {best_ce:.2f} (< {MIN_BLEU:g}): "
            "at this scale they barely write scoreable text, so BLEU differences are noise. "
            "Claim (b) compares the held-out task loss instead."
        ))  # fmt: skip
    else:
        checks = _gain_checks(runs, "bleu", high, True)
        claim_a = from_checks("a", statement_a, checks, "No cell has CE and SquareHead runs.")
    checks = _gain_checks(runs, "final_val_loss", high, False)
    claim_b = from_checks("b", statement_b, checks, "No cell has CE and SquareHead runs.")
    claim_b = Claim("b", claim_b.statement, claim_b.verdict,
                    f"{teacher_precondition(runs)} {claim_b.evidence}")  # fmt: skip
    return [claim_a, claim_b, _pruner_claim(runs)]


def teacher_check(runs: pd.DataFrame) -> str | None:
    """The precondition of distillation: the teacher is better (lower val CE) than every CE
    student ends up. None when it holds; else why the distillation claims are not testable."""
    sparse = runs[runs["loss"] != "dense"]
    if sparse.empty or "dense_val_loss" not in sparse:
        return None
    teacher = float(sparse["dense_val_loss"].mean())
    ce = sparse.loc[sparse["loss"] == "ce", "final_val_loss"]
    if ce.empty or not ce.min() < teacher:
        return None
    return (
        f"The dense teacher's val CE is {teacher:.3f}, but {int((ce < teacher).sum())} of "
        f"{len(ce)} CE students end below it ({ce.min():.3f}–{ce.max():.3f}): the teacher is "
        "under-trained for this grid. Fine-tune it longer (`teacher_overrides`)."
    )


def teacher_precondition(runs: pd.DataFrame) -> str:
    """One line for the report: what the precondition compared and whether it held."""
    sparse = runs[runs["loss"] != "dense"]
    ce = sparse.loc[sparse["loss"] == "ce", "final_val_loss"] if len(sparse) else pd.Series()
    if ce.empty or "dense_val_loss" not in sparse:
        return "Precondition (teacher better than every CE student): no CE student to compare."
    teacher = float(sparse["dense_val_loss"].mean())
    held = "holds" if ce.min() >= teacher else "fails"
    return (
        f"Precondition (teacher better than every CE student) {held}: teacher val CE "
        f"{teacher:.3f}, CE students {ce.min():.3f}–{ce.max():.3f}."
    )


def _pruner_claim(runs: pd.DataFrame) -> Claim:
    """(c) per sparsity, magnitude's val CE right after pruning minus SparseGPT's, paired by
    seed, is > 0."""
    statement = "SparseGPT damages the model less than magnitude pruning (val CE right after it)"
    col = "pruned_val_loss"
    cells = runs[runs["target"].str.match(r"^\d") & runs["pruner"].isin(["sparsegpt", "magnitude"])]
    if col not in cells or cells.empty:
        return Claim("c", statement, UNTESTABLE, "No one-shot runs of both pruners.")
    checks = []
    for sparsity, cell in cells.groupby("sparsity"):
        by = {
            p: cell[cell["pruner"] == p].groupby("seed")[col].mean()
            for p in ("sparsegpt", "magnitude")
        }
        if any(v.empty for v in by.values()):
            continue
        gain = paired(by["magnitude"], by["sparsegpt"])
        text = (
            f"{sparsity:.0%}: SparseGPT {by['sparsegpt'].mean():.3f} vs magnitude "
            f"{by['magnitude'].mean():.3f}, magnitude − SparseGPT {gain.text(3)}"
        )
        checks.append((above(gain, 0.0), text))
    return from_checks("c", statement, checks, "Only one pruner was run.")
