"""The paper's claims (spdf.md §7) as checks on our results, each with a verdict and evidence.

Inputs are the tables' CSVs and the per-run rows of ``tables/runs.csv`` (both built from
results/ files), so every number a verdict quotes can be traced to a metrics.json. Verdicts
follow ``analysis.verdicts``: a paired 95 % interval over seeds against the claim's tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from analysis.bleu_bootstrap import generations_of, paired_bleu_interval
from analysis.spdf_tables import (
    BLEU,
    FULL,
    MIN_DENSE_BLEU,
    ordered_tasks,
    sparsity_label,
    task_name,
)
from analysis.verdicts import (
    FAILED,
    HELD,
    UNTESTABLE,
    Claim,
    Interval,
    above,
    from_checks,
    paired,
    within,
)

PAPER_REDUCTION = 2.5  # GPT-3 XL, T=2048, 75 % sparsity [abstract]; §6 gives 2.49
PAPER_SPARSITY = 0.75
BLEU_TOLERANCE = 1.0  # |ΔBLEU| at 75 % (spdf.md §7 acceptance check)
ACCOUNTING_TOLERANCE = 0.02  # measured vs analytic FLOP reduction, relative


@dataclass(frozen=True)
class Scale:
    """What the reduction depends on: the model shape's name and the context length."""

    model: str | None
    seq_len: int | None


def _row(table: pd.DataFrame, sparsity: float) -> pd.Series | None:
    rows = table[table["sparsity"] == sparsity]
    return None if rows.empty else rows.iloc[0]


def per_seed(runs: pd.DataFrame, stage: str, metric: str, **cell: float | str) -> pd.Series:
    """One metric of one cell (task, sparsity, fraction) by seed."""
    rows = runs[(runs["stage"] == stage) & (runs["metric"] == metric)]
    for column, value in cell.items():
        rows = rows[rows[column] == value]
    return rows.groupby("seed")["value"].mean()


def _bleu(runs: pd.DataFrame, task: str, sparsity: float, fraction: float) -> pd.Series:
    return per_seed(runs, "eval_nlg", BLEU, task=task, sparsity=sparsity, fraction=fraction)


def claim_flops(main: pd.DataFrame, runs: pd.DataFrame, scale: Scale) -> Claim:
    """(a) the 75 % FLOP reduction. The ledger against the §6 formula holds by construction,
    so it is a check; the claim is testable only at the paper's scale, where the formula's
    prediction is compared with 2.5×. The measured wall-clock ratio is reported beside it."""
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
    dense_wall = per_seed(runs, "pretrain", "wall_time_s", sparsity=0.0)
    sparse_wall = per_seed(runs, "pretrain", "wall_time_s", sparsity=PAPER_SPARSITY)
    shared = dense_wall.index.intersection(sparse_wall.index)
    speed = Interval.of((dense_wall[shared] / sparse_wall[shared]).tolist())
    evidence = (
        f"Check (holds by construction, not a finding): the ledger's {measured:.2f}× fewer "
        f"total pre-training FLOPs {'matches' if consistent else 'does NOT match'} the §6 "
        f"formula's {analytic:.2f}× per token for our model ({scale.model}, "
        f"T={scale.seq_len}) within {ACCOUNTING_TOLERANCE:.0%}. Measured wall-clock speed-up "
        f"of the 75 % run over dense (dense / sparse wall time, paired by seed): "
        f"{speed.text(2, '×').replace('+', '')}; unstructured masks run dense kernels, so "
        "FLOPs saved are not time saved here."
    )
    if scale.model == "gpt3_xl" and scale.seq_len == 2048:
        held = consistent and abs(analytic - PAPER_REDUCTION) <= 0.05
        evidence += f" At the paper's scale the target is {PAPER_REDUCTION}× (± 0.05)."
        return Claim("a", statement, HELD if held else FAILED, evidence)
    evidence += (
        f" The paper's {PAPER_REDUCTION}× is for GPT-3 XL at T=2048, so it is not testable "
        "at this scale."
    )
    return Claim("a", statement, UNTESTABLE, evidence)


