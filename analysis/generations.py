"""The report section that links every saved generation file of a study.

Each NLG evaluation writes ``generations/<lm-eval task>.jsonl`` beside its ``metrics.json``
(one line per scored input: input, output, references); the report lists them so a reader can
open what each model wrote.
"""

from __future__ import annotations

import os
from pathlib import Path

# <study results>/<stage>/<task>/<run>/generations/<lm-eval task>.jsonl
PATTERN = "*/*/*/generations/*.jsonl"


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def generations_section(results_dir: Path, out: Path) -> list[str]:
    """A Markdown table (stage, task, run, inputs, link) of the saved generations; empty when a
    study saved none."""
    files = sorted(results_dir.glob(PATTERN))
    if not files:
        return []
    lines = [
        "## Saved generations",
        "",
        "What each fine-tuned model wrote for every scored input, one JSON line per input "
        "(`input`, `output`, `references`); see docs/evaluation.md.",
        "",
        "| stage | task | run | inputs | file |",
        "|---|---|---|---|---|",
    ]
    for path in files:
        run = path.parents[1]
        link = Path(os.path.relpath(path, out.parent)).as_posix()
        lines.append(
            f"| {run.parents[1].name} | {run.parent.name} | {run.name} | "
            f"{_count_lines(path)} | [{path.name}]({link}) |"
        )
    return [*lines, ""]
