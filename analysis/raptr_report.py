"""The RaPTr report's own parts (``python -m analysis.build report --study raptr``).

It reads the study's tables and figures and the pre-training ``config.yaml`` files (for each
variant's schedule).
"""

from __future__ import annotations

from analysis.raptr_claims import LOSS_TOLERANCE, SPIKE_THRESHOLD, evaluate_claims
from analysis.raptr_runs import RAPTR, expected_path_len, ordered_variants, schedule_label
from analysis.report_engine import (
    StudyFiles,
    pretraining_lines,
    seeds_per_variant,
    variant_lines,
    zeroshot_line,
)
from analysis.run_specs import RunSpec
from analysis.verdicts import Claim

MAIN, TRANSITIONS = "raptr_table_main", "raptr_table_transitions"


def summary(claims: list[Claim], inputs: StudyFiles) -> list[str]:
    """The two headline verdicts first, in plain words; the rest follow."""
    return [f"- **{c.statement}: {c.verdict}.**" for c in claims]


def what_was_run(inputs: StudyFiles) -> list[str]:
    spec = next(iter(inputs.specs.values()), RunSpec("?"))
    shape = f"{spec.n_layer} layers, context T={spec.seq_len}"
    lines = [
        *pretraining_lines(inputs, spec, shape, "same data order, same initialisation"),
        zeroshot_line(inputs),
        "- Variants (schedules read back from each run's config.yaml; path lengths count "
        "executed blocks, fixed layers included):",
    ]
    return lines + variant_lines(inputs, ordered_variants, schedule_label)


def caveats(inputs: StudyFiles) -> list[str]:
    n_seeds = seeds_per_variant(inputs)
    spec = inputs.specs.get(RAPTR) or next(iter(inputs.specs.values()), RunSpec("?"))
    first = expected_path_len(spec)[0] if spec.method_name == "raptr" else spec.n_layer
    return [
        f"- Scale: {spec.n_layer} layers, {spec.steps} steps, {n_seeds} seed(s) per variant; "
        f"RaPTr's first stage runs {first:g} of {spec.n_layer} blocks in expectation. The "
        "paper's claims are for 12- and 24-layer BERT and UL2 models; a verdict here is about "
        "this scale only.",
        "- Verdicts follow the interval rule under *Claims* with the tolerances of raptr.md §6 "
        f"({LOSS_TOLERANCE:g} nats for loss, {SPIKE_THRESHOLD:g} nats for a spike): with "
        "few seeds the paired intervals are wide, so most claims are INCONCLUSIVE.",
        "- FLOPs: `train FLOPs` is the run's own FLOP ledger (every step's executed blocks plus "
        "the embedding and LM head, paid every step), so its ratio to the baseline is above the "
        "block-only ratio of the schedule (raptr.md §5) on a small model with a large head.",
        "- Wall clock is the training loop's time from metrics.json. Jobs ran side by side on "
        "shared CPU cores, so it is noisy and only roughly comparable between variants.",
        "- Transitions are judged on evals spaced `train.eval_every` steps apart: a spike that "
        "recovers before the next eval would not be seen; the train-loss jump covers the gap.",
    ]


def report_claims(inputs: StudyFiles) -> list[Claim]:
    return evaluate_claims(inputs.tables[MAIN], inputs.tables[TRANSITIONS], inputs.runs)
