"""The RaPTr paper's claims (raptr.md §6), read with the one verdict rule
(analysis/verdicts.py) from the main and transitions tables and ``tables/runs.csv``: RaPTr
against the baseline at fewer FLOPs, at its stage boundaries, against stacking and PLD, and
against its ablations.
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.raptr_runs import BASELINE, RAPTR
from analysis.raptr_tables import TRAIN_WINDOW
from analysis.variant_stats import final_loss, loss_text, variant_row
from analysis.verdicts import (
    FAILED,
    UNTESTABLE,
    Claim,
    Interval,
    at_most,
    from_checks,
    paired,
)

LOSS_TOLERANCE = 0.01  # nats: "final full-model eval loss ≤ baseline + 0.01" (raptr.md §6)
SPIKE_THRESHOLD = 0.05  # nats: "no loss spike > 0.05 at any stage transition" (raptr.md §6)
COMPARED = ("stacking", "pld")  # the paper's other stagewise / layer-dropping baselines


def flop_saving(main: pd.DataFrame) -> float:
    """RaPTr's measured FLOP saving vs the baseline, in % (NaN without both rows)."""
    raptr = variant_row(main, RAPTR)
    return math.nan if raptr is None else 100.0 * (1.0 - float(raptr["flops_rel"]))


def claim_matched_loss(main: pd.DataFrame, runs: pd.DataFrame) -> Claim:
    """(a) RaPTr's final full-model val loss ≤ baseline + tolerance, at fewer FLOPs."""
    saving = flop_saving(main)
    fewer = f"{saving:.0f}% fewer" if math.isfinite(saving) else "fewer"
    statement = f"RaPTr matched baseline loss (within {LOSS_TOLERANCE:g} nats) at {fewer} FLOPs"
    raptr, base = variant_row(main, RAPTR), variant_row(main, BASELINE)
    if raptr is None or base is None or not math.isfinite(saving):
        return Claim("a", statement, UNTESTABLE, "needs a baseline and a raptr run.")
    delta = paired(final_loss(runs, RAPTR), final_loss(runs, BASELINE))
    evidence = (
        f"final full-model val loss: RaPTr {loss_text(raptr)} vs baseline {loss_text(base)}; "
        f"Δ (RaPTr − baseline, paired by seed) = {delta.text(3, ' nats')}"
    )
    iso = raptr.get("baseline_val_loss_at_flops", math.nan)
    if math.isfinite(iso):
        evidence += (
            f". At RaPTr's training FLOPs the baseline's own curve was at {iso:.3f} "
            f"(interpolated), so RaPTr is {raptr['val_loss_mean'] - iso:+.3f} nats from it at "
            "equal FLOPs"
        )
    evidence += (
        f". Training FLOPs {raptr['flops_rel']:.3f}× the baseline's (FLOP ledger, all-inclusive;"
        f" {raptr['block_flops_rel']:.3f}× on the blocks alone from the schedule), i.e. "
        f"{saving:.1f} % fewer. The claim: the interval of Δ ≤ {LOSS_TOLERANCE:g} nats, at "
        "fewer FLOPs."
    )
    verdict = at_most(delta, LOSS_TOLERANCE) if saving > 0 else FAILED
    return Claim("a", statement, verdict, evidence)


def _jumps(trans: pd.DataFrame, variant: str) -> pd.DataFrame:
    rows = trans[(trans["variant"] == variant) & trans["val_jump"].notna()]
    return rows.groupby("boundary_step").agg(
        val=("val_jump", "max"),
        train=("train_jump", "max"),
        before=("path_len_before", "first"),
        after=("path_len_after", "first"),
        gap=("val_after_step", "max"),
    )


def _jump_text(variant: str, jumps: pd.DataFrame) -> str:
    parts = [
        f"step {b} ({r.before:.2f}→{r.after:.2f} blocks): val {r.val:+.3f}, train {r.train:+.3f}"
        for b, r in jumps.iterrows()
    ]
    return f"{variant}: " + "; ".join(parts)


