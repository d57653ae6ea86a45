"""Write ``reports/spdf.md`` from the SPDF tables and figures under results/ (nothing else).

Run ``analysis.collect`` (-> tables/runs.csv), ``analysis.spdf_tables`` and
``analysis.spdf_figures`` first; this module only reads their outputs and one pre-training
``config.yaml`` (for the model's name).
The report carries no dates, so regenerating it from the same results gives the same file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from analysis.generations import generations_section
from analysis.provenance import with_stamp
from analysis.spdf_claims import Scale, evaluate_claims
from analysis.spdf_tables import FULL, ordered_tasks, sparsity_label, task_name
from analysis.verdicts import RULES_MD, Claim

TABLES = {
    "spdf_table_main": "Main comparison (spdf.md §7): BLEU at fine-tuning fraction 1.0, "
    "pre-training FLOPs and validation loss",
    "spdf_table_zeroshot": "Zero-shot evaluation of the pre-trained checkpoints",
    "spdf_table_rel_drop": "BLEU relative to the dense model at the same task and fraction",
}
FIGURES = {
    "spdf_fig_flops_vs_metric": "BLEU (f=1.0) vs total pre-training FLOPs",
    "spdf_fig_rel_degradation": "BLEU change vs dense, tasks by train size and by difficulty",
    "spdf_fig_pretrain_curves": "Pre-training validation loss vs tokens",
    "spdf_fig_drop_heatmap": "Relative BLEU drop over sparsity × fine-tuning fraction",
}


class ReportInputError(Exception):
    """A table or figure the report needs is missing; the message says which."""


@dataclass(frozen=True)
class Inputs:
    runs: pd.DataFrame
    main: pd.DataFrame
    drop: pd.DataFrame
    markdown: dict[str, str]
    figures: dict[str, Path]
    config: dict
    n_logs: int
    tables_dir: Path
    splits: dict[str, str]  # task -> the split its fine-tuning train set was cut from


def _need(path: Path) -> Path:
    if not path.is_file():
        raise ReportInputError(
            f"{path} is missing; run analysis.collect, spdf_tables and spdf_figures first"
        )
    return path


def load_inputs(results_dir: Path) -> Inputs:
    tables, figures = results_dir / "tables", results_dir / "figures"
    configs = sorted((results_dir / "pretrain").glob("*/config.yaml"))
    # every pre-training run shares the model; the first config names it for all
    config = (yaml.safe_load(configs[0].read_text()) if configs else None) or {}
    return Inputs(
        runs=pd.read_csv(_need(tables / "runs.csv")),
        main=pd.read_csv(_need(tables / "spdf_table_main.csv")),
        drop=pd.read_csv(_need(tables / "spdf_table_rel_drop.csv")),
        markdown={s: _need(tables / f"{s}.md").read_text().strip() for s in TABLES},
        figures={s: _need(figures / f"{s}.png") for s in FIGURES},
        config=config,
        n_logs=len(list((results_dir / "pretrain").glob("*/train_log.jsonl"))),
        tables_dir=tables,
        splits=train_splits(results_dir),
    )


def train_splits(results_dir: Path) -> dict[str, str]:
    """task -> ``task.split_map.train`` of its fine-tuning runs (one config.yaml per task)."""
    splits = {}
    for path in sorted((results_dir / "finetune").glob("*/*/config.yaml")):
        task = path.parents[1].name
        if task not in splits:
            config = yaml.safe_load(path.read_text()) or {}
            split = ((config.get("task") or {}).get("split_map") or {}).get("train")
            if split is not None:
                splits[task] = str(split)
    return splits


def scale_of(config: dict) -> Scale:
    model, train = config.get("model") or {}, config.get("train") or {}
    seq = train.get("seq_len") or model.get("block_size")
    return Scale(model=model.get("name"), seq_len=int(seq) if seq is not None else None)


def train_sizes(runs: pd.DataFrame) -> pd.Series:
    """task -> fine-tuning train examples at fraction 1.0 (finetune metrics.json)."""
    rows = runs[
        (runs["stage"] == "finetune")
        & (runs["fraction"] == FULL)
        & (runs["metric"] == "train_examples")
    ]
    return rows.groupby("task")["value"].mean()


def _values(runs: pd.DataFrame, column: str, stage: str | None = None) -> list:
    rows = runs if stage is None else runs[runs["stage"] == stage]
    return sorted(rows[column].dropna().unique())


def seeds_by_cell(runs: pd.DataFrame) -> pd.Series:
    """Number of seeds behind each (stage, task, sparsity, fraction) mean."""
    return runs.groupby(["stage", "task", "sparsity", "fraction"], dropna=False)["seed"].nunique()


def what_was_run(inputs: Inputs) -> list[str]:
    runs, scale = inputs.runs, scale_of(inputs.config)
    pre = runs[runs["stage"] == "pretrain"]
    tokens = sorted(pre.loc[pre["metric"] == "tokens", "value"].unique())
    convention = (inputs.config.get("flops") or {}).get("convention", "unknown")
    seeds_per_cell = sorted(seeds_by_cell(runs).unique())
    return [
        f"- Model: `{scale.model}`, context T={scale.seq_len}; pre-training tokens per run: "
        + ", ".join(f"{t:,.0f}" for t in tokens)
        + f"; FLOP convention `{convention}`.",
        "- Sparsities: " + ", ".join(sparsity_label(s) for s in _values(runs, "sparsity")),
        "- Seeds: "
        + ", ".join(str(int(s)) for s in _values(runs, "seed"))
        + f" (seeds per cell: {', '.join(str(int(n)) for n in seeds_per_cell)})",
        "- Fine-tuning tasks: "
        + ", ".join(task_name(t) for t in ordered_tasks(_values(runs, "task", "finetune"))),
        "- Fine-tuning fractions: "
        + ", ".join(f"{f:g}" for f in _values(runs, "fraction", "finetune")),
        *train_set_lines(inputs),
        "- Zero-shot tasks: " + (", ".join(_values(runs, "task", "eval_zeroshot")) or "none"),
    ]


def train_set_lines(inputs: Inputs) -> list[str]:
    """Which split each task trained on and how many examples that gave at fraction 1.0: claim
    (d) orders tasks by these sizes, which need not be the paper's order."""
    sizes = train_sizes(inputs.runs)
    if sizes.empty:
        return []
    parts = [
        f"{task_name(t)} {sizes[t]:,.0f} from `{inputs.splits.get(t, '?')}`"
        for t in ordered_tasks(sizes.index)
    ]
    line = "- Fine-tuning train examples at fraction 1.0 (claim (d) orders tasks by these): " + (
        ", ".join(parts)
    )
    if any(not s.startswith("train") for s in inputs.splits.values()):
        line += (
            ". A task cut from a split other than `train` (DART's offline copy has no train "
            "split, so it trains on 90 % of dev) is far smaller than in the paper, where DART "
            "is the largest set; with a full download (`task.split_map.train=train`) the "
            "paper's order returns"
        )
    return [line + "."]


