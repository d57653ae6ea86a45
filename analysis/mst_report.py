"""The MST report's own parts (``python -m analysis.build report --study mst``).

It reads the study's tables and figures and the pre-training ``config.yaml`` /
``train_log.jsonl`` files (for what each variant ran).
"""

from __future__ import annotations

import math

import pandas as pd

from analysis.mst_claims import (
    LOSS_TOLERANCE,
    PAPER_REDUCTION,
    ZEROSHOT_TOLERANCE,
    evaluate_claims,
    matched_dense,
)
from analysis.mst_runs import MST, ordered_variants, schedule_label
from analysis.report_engine import (
    StudyFiles,
    model_shape,
    pretraining_lines,
    seeds_per_variant,
    variant_lines,
    zeroshot_line,
)
from analysis.run_specs import RunSpec
from analysis.verdicts import FAILED, HELD, INCONCLUSIVE, Claim

MAIN, BUDGET = "mst_table_main", "mst_table_budget"


def _convention(inputs: StudyFiles) -> str | None:
    spec = inputs.specs.get(MST) or next(iter(inputs.specs.values()), None)
    return spec.convention if spec is not None else None


ANSWERS = {
    HELD: "MST matched dense quality here",
    FAILED: "MST did not match dense quality here",
    INCONCLUSIVE: "Whether MST matched dense quality is inconclusive here",
}


def verdict_sentence(main: pd.DataFrame, runs: pd.DataFrame) -> str:
    """The answer to "did MST match dense quality at its FLOP reduction here?", in words."""
    verdict, _ = matched_dense(main, runs)
    rows = main[main["variant"] == MST]
    if verdict is None or rows.empty:
        return "MST could not be compared with dense: a dense or an mst run is missing."
    mst = rows.iloc[0]
    delta, reduction = float(mst["val_loss_delta_mean"]), float(mst["flops_reduction"])
    return (
        f"**{ANSWERS[verdict]}**: at {reduction:.2f}× fewer training FLOPs its final val loss "
        f"was {delta:+.3f} nats from dense on the mean over seeds (acceptance: the paired "
        f"interval within +{LOSS_TOLERANCE:g}; mst.md §6)."
    )


def summary(claims: list[Claim], inputs: StudyFiles) -> list[str]:
    return [
        verdict_sentence(inputs.tables[MAIN], inputs.runs),
        "",
        *[f"- **{c.statement}: {c.verdict}.**" for c in claims],
    ]


def what_was_run(inputs: StudyFiles) -> list[str]:
    spec = inputs.specs.get(MST) or next(iter(inputs.specs.values()), RunSpec("?"))
    lines = [
        *pretraining_lines(inputs, spec, model_shape(spec), "same data order, same initialisation"),
        zeroshot_line(inputs),
        "- Validation and zero-shot evaluation use dense attention and the run's final weights "
        "(with its masks' zeros).",
        "- Variants (read back from each run's config.yaml and the knob its job solved):",
    ]
    return lines + variant_lines(inputs, ordered_variants, schedule_label)


def caveats(inputs: StudyFiles) -> list[str]:
    n_seeds = seeds_per_variant(inputs)
    spend = inputs.tables[BUDGET]
    budget = spend.set_index("variant") if "variant" in spend else pd.DataFrame()
    interval = budget["interval"].dropna().iloc[0] if "interval" in budget else math.nan
    spec = inputs.specs.get(MST) or next(iter(inputs.specs.values()), RunSpec("?"))
    target = spec.method.get("target_reduction")
    budget_text = f"{target:g}×" if isinstance(target, (int, float)) else "the grid's target"
    return [
        f"- Scale: {spec.model.get('n_layer')} layers at T={spec.seq_len}, {spec.steps} steps, "
        f"{n_seeds} seed(s) per variant. The paper's claim is for GPT-2 Small trained for 600k "
        "steps; a verdict here is about this scale only.",
        f"- Mask updates every ΔT={interval:g} steps (the paper: 100 of 600k). Each update step "
        "takes no optimizer step (the reference's choice) and pays a dense weight gradient, "
        "which the ledger counts; the budget table gives both shares.",
        f"- Every sparse variant but `mst_nohsa` was solved to the same FLOP budget, "
        f"{budget_text} fewer than dense (the paper's is {PAPER_REDUCTION:g}×), so their "
        "losses compare at equal FLOPs; `mst_nohsa` keeps MST's s_max and spends more.",
        "- Verdicts follow the interval rule under *Claims* with the spec's tolerances "
        f"({LOSS_TOLERANCE:g} nats, {ZEROSHOT_TOLERANCE:g} zero-shot points): with few seeds "
        "the paired intervals are wide, so most claims are INCONCLUSIVE.",
        "- Wall clock is the training loop's time from metrics.json. Unstructured masks save no "
        "time on dense kernels, and jobs ran side by side on shared CPU cores, so it is noisy "
        "and says nothing about the FLOP reduction.",
    ]


def report_claims(inputs: StudyFiles) -> list[Claim]:
    return evaluate_claims(inputs.tables[MAIN], inputs.runs, _convention(inputs))
