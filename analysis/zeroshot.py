"""Which of a zero-shot task's numbers is its score, for every study: ``acc_norm`` where
lm-eval reports it, else ``acc``, else ``word_perplexity`` (wikitext)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd

ZEROSHOT_PREFERENCE = ("acc_norm", "acc", "word_perplexity")


def zeroshot_main_metric(metrics: Iterable[str]) -> str | None:
    """The first of ``ZEROSHOT_PREFERENCE`` among a task's metrics; None if it has none."""
    found = set(metrics)
    return next((m for m in ZEROSHOT_PREFERENCE if m in found), None)


def zeroshot_scores(frame: pd.DataFrame, keys: Sequence[str] = ("variant", "seed")) -> pd.DataFrame:
    """Columns ``keys`` + (task, metric, value): the rows of each zero-shot task's score, from
    a collected runs frame; tasks in sorted order."""
    rows = frame[frame["stage"] == "eval_zeroshot"]
    parts = []
    for task in sorted(rows["task"].dropna().unique()):
        metric = zeroshot_main_metric(rows.loc[rows["task"] == task, "metric"])
        if metric is not None:
            parts.append(rows[(rows["task"] == task) & (rows["metric"] == metric)])
    columns = [*keys, "task", "metric", "value"]
    return pd.concat(parts)[columns] if parts else pd.DataFrame(columns=columns)