@dataclass(frozen=True)
class Measure:
    """What a fine-tuning claim is judged on: a score per run, and how a sparse run's
    degradation against the dense run of the same seed is expressed."""

    name: str
    stage: str
    metric: str
    higher_is_better: bool
    tolerance: float  # claim (b)'s bound on |sparse − dense|
    unit: str  # of a degradation
    floor: float | None  # the dense score below which the measure says nothing

    def values(self, runs: pd.DataFrame, task: str, sparsity: float, fraction: float) -> pd.Series:
        return per_seed(
            runs, self.stage, self.metric, task=task, sparsity=sparsity, fraction=fraction
        )

    def degradation(self, runs: pd.DataFrame, task: str, sparsity: float, fraction: float):
        """Per seed, paired with the dense run of that seed (> 0: worse than dense). BLEU: in %
        of the dense mean; cross-entropy: in nats."""
        dense = self.values(runs, task, 0.0, fraction)
        sparse = self.values(runs, task, sparsity, fraction)
        shared = dense.index.intersection(sparse.index)
        if self.higher_is_better:
            return 100.0 * (dense[shared] - sparse[shared]) / float(dense.mean())
        return sparse[shared] - dense[shared]


BLEU_MEASURE = Measure("BLEU", "eval_nlg", BLEU, True, BLEU_TOLERANCE, " %", MIN_DENSE_BLEU)
# held-out task cross-entropy: ~100x more precise than BLEU at CPU sizes (SD 0.013 nats across
# seeds vs 1.5 BLEU at tiny). 0.02 nats is this suite's tolerance, not the paper's (the paper
# states only BLEU): the size of the MST spec's loss tolerance.
CE_MEASURE = Measure("held-out task CE", "finetune", "final_val_loss", False, 0.02, " nats", None)
CPU_MODELS = ("smoke", "tiny")  # below GPT-2 Small BLEU resolves little: task CE comes first


def primary_measure(scale: Scale) -> Measure:
    return CE_MEASURE if scale.model in CPU_MODELS else BLEU_MEASURE


def _dense_floor(runs: pd.DataFrame, task: str, fraction: float) -> float:
    """The dense model's mean BLEU at (task, fraction): the precondition of every BLEU claim."""
    dense = _bleu(runs, task, 0.0, fraction)
    return float(dense.mean()) if len(dense) else math.nan


def _tasks(runs: pd.DataFrame) -> list[str]:
    return ordered_tasks(runs.loc[runs["stage"] == "eval_nlg", "task"].dropna().unique())


def _sparse_levels(runs: pd.DataFrame) -> list[float]:
    return sorted(
        s for s in runs.loc[runs["stage"] == "eval_nlg", "sparsity"].dropna().unique() if s > 0
    )


def _below_floor(
    key: str,
    statement: str,
    runs: pd.DataFrame,
    tasks: list[str],
    fractions: list[float],
    measure: Measure,
) -> Claim | None:
    """NOT TESTABLE when the measure has a floor and the dense model is under it in a cell."""
    if measure.floor is None:
        return None
    weak = sorted(
        {
            f"{task_name(t)} {b:.2f}"
            for f in fractions
            for t in tasks
            if not (b := _dense_floor(runs, t, f)) >= measure.floor
        }
    )
    if not weak:
        return None
    return Claim(
        key,
        statement,
        UNTESTABLE,
        f"dense BLEU below {measure.floor:g} ({', '.join(weak)}): at this scale the dense "
        "model does not yet produce scoreable text, so BLEU differences mean nothing.",
    )


def _with_secondary(primary: Claim, secondary: Claim | None) -> Claim:
    """The primary measure decides; the secondary's own reading is shown beside it."""
    if secondary is None:
        return primary
    return Claim(
        primary.key,
        primary.statement,
        primary.verdict,
        f"{primary.evidence} Secondary (BLEU, not used for the verdict): {secondary.verdict}: "
        f"{secondary.evidence}",
    )