def _cell(text: str) -> str:
    # a literal "|" (as in |ΔBLEU|) would split the Markdown table cell
    return text.replace("|", "\\|")


def claims_section(claims: list[Claim]) -> list[str]:
    lines = [RULES_MD, "", "| claim | verdict |", "|---|---|"]
    lines += [f"| ({c.key}) {_cell(c.statement)} | {c.verdict} |" for c in claims]
    for c in claims:
        lines += ["", f"### ({c.key}) {c.statement}", "", f"**Verdict: {c.verdict}.** {c.evidence}"]
    return lines


def caveats(inputs: Inputs) -> list[str]:
    n_seeds = int(seeds_by_cell(inputs.runs).min())
    return [
        f"- Small-scale numbers are noisy: as few as {n_seeds} seed(s) per cell. Tables show "
        "mean ± 95 % "
        'Student-t CI over seeds ("n=1" where there is a single seed, so no interval).',
        "- Verdicts follow the interval rule under *Claims*: with few seeds the intervals are "
        "wide, so most claims come out INCONCLUSIVE rather than resting on a mean.",
        "- The paper's numbers are for GPT-2 Small and GPT-3 XL trained on The Pile; this study's "
        "model, data and token budget are given under *What was run*.",
    ]


def provenance(inputs: Inputs) -> list[str]:
    sources = inputs.runs["source"].nunique()
    return [
        f"Every number above comes from {sources} metrics.json files and {inputs.n_logs} "
        "train_log.jsonl files under results/spdf (listed in `results/spdf/tables/runs.csv`, "
        "column `source`), plus one pre-training config.yaml for the model name. "
        "No checkpoint was read.",
    ]


