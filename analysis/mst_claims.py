"""MST's claims and acceptance checks (mst.md §6) on our tables, each with verdict and evidence.

Inputs are the tables' CSVs (built from results/ files only). Verdicts compare means over
seeds against the spec's tolerances; they are not significance tests (the report says so).
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.mst_runs import DENSE, MST
from analysis.spdf_claims import FAILED, HELD, UNTESTABLE, Claim
from analysis.spdf_claims import _verdict as all_checks

PAPER_REDUCTION = 4.0  # "~75 % fewer training FLOPs" (abstract); acceptance: ledger >= 4.0x
LOSS_TOLERANCE = 0.02  # nats: final val loss within +0.02 of dense (mst.md §6)
ZEROSHOT_TOLERANCE = 0.5  # points: zero-shot average within 0.5 of dense (mst.md §6)
BASELINES = ("static", "rigl", "set")  # constant-sparsity baselines at MST's FLOPs
EQUAL_FLOP_ABLATIONS = ("mst_nosv", "mst_nomix")
HSA_ABLATION = "mst_nohsa"


def _row(main: pd.DataFrame, variant: str) -> pd.Series | None:
    rows = main[main["variant"] == variant]
    return None if rows.empty else rows.iloc[0]


def _loss(row: pd.Series) -> str:
    ci = row["val_loss_ci95"]
    spread = f" ± {ci:.3f}" if math.isfinite(ci) else ""
    return f"{row['val_loss_mean']:.3f}{spread} (n={int(row['val_loss_n'])})"


def claim_flops(main: pd.DataFrame, convention: str | None) -> Claim:
    """(a) the ledger's whole-run reduction for MST is at least 4.0×."""
    statement = (
        f"MST trains with at least {PAPER_REDUCTION:g}× fewer FLOPs than dense "
        "(whole-run ledger, headline convention)"
    )
    mst = _row(main, MST)
    if mst is None or _row(main, DENSE) is None or not math.isfinite(mst["flops_reduction"]):
        return Claim("a", statement, UNTESTABLE, "needs a dense and an mst run with FLOP counts.")
    reduction = float(mst["flops_reduction"])
    evidence = (
        f"dense flops_total / MST flops_total = {reduction:.3f}× (each run's FLOP ledger: per "
        "step the masks' densities, sparse attention inside the HSA window and the dense "
        f"weight gradient of every mask-update step; convention `{convention}`)."
    )
    if convention != "megatron_full_attn":
        evidence += " This is not the headline convention (megatron_full_attn)."
    held = reduction >= PAPER_REDUCTION and convention == "megatron_full_attn"
    return Claim("a", statement, HELD if held else FAILED, evidence)


def matched_dense(main: pd.DataFrame) -> tuple[bool | None, str]:
    """Whether MST's final val loss is within LOSS_TOLERANCE of dense, and the evidence."""
    mst, dense = _row(main, MST), _row(main, DENSE)
    if mst is None or dense is None or not math.isfinite(mst["val_loss_delta_mean"]):
        return None, "needs a dense and an mst run on the same seeds."
    delta, ci = float(mst["val_loss_delta_mean"]), float(mst["val_loss_delta_ci95"])
    evidence = (
        f"final val loss (dense attention): MST {_loss(mst)} vs dense {_loss(dense)}; "
        f"Δ = {delta:+.3f} nats"
    )
    if math.isfinite(ci):
        evidence += f" (paired over seeds, 95 % CI ± {ci:.3f})"
    evidence += (
        f", at {mst['flops_reduction']:.2f}× fewer training FLOPs. Verdict rule: Δ ≤ "
        f"+{LOSS_TOLERANCE:g} nats on the means (mst.md §6)."
    )
    return delta <= LOSS_TOLERANCE, evidence