def claim_within_tolerance(runs: pd.DataFrame, measure: Measure = BLEU_MEASURE) -> Claim:
    """(b) |sparse − dense| at 75 % ≤ the measure's tolerance on every task (fraction 1.0),
    paired by seed (the paper: ≤ 1 BLEU)."""
    bound = (
        f"{measure.tolerance:g} BLEU"
        if measure is BLEU_MEASURE
        else (f"{measure.tolerance:g} nats (the paper's claim: ≤ 1 BLEU)")
    )
    statement = (
        f"|Δ{measure.name}| of the {PAPER_SPARSITY:.0%} model vs dense is ≤ {bound} on each "
        "task (fine-tuning fraction 1.0)"
    )
    tasks = [t for t in _tasks(runs) if len(measure.values(runs, t, PAPER_SPARSITY, FULL))]
    tasks = [t for t in tasks if len(measure.values(runs, t, 0.0, FULL))]
    if not tasks:
        return Claim("b", statement, UNTESTABLE, f"no 75 % and dense {measure.name} at f=1.0.")
    if (untestable := _below_floor("b", statement, runs, tasks, [FULL], measure)) is not None:
        return untestable
    checks = []
    for task in tasks:
        delta = (
            _bleu_bootstrap(runs, task, PAPER_SPARSITY, FULL) if measure is BLEU_MEASURE else None
        ) or paired(
            measure.values(runs, task, PAPER_SPARSITY, FULL), measure.values(runs, task, 0.0, FULL)
        )
        text = f"{task_name(task)} Δ{measure.name} {delta.text(3)}"
        checks.append((within(delta, measure.tolerance), text))
    return from_checks("b", statement, checks, "")


def _bleu_bootstrap(
    runs: pd.DataFrame, task: str, sparsity: float, fraction: float
) -> Interval | None:
    """ΔBLEU (sparse − dense) with sacrebleu's paired bootstrap over the test inputs combined
    with the seed spread (analysis.bleu_bootstrap); None when a seed's generations are missing."""
    if "source" not in runs:  # a frame without file paths: seed-paired only
        return None
    rows = runs[(runs["stage"] == "eval_nlg") & (runs["metric"] == BLEU) & (runs["task"] == task)]
    rows = rows[rows["fraction"] == fraction]
    sources = {s: rows[rows["sparsity"] == s].set_index("seed")["source"] for s in (sparsity, 0.0)}
    pairs = []
    for seed in sources[sparsity].index.intersection(sources[0.0].index):
        files = [generations_of(sources[s][seed]) for s in (sparsity, 0.0)]
        if None in files:
            return None
        pairs.append((files[0], files[1]))
    return paired_bleu_interval(pairs) if pairs else None


def claim_bleu_within_one(runs: pd.DataFrame) -> Claim:
    """(b) on BLEU alone, as the paper states it."""
    return claim_within_tolerance(runs, BLEU_MEASURE)


def claim_grows_with_sparsity(runs: pd.DataFrame, measure: Measure = BLEU_MEASURE) -> Claim:
    """(c) per task, the degradation grows with sparsity (f=1.0): each higher level's minus the
    next lower one's, paired by seed, is > 0, and the top level's is > 0."""
    statement = "degradation grows with sparsity (per task, fine-tuning fraction 1.0)"
    sparse_levels, tasks = _sparse_levels(runs), _tasks(runs)
    if len(sparse_levels) < 2 or not tasks:
        return Claim("c", statement, UNTESTABLE, "needs dense and two sparse levels at f=1.0.")
    if (untestable := _below_floor("c", statement, runs, tasks, [FULL], measure)) is not None:
        return untestable
    checks = []
    for task in tasks:
        drops = {s: measure.degradation(runs, task, s, FULL) for s in sparse_levels}
        for low, high in zip(sparse_levels, sparse_levels[1:], strict=False):
            label = f"{sparsity_label(high)} − {sparsity_label(low)}"
            what = f"{task_name(task)} {measure.name} degradation {label}"
            checks.append(_increase(drops[high], drops[low], what, measure.unit))
        top = Interval.of(drops[sparse_levels[-1]].tolist())
        text = (
            f"{task_name(task)} {measure.name} degradation at {sparsity_label(sparse_levels[-1])} "
            f"{top.text(3, measure.unit)}"
        )
        checks.append((above(top, 0.0), text))
    return from_checks("c", statement, checks, "")


