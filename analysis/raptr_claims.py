"""The RaPTr paper's claims (raptr.md §6) as checks on our tables, each with verdict and evidence.

Inputs are the tables' CSVs (built from results/ files only). Verdicts compare means over
seeds against stated tolerances; they are not significance tests (the report says so).
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.raptr_runs import BASELINE, RAPTR
from analysis.raptr_tables import TRAIN_WINDOW
from analysis.spdf_claims import FAILED, HELD, UNTESTABLE, Claim
from analysis.spdf_claims import _verdict as all_checks

LOSS_TOLERANCE = 0.01  # nats: "final full-model eval loss ≤ baseline + 0.01" (raptr.md §6)
SPIKE_THRESHOLD = 0.05  # nats: "no loss spike > 0.05 at any stage transition" (raptr.md §6)
COMPARED = ("stacking", "pld")  # the paper's other stagewise / layer-dropping baselines


def _row(main: pd.DataFrame, variant: str) -> pd.Series | None:
    rows = main[main["variant"] == variant]
    return None if rows.empty else rows.iloc[0]


def _loss(row: pd.Series) -> str:
    ci = row["val_loss_ci95"]
    spread = f" ± {ci:.3f}" if math.isfinite(ci) else ""
    return f"{row['val_loss_mean']:.3f}{spread} (n={int(row['val_loss_n'])})"


def flop_saving(main: pd.DataFrame) -> float:
    """RaPTr's measured FLOP saving vs the baseline, in % (NaN without both rows)."""
    raptr = _row(main, RAPTR)
    return math.nan if raptr is None else 100.0 * (1.0 - float(raptr["flops_rel"]))


def claim_matched_loss(main: pd.DataFrame) -> Claim:
    """(a) RaPTr's final full-model val loss ≤ baseline + tolerance, at fewer FLOPs."""
    saving = flop_saving(main)
    fewer = f"{saving:.0f}% fewer" if math.isfinite(saving) else "fewer"
    statement = f"RaPTr matched baseline loss (within {LOSS_TOLERANCE:g} nats) at {fewer} FLOPs"
    raptr, base = _row(main, RAPTR), _row(main, BASELINE)
    if raptr is None or base is None or not math.isfinite(saving):
        return Claim("a", statement, UNTESTABLE, "needs a baseline and a raptr run.")
    delta, ci = float(raptr["val_loss_delta_mean"]), float(raptr["val_loss_delta_ci95"])
    evidence = (
        f"final full-model val loss: RaPTr {_loss(raptr)} vs baseline {_loss(base)}; "
        f"Δ = {delta:+.3f} nats"
    )
    if math.isfinite(ci):
        resolved = "excludes" if delta - ci > LOSS_TOLERANCE else "does not exclude"
        evidence += (
            f" (paired over seeds, 95 % CI ± {ci:.3f}, which {resolved} a match within "
            f"{LOSS_TOLERANCE:g})"
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
        f"{saving:.1f} % fewer. Verdict rule: Δ ≤ {LOSS_TOLERANCE:g} nats on the means and "
        "fewer FLOPs."
    )
    held = delta <= LOSS_TOLERANCE and saving > 0
    return Claim("a", statement, HELD if held else FAILED, evidence)


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
    """(b) no full-model val-loss rise above the threshold across a RaPTr stage boundary."""
    statement = (
        f"Stage transitions stable (no loss spike above {SPIKE_THRESHOLD:g} nats after a boundary)"
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
    held = bool((jumps["val"] <= SPIKE_THRESHOLD).all())
    return Claim("b", statement, HELD if held else FAILED, evidence)


def claim_vs_baselines(main: pd.DataFrame) -> Claim:
    """(c) RaPTr's final loss is no worse than stacking's and PLD's (+ tolerance)."""
    statement = (
        "RaPTr is competitive with gradual stacking and progressive layer dropping "
        f"(final val loss ≤ theirs + {LOSS_TOLERANCE:g} nats)"
    )
    raptr = _row(main, RAPTR)
    checks = []
    for variant in COMPARED:
        other = _row(main, variant)
        if raptr is None or other is None:
            continue
        delta = float(raptr["val_loss_mean"] - other["val_loss_mean"])
        checks.append(
            (
                delta <= LOSS_TOLERANCE,
                f"vs {variant}: {raptr['val_loss_mean']:.3f} vs {other['val_loss_mean']:.3f} "
                f"(Δ {delta:+.3f}) at {raptr['flops_rel']:.3f}× vs {other['flops_rel']:.3f}× "
                "baseline FLOPs",
            )
        )
    return all_checks("c", statement, checks, "needs a raptr run and a stacking or pld run.")


def claim_ablation(main: pd.DataFrame) -> Claim:
    """(d) RaPTr as specified (first/last fixed, 1/p) beats each of its ablations."""
    statement = (
        "Fixing the first and last layers and 1/p scaling help (RaPTr's final val loss ≤ each "
        "ablation's)"
    )
    raptr = _row(main, RAPTR)
    checks = []
    for variant in main["variant"]:
        if raptr is None or not str(variant).startswith(f"{RAPTR}_"):
            continue
        other = _row(main, variant)
        delta = float(raptr["val_loss_mean"] - other["val_loss_mean"])
        checks.append(
            (
                delta <= 0,
                f"vs {variant}: {raptr['val_loss_mean']:.3f} vs {other['val_loss_mean']:.3f} "
                f"(Δ {delta:+.3f})",
            )
        )
    return all_checks("d", statement, checks, "needs raptr and at least one raptr_* ablation.")


def evaluate_claims(main: pd.DataFrame, trans: pd.DataFrame) -> list[Claim]:
    return [
        claim_matched_loss(main),
        claim_transitions(trans),
        claim_vs_baselines(main),
        claim_ablation(main),
    ]