def claim_quality(main: pd.DataFrame) -> Claim:
    """(b) MST's final val loss within +0.02 nats of dense at its FLOP reduction."""
    mst = _row(main, MST)
    known = mst is not None and math.isfinite(mst["flops_reduction"])
    at = f"{mst['flops_reduction']:.2f}× fewer" if known else "fewer"
    statement = (
        f"MST matched dense quality (val loss within +{LOSS_TOLERANCE:g} nats) at {at} FLOPs"
    )
    held, evidence = matched_dense(main)
    if held is None:
        return Claim("b", statement, UNTESTABLE, evidence)
    return Claim("b", statement, HELD if held else FAILED, evidence)


def claim_zeroshot(main: pd.DataFrame) -> Claim:
    """(c) MST's zero-shot average accuracy within 0.5 points of dense."""
    statement = f"MST's zero-shot average is within {ZEROSHOT_TOLERANCE:g} points of dense"
    mst, dense = _row(main, MST), _row(main, DENSE)
    if mst is None or dense is None or not math.isfinite(mst["zeroshot_acc_delta_mean"]):
        return Claim("c", statement, UNTESTABLE, "needs zero-shot scores of dense and mst.")
    delta = 100.0 * float(mst["zeroshot_acc_delta_mean"])
    ci = 100.0 * float(mst["zeroshot_acc_delta_ci95"])
    spread = f" (paired, 95 % CI ± {ci:.2f})" if math.isfinite(ci) else ""
    evidence = (
        f"mean accuracy over {int(mst['zeroshot_tasks'])} zero-shot tasks: MST "
        f"{100 * mst['zeroshot_acc_mean']:.2f} vs dense {100 * dense['zeroshot_acc_mean']:.2f} "
        f"points; Δ = {delta:+.2f}{spread}. Verdict rule: Δ ≥ −{ZEROSHOT_TOLERANCE:g} points."
    )
    return Claim("c", statement, HELD if delta >= -ZEROSHOT_TOLERANCE else FAILED, evidence)


def _compare(mst: pd.Series, other: pd.Series, variant: str, slack: float = 0.0):
    delta = float(mst["val_loss_mean"] - other["val_loss_mean"])
    text = (
        f"vs {variant}: {mst['val_loss_mean']:.3f} vs {other['val_loss_mean']:.3f} "
        f"(Δ {delta:+.3f}) at {mst['flops_reduction']:.2f}× vs {other['flops_reduction']:.2f}× "
        "fewer FLOPs than dense"
    )
    return delta <= slack, text


def claim_vs_baselines(main: pd.DataFrame) -> Claim:
    """(d) at equal FLOPs MST beats static sparsity and constant-sparsity DST."""
    statement = "At equal FLOPs MST beats static sparsity and RigL at constant sparsity"
    mst = _row(main, MST)
    checks = [
        _compare(mst, other, v)
        for v in BASELINES
        if mst is not None and (other := _row(main, v)) is not None
    ]
    return all_checks("d", statement, checks, "needs an mst run and a static or rigl run.")


def claim_components(main: pd.DataFrame) -> Claim:
    """(e) each component helps: SV and mixed growing at equal FLOPs; HSA costs ≤ tolerance."""
    statement = (
        "Each MST component pays its way (final val loss ≤ MST without SV or without mixed "
        f"growing; ≤ MST without HSA + {LOSS_TOLERANCE:g} nats)"
    )
    mst = _row(main, MST)
    checks = [
        _compare(mst, other, v)
        for v in EQUAL_FLOP_ABLATIONS
        if mst is not None and (other := _row(main, v)) is not None
    ]
    other = _row(main, HSA_ABLATION)
    if mst is not None and other is not None:
        checks.append(_compare(mst, other, HSA_ABLATION, LOSS_TOLERANCE))
    return all_checks("e", statement, checks, "needs mst and at least one mst_* ablation.")


def evaluate_claims(main: pd.DataFrame, convention: str | None) -> list[Claim]:
    return [
        claim_flops(main, convention),
        claim_quality(main),
        claim_zeroshot(main),
        claim_vs_baselines(main),
        claim_components(main),
    ]
