"""MST's claims and acceptance checks (mst.md §6), read with the one verdict rule
(analysis/verdicts.py) from the main table and ``tables/runs.csv``: its FLOP reduction, its
val loss and zero-shot accuracy against dense, MST against the other sparse methods at equal
FLOPs, and each of its components.
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.mst_runs import DENSE, MST
from analysis.variant_stats import (
    final_loss,
    loss_text,
    variant_row,
    zeroshot_accuracy,
)
from analysis.verdicts import (
    UNTESTABLE,
    Claim,
    Interval,
    at_least,
    at_most,
    from_checks,
    paired,
)
from analysis.zeroshot import zeroshot_scores

PAPER_REDUCTION = 4.0  # "~75 % fewer training FLOPs" (abstract); acceptance: ledger >= 4.0x
LOSS_TOLERANCE = 0.02  # nats: final val loss within +0.02 of dense (mst.md §6)
ZEROSHOT_TOLERANCE = 0.5  # points: zero-shot average within 0.5 of dense (mst.md §6)
BASELINES = ("static", "rigl", "set")  # constant-sparsity baselines at MST's FLOPs
EQUAL_FLOP_ABLATIONS = ("mst_nosv", "mst_nomix")
HSA_ABLATION = "mst_nohsa"
# accuracy of guessing, per multiple-choice task (lm-eval name without our prefix)
CHANCE = {
    "arc_easy": 0.25,
    "arc_challenge": 0.25,
    "hellaswag": 0.25,
    "openbookqa": 0.25,
    "piqa": 0.5,
    "boolq": 0.5,
    "winogrande": 0.5,
}


def claim_flops(main: pd.DataFrame, convention: str | None) -> Claim:
    """(a) the ledger's whole-run reduction for MST is at least 4.0×. The budget is solved to
    reach it, so the ledger checks the solver, not the claim: reported as a check."""
    statement = (
        f"MST trains with at least {PAPER_REDUCTION:g}× fewer FLOPs than dense "
        "(whole-run ledger, headline convention)"
    )
    mst = variant_row(main, MST)
    if mst is None or variant_row(main, DENSE) is None or not math.isfinite(mst["flops_reduction"]):
        return Claim("a", statement, UNTESTABLE, "needs a dense and an mst run with FLOP counts.")
    reduction = float(mst["flops_reduction"])
    evidence = (
        f"dense flops_total / MST flops_total = {reduction:.3f}× (each run's FLOP ledger: per "
        "step the masks' densities, sparse attention inside the HSA window and the dense "
        f"weight gradient of every mask-update step; convention `{convention}`)."
    )
    if convention != "megatron_full_attn":
        evidence += " This is not the headline convention (megatron_full_attn)."
    reached = reduction >= PAPER_REDUCTION - 1e-9 and convention == "megatron_full_attn"
    evidence += (
        f" Check: the ledger {'reaches' if reached else 'does NOT reach'} "
        f"{PAPER_REDUCTION:g}×. MST's peak sparsity is solved so that the ledger meets the "
        "study's budget, so this holds by construction and is not a finding; the FLOPs a "
        "sparse kernel would really save are not measured on dense CPU kernels."
    )
    return Claim("a", statement, UNTESTABLE, evidence)


def matched_dense(main: pd.DataFrame, runs: pd.DataFrame) -> tuple[str | None, str]:
    """The verdict on MST's final val loss within LOSS_TOLERANCE of dense, and the evidence."""
    mst, dense = variant_row(main, MST), variant_row(main, DENSE)
    if mst is None or dense is None or not math.isfinite(mst["val_loss_delta_mean"]):
        return None, "needs a dense and an mst run on the same seeds."
    delta = paired(final_loss(runs, MST), final_loss(runs, DENSE))
    evidence = (
        f"final val loss (dense attention): MST {loss_text(mst)} vs dense {loss_text(dense)}; "
        f"Δ (MST − dense, paired by seed) = {delta.text(3, ' nats')}, at "
        f"{mst['flops_reduction']:.2f}× fewer training FLOPs. The claim: the interval of "
        f"Δ ≤ +{LOSS_TOLERANCE:g} nats (mst.md §6)."
    )
    return at_most(delta, LOSS_TOLERANCE), evidence


def claim_quality(main: pd.DataFrame, runs: pd.DataFrame) -> Claim:
    """(b) MST's final val loss within +0.02 nats of dense at its FLOP reduction."""
    mst = variant_row(main, MST)
    known = mst is not None and math.isfinite(mst["flops_reduction"])
    at = f"{mst['flops_reduction']:.2f}× fewer" if known else "fewer"
    statement = (
        f"MST matched dense quality (val loss within +{LOSS_TOLERANCE:g} nats) at {at} FLOPs"
    )
    verdict, evidence = matched_dense(main, runs)
    return Claim("b", statement, verdict or UNTESTABLE, evidence)


