"""Which evaluation task names exist, checked without importing torch or lm-eval when they are
ours (the study workflow checks its grids with this when the DAG is built)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from sparselm.errors import ConfigError

EVAL_TASKS_DIR = Path(__file__).resolve().parent / "tasks"


def our_eval_tasks() -> set[str]:
    """The task and group names our lm-eval YAMLs define (read as text: they hold tags that
    a plain YAML loader refuses, and lm-eval takes seconds to import)."""
    names = set()
    for file in EVAL_TASKS_DIR.glob("*yaml"):
        names |= set(re.findall(r"(?m)^(?:task|group): *([\w.-]+) *$", file.read_text()))
    return names


def check_eval_tasks(names: Sequence[str], key: str) -> None:
    """Every name is one of our tasks or groups, or one lm-eval knows; only a name that is
    not ours pays for indexing lm-eval's built-in tasks."""
    ours = our_eval_tasks()
    unknown = [n for n in names if n not in ours]
    if not unknown:
        return
    from sparselm.evaluation.run import task_manager  # imports lm-eval: only when needed

    try:
        task_manager(unknown, Path("."))
    except ConfigError as e:  # names the first unknown task and lists ours
        raise ConfigError(f"{key}: {str(e).removeprefix('tasks: ')}") from None