def claim_transitions(trans: pd.DataFrame) -> Claim:
    """(b) at no RaPTr stage boundary does the full-model val loss rise more than the threshold
    above the baseline's own change between the same two evals (paired by seed)."""
    statement = (
        f"Stage transitions stable (no loss spike above {SPIKE_THRESHOLD:g} nats after a "
        "boundary, relative to the baseline's change over the same steps)"
    )
    jumps = _jumps(trans, RAPTR) if not trans.empty else pd.DataFrame()
    if jumps.empty:
        return Claim(
            "b", statement, UNTESTABLE, "no RaPTr run with an eval on both sides of a boundary."
        )
    others = [v for v in trans["variant"].unique() if v != RAPTR]
    evidence = (
        "largest change over seeds of the full-model val loss from the last eval at or before "
        "each boundary to the first eval after it (val), and of the sampled-path train loss "
        f"averaged over a window of {TRAIN_WINDOW:.0%} of the run on each side (train); the "
        "verdict uses val "
        f"of `{RAPTR}`. " + _jump_text(RAPTR, jumps) + "."
    )
    extra = [_jump_text(v, _jumps(trans, v)) for v in others if not _jumps(trans, v).empty]
    if extra:
        evidence += " For reference: " + ". ".join(extra) + "."
    rows = trans[(trans["variant"] == RAPTR) & trans["val_jump_vs_baseline"].notna()]
    if rows.empty:
        return Claim("b", statement, UNTESTABLE, evidence + " No baseline evals at those steps.")
    checks = []
    for boundary, at in rows.groupby("boundary_step"):
        spike = Interval.of(at["val_jump_vs_baseline"].tolist())
        text = f"step {int(boundary)}: jump − baseline change {spike.text(3, ' nats')}"
        checks.append((at_most(spike, SPIKE_THRESHOLD), text))
    claim = from_checks("b", statement, checks, "")
    return Claim("b", statement, claim.verdict, f"{claim.evidence} {evidence}")


def claim_vs_baselines(main: pd.DataFrame, runs: pd.DataFrame) -> Claim:
    """(c) RaPTr's final loss is no worse than stacking's and PLD's (+ tolerance)."""
    statement = (
        "RaPTr is competitive with gradual stacking and progressive layer dropping "
        f"(final val loss ≤ theirs + {LOSS_TOLERANCE:g} nats)"
    )
    raptr = variant_row(main, RAPTR)
    checks = []
    for variant in COMPARED:
        other = variant_row(main, variant)
        if raptr is None or other is None:
            continue
        delta = paired(final_loss(runs, RAPTR), final_loss(runs, variant))
        checks.append(
            (
                at_most(delta, LOSS_TOLERANCE),
                f"vs {variant}: {raptr['val_loss_mean']:.3f} vs {other['val_loss_mean']:.3f} "
                f"(Δ {delta.text(3)}) at {raptr['flops_rel']:.3f}× vs "
                f"{other['flops_rel']:.3f}× baseline FLOPs",
            )
        )
    return from_checks("c", statement, checks, "needs a raptr run and a stacking or pld run.")


def claim_ablation(main: pd.DataFrame, runs: pd.DataFrame) -> Claim:
    """(d) RaPTr as specified (first/last fixed, 1/p) beats each of its ablations."""
    statement = (
        "Fixing the first and last layers and 1/p scaling help (RaPTr's final val loss ≤ each "
        "ablation's)"
    )
    raptr = variant_row(main, RAPTR)
    checks = []
    for variant in main["variant"]:
        if raptr is None or not str(variant).startswith(f"{RAPTR}_"):
            continue
        other = variant_row(main, variant)
        delta = paired(final_loss(runs, RAPTR), final_loss(runs, variant))
        checks.append(
            (
                at_most(delta, 0.0),
                f"vs {variant}: {raptr['val_loss_mean']:.3f} vs {other['val_loss_mean']:.3f} "
                f"(Δ {delta.text(3)})",
            )
        )
    return from_checks("d", statement, checks, "needs raptr and at least one raptr_* ablation.")


def evaluate_claims(main: pd.DataFrame, trans: pd.DataFrame, runs: pd.DataFrame) -> list[Claim]:
    """All four claims; ``runs`` is tables/runs.csv (per-seed values for paired intervals)."""
    return [
        claim_matched_loss(main, runs),
        claim_transitions(trans),
        claim_vs_baselines(main, runs),
        claim_ablation(main, runs),
    ]