def _link(path: Path, out: Path) -> str:
    return Path(os.path.relpath(path, out.parent)).as_posix()


def render(inputs: Inputs, out: Path) -> str:
    claims = evaluate_claims(
        inputs.main, inputs.runs, train_sizes(inputs.runs), scale_of(inputs.config)
    )
    lines = [
        "# SPDF: sparse pre-training, dense fine-tuning — reproduction report",
        "",
        "_Generated by `python -m analysis.spdf_report` from files under results/spdf; "
        "do not edit by hand._",
        "",
        "## What was run",
        "",
        *what_was_run(inputs),
        "",
        "## Claims (methods/spdf.md §7)",
        "",
        *claims_section(claims),
        "",
    ]
    lines += tables_and_figures(inputs, TABLES, FIGURES, out)
    lines += ["## Caveats", "", *caveats(inputs), "", "## Provenance", "", *provenance(inputs)]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    return report_main(
        argv, __doc__.splitlines()[0], "spdf", lambda args: load_inputs(args.results), render
    )


def report_main(
    argv: Sequence[str] | None,
    description: str,
    study: str,
    load: Callable[[argparse.Namespace], Any],
    render_fn: Callable[[Any, Path], str],
    add_args: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """The command line every study report shares: ``--results``, ``--out`` (+ ``add_args``);
    a missing input is one line on stderr and exit code 1."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--results", type=Path, default=Path(f"results/{study}"))
    parser.add_argument("--out", type=Path, default=Path(f"results/reports/{study}.md"))
    parser.add_argument("--scale", default=None, help="the scale the results were made at")
    if add_args is not None:
        add_args(parser)
    args = parser.parse_args(argv)
    try:
        inputs = load(args)
    except ReportInputError as err:
        print(f"{study}_report: {err}", file=sys.stderr)
        return 1
    publish(inputs, args.out, lambda inp, out: with_stamp(render_fn(inp, out), args.scale))
    return 0


def tables_and_figures(
    inputs: Any, tables: dict[str, str], figures: dict[str, str], out: Path
) -> list[str]:
    """A section per table (its CSV linked, its Markdown inlined), every figure, then the
    saved generations of the study's NLG evaluations.

    ``inputs`` carries ``tables_dir``, ``markdown`` (stem -> text) and ``figures`` (stem -> PNG).
    """
    lines: list[str] = []
    for stem, title in tables.items():
        csv = inputs.tables_dir / f"{stem}.csv"
        lines += [f"## {title}", "", f"Data: [{csv.name}]({_link(csv, out)})", ""]
        lines += [inputs.markdown[stem], ""]
    lines += ["## Figures", ""]
    for stem, title in figures.items():
        lines += [f"### {title}", "", f"![{title}]({_link(inputs.figures[stem], out)})", ""]
    return lines + generations_section(inputs.tables_dir.parent, out)


def publish(inputs: Any, out: Path, render_fn: Callable[[Any, Path], str]) -> None:
    """Copy the figures beside ``out``, then write the rendered report atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    inputs.figures.update(copy_figures(inputs.figures, out))
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render_fn(inputs, out))
    os.replace(tmp, out)
    print(out)


def copy_figures(figures: dict[str, Path], out: Path) -> dict[str, Path]:
    """Copy the PNGs beside the report so it reads the same wherever it is committed."""
    folder = out.parent / f"{out.stem}_figures"
    folder.mkdir(parents=True, exist_ok=True)
    copies = {}
    for stem, path in figures.items():
        copies[stem] = folder / path.name
        shutil.copyfile(path, copies[stem])
    return copies


if __name__ == "__main__":
    sys.exit(main())