def _increase(larger: pd.Series, smaller: pd.Series, what: str, unit: str) -> tuple[str, str]:
    """(verdict, text) of the check "larger − smaller > 0", paired by seed."""
    gap = paired(larger, smaller)
    return above(gap, 0.0), f"{what} {gap.text(3, unit)}"


def claim_smaller_data_smaller_drop(
    runs: pd.DataFrame, sizes: pd.Series, measure: Measure = BLEU_MEASURE
) -> Claim:
    """(d) smaller fine-tuning sets degrade less: across tasks ordered by train examples (top
    sparsity, f=1.0) and across fine-tuning fractions within a task, each larger set's
    degradation minus the next smaller one's, paired by seed, is > 0."""
    statement = (
        "degradation is smaller on smaller datasets: across tasks ordered by train "
        "examples, and across fine-tuning fractions within a task"
    )
    sparse_levels, tasks = _sparse_levels(runs), _tasks(runs)
    if not sparse_levels or not tasks:
        return Claim("d", statement, UNTESTABLE, "needs dense and sparse fine-tuning scores.")
    fractions = sorted(runs.loc[runs["stage"] == "eval_nlg", "fraction"].dropna().unique())
    untestable = _below_floor("d", statement, runs, tasks, fractions, measure)
    if untestable is not None:
        return untestable
    top, unit, name = sparse_levels[-1], measure.unit, measure.name
    checks = []
    by_size = sorted((t for t in tasks if t in sizes.index), key=lambda t: sizes[t])
    for small, large in zip(by_size, by_size[1:], strict=False):
        what = (
            f"{sparsity_label(top)}, f=1.0: {name} degradation {task_name(large)} "
            f"({sizes[large]:,.0f} ex.) − {task_name(small)} ({sizes[small]:,.0f} ex.)"
        )
        larger = measure.degradation(runs, large, top, FULL)
        checks.append(_increase(larger, measure.degradation(runs, small, top, FULL), what, unit))
    for task in tasks:
        for sparsity in sparse_levels:
            for low, high in zip(fractions, fractions[1:], strict=False):
                more = measure.degradation(runs, task, sparsity, high)
                less = measure.degradation(runs, task, sparsity, low)
                if more.index.intersection(less.index).empty:
                    continue
                what = (
                    f"{task_name(task)} {sparsity_label(sparsity)}: {name} degradation "
                    f"f={high:g} − f={low:g}"
                )
                checks.append(_increase(more, less, what, unit))
    return from_checks("d", statement, checks, "needs two tasks or two fractions.")


def evaluate_claims(
    main: pd.DataFrame, runs: pd.DataFrame, sizes: pd.Series, scale: Scale
) -> list[Claim]:
    """All four claims; ``runs`` is tables/runs.csv, ``sizes`` maps task -> fine-tuning train
    examples at fraction 1.0. Fine-tuning claims are judged on the scale's primary measure
    (held-out task CE at CPU sizes, BLEU from GPT-2 Small up), BLEU shown beside CE."""
    measure = primary_measure(scale)
    fine_tuning = [
        (claim_within_tolerance, ()),
        (claim_grows_with_sparsity, ()),
        (claim_smaller_data_smaller_drop, (sizes,)),
    ]
    claims = [claim_flops(main, runs, scale)]
    for claim_fn, extra in fine_tuning:
        primary = claim_fn(runs, *extra, measure)
        secondary = claim_fn(runs, *extra, BLEU_MEASURE) if measure is not BLEU_MEASURE else None
        claims.append(_with_secondary(primary, secondary))
    return claims