def above_chance(runs: pd.DataFrame, variant: str) -> list[str]:
    """The multiple-choice tasks on which ``variant`` does not beat guessing (its 95 % interval
    over seeds does not lie above the chance accuracy)."""
    scores = zeroshot_scores(runs)
    scores = scores[(scores["variant"] == variant) & scores["metric"].isin(("acc", "acc_norm"))]
    at_chance = []
    for task, rows in scores.groupby("task"):
        chance = CHANCE.get(str(task).removeprefix("sparselm_"))
        score = Interval.of(rows["value"].tolist())
        if chance is not None and not (score.resolved and score.lo > chance):
            at_chance.append(f"{task} {score.mean:.3f} (chance {chance:g})")
    return at_chance


def claim_zeroshot(main: pd.DataFrame, runs: pd.DataFrame) -> Claim:
    """(c) MST's zero-shot average accuracy within 0.5 points of dense; not testable when the
    dense model does not beat guessing on a task (then both sit at chance)."""
    statement = f"MST's zero-shot average is within {ZEROSHOT_TOLERANCE:g} points of dense"
    mst, dense = variant_row(main, MST), variant_row(main, DENSE)
    if mst is None or dense is None or not math.isfinite(mst["zeroshot_acc_delta_mean"]):
        return Claim("c", statement, UNTESTABLE, (
            "needs zero-shot scores of dense and mst; the grid's zeroshot_tasks is empty at "
            "`tiny`, where every zero-shot task scored at chance."
        ))  # fmt: skip
    acc = zeroshot_accuracy(runs)
    by_seed = {v: 100.0 * acc[acc["variant"] == v].set_index("seed")["value"] for v in (MST, DENSE)}
    delta = paired(by_seed[MST], by_seed[DENSE])
    evidence = (
        f"mean accuracy over {int(mst['zeroshot_tasks'])} accuracy-scored zero-shot tasks: MST "
        f"{100 * mst['zeroshot_acc_mean']:.2f} vs dense {100 * dense['zeroshot_acc_mean']:.2f} "
        f"points; Δ (paired by seed) = {delta.text(2, ' points')}. The claim: the interval of "
        f"Δ ≥ −{ZEROSHOT_TOLERANCE:g} points."
    )
    at_chance = above_chance(runs, DENSE)
    if at_chance:
        return Claim(
            "c",
            statement,
            UNTESTABLE,
            f"{evidence} The dense model does not beat guessing on {', '.join(at_chance)}: "
            "scores at chance cannot show a quality difference.",
        )
    return Claim("c", statement, at_least(delta, -ZEROSHOT_TOLERANCE), evidence)


def _compare(
    runs: pd.DataFrame, mst: pd.Series, other: pd.Series, variant: str, slack: float = 0.0
) -> tuple[str, str]:
    delta = paired(final_loss(runs, MST), final_loss(runs, variant))
    text = (
        f"vs {variant}: {mst['val_loss_mean']:.3f} vs {other['val_loss_mean']:.3f} "
        f"(Δ {delta.text(3)}) at {mst['flops_reduction']:.2f}× vs "
        f"{other['flops_reduction']:.2f}× fewer FLOPs than dense"
    )
    return at_most(delta, slack), text


def claim_vs_baselines(main: pd.DataFrame, runs: pd.DataFrame) -> Claim:
    """(d) at equal FLOPs MST beats static sparsity and constant-sparsity DST."""
    statement = "At equal FLOPs MST beats static sparsity and RigL at constant sparsity"
    mst = variant_row(main, MST)
    checks = [
        _compare(runs, mst, other, v)
        for v in BASELINES
        if mst is not None and (other := variant_row(main, v)) is not None
    ]
    return from_checks("d", statement, checks, "needs an mst run and a static or rigl run.")


def claim_components(main: pd.DataFrame, runs: pd.DataFrame) -> Claim:
    """(e) each component helps: SV and mixed growing at equal FLOPs; HSA costs ≤ tolerance."""
    statement = (
        "Each MST component pays its way (final val loss ≤ MST without SV or without mixed "
        f"growing; ≤ MST without HSA + {LOSS_TOLERANCE:g} nats)"
    )
    mst = variant_row(main, MST)
    checks = [
        _compare(runs, mst, other, v)
        for v in EQUAL_FLOP_ABLATIONS
        if mst is not None and (other := variant_row(main, v)) is not None
    ]
    other = variant_row(main, HSA_ABLATION)
    if mst is not None and other is not None:
        checks.append(_compare(runs, mst, other, HSA_ABLATION, LOSS_TOLERANCE))
    return from_checks("e", statement, checks, "needs mst and at least one mst_* ablation.")


def evaluate_claims(main: pd.DataFrame, runs: pd.DataFrame, convention: str | None) -> list[Claim]:
    """All five claims; ``runs`` is tables/runs.csv (per-seed values for paired intervals)."""
    return [
        claim_flops(main, convention),
        claim_quality(main, runs),
        claim_zeroshot(main, runs),
        claim_vs_baselines(main, runs),
        claim_components(main, runs),
    ]
