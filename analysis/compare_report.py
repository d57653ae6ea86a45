"""The comparison report's own parts (``python -m analysis.build report --study compare``).

It reads the study's tables and figure and the pre-training ``config.yaml`` /
``train_log.jsonl`` files (what each variant ran, each seed's readings for the claims).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.collect import load_curves
from analysis.compare_claims import evaluate_claims
from analysis.compare_tables import DENSE, labels_from_specs, ordered_variants, run_table
from analysis.report_engine import (
    StudyFiles,
    model_shape,
    pretraining_lines,
    seeds_per_variant,
    study_files,
    zeroshot_line,
)
from analysis.run_specs import RunSpec
from analysis.verdicts import Claim

MAIN = "compare_table_main"


@dataclass(frozen=True)
class Inputs(StudyFiles):
    per_run: pd.DataFrame  # compare_tables.run_table: one row per (variant, seed)
    labels: dict[str, tuple[str, str]]


def load_inputs(results_dir: Path, study: str) -> Inputs:
    files = study_files(study, results_dir)
    return Inputs(
        **files,
        per_run=run_table(files["runs"], load_curves(results_dir)),
        labels=labels_from_specs(files["specs"]),
    )


def _headline(row: pd.Series) -> str:
    if row["variant"] == DENSE:
        return f"- `dense`: final val loss {row['final_val_loss_mean']:.3f} (the reference)."
    reached = int(row["flops_to_dense_n"]) if pd.notna(row["flops_to_dense_n"]) else 0
    return (
        f"- `{row['variant']}`: {row['flops_reduction_mean']:.2f}× fewer training FLOPs than "
        f"dense; at equal FLOPs {row['loss_at_budget_delta_mean']:+.3f} nats from dense; "
        f"reached dense's final loss in {reached} of {int(row['seeds'])} seed(s); a step took "
        f"{row['step_time_rel_mean']:.2f}× dense's time for {row['flops_per_step_rel_mean']:.3f}× "
        "its FLOPs."
    )


def summary(claims: list[Claim], inputs: Inputs) -> list[str]:
    lines = [_headline(row) for _, row in inputs.tables[MAIN].iterrows()]
    return [*lines, "", *[f"- **({c.key}) {c.statement}: {c.verdict}.**" for c in claims]]


def what_was_run(inputs: Inputs) -> list[str]:
    spec = inputs.specs.get(DENSE) or next(iter(inputs.specs.values()), RunSpec("?"))
    main = inputs.tables[MAIN]
    budget = float(main["budget"].iloc[0]) if len(main) else float("nan")
    same = "same initialisation, same data order, same tokens per step"
    lines = [
        *pretraining_lines(inputs, spec, model_shape(spec), same),
        "- Each variant trains at its own FLOP budget (its method's ledger, metrics.json "
        "`flops_total`). Validation runs the full model with dense attention on the same "
        "batches for every run.",
        f"- Equal-FLOPs budget: {budget:.3e} training FLOPs, the smallest total any run reached; "
        "each seed's val curve is read there, linearly in log FLOPs between the evals around "
        "it (never extrapolated).",
        "- FLOPs to reach dense's final loss: the first crossing of dense's final val loss of "
        'the same seed, interpolated the same way; "not reached" when the curve never gets '
        "there.",
        "- Step time: the median of each run's logged `step_time_s` (training step only, "
        "evaluation excluded), divided by dense's of the same seed, beside the ledger's FLOPs "
        "per step over dense's.",
        zeroshot_line(inputs),
        "- Variants (read back from each run's config.yaml and, for MST, the knob its job solved):",
    ]
    for variant in ordered_variants(inputs.labels):
        method, text = inputs.labels[variant]
        lines.append(f"  - `{variant}` (`method={method}`): {text}")
    return lines


def caveats(inputs: Inputs) -> list[str]:
    n_seeds = seeds_per_variant(inputs)
    spec = inputs.specs.get(DENSE) or next(iter(inputs.specs.values()), RunSpec("?"))
    return [
        f"- Scale: {spec.model.get('n_layer')} layers at T={spec.seq_len}, {spec.steps} steps, "
        f"{n_seeds} seed(s) per variant. The methods' papers make their claims at GPT-2 Small "
        "size and up; a verdict here is about this scale only.",
        "- FLOPs saved are not time saved on dense kernels: unstructured masks (static, RigL, "
        "MST) zero weights that still go through dense matrix products, and RigL and MST pay "
        "mask updates on top; of the savings the ledger counts, only RaPTr's skipped blocks are "
        "sure to save time here. The step-time column measures this, beside the FLOP ratio.",
        "- Step times were measured while jobs ran side by side on shared cores; the median "
        "of the logged steps damps the noise, pairing by seed does not remove it.",
        "- A curve read at the equal-FLOPs budget is a point of a longer run: its learning "
        "rate had not decayed there, as it would in a run trained for that budget, which "
        "favours the variants whose whole run fits the budget.",
        "- `static` is MST's static baseline (`method=static_sparse`: random ER masks over "
        "every linear, the tied head included), not the SPDF study's `method=static` "
        "(uniform over the block linears, dense head).",
        "- Claims use the rule under *Claims*, each against the tolerance its evidence "
        "states; with one seed there is no interval and every claim is INCONCLUSIVE.",
        "- `python -m analysis.wandb_compare --group compare` rebuilds this table from the W&B "
        "API (each pre-training run's logged history: eval curve and step times) with the same "
        "functions as from the files.",
    ]


def report_claims(inputs: Inputs) -> list[Claim]:
    return evaluate_claims(inputs.per_run)
