"""Corpus-level, multi-reference scores for the sparselm data-to-text tasks.

Every score comes from a library: BLEU, chrF and TER from sacrebleu (defaults: 13a
tokenisation, case-sensitive), ROUGE-L from rouge-score (best reference per output, averaged).
All are on a 0-100 scale.

lm-eval's built-in ``bleu``/``chrf``/``ter`` aggregations transpose the references with
``zip``, which silently drops references beyond the shortest list; our inputs have 1 to ~10
references each, so these aggregations pad the reference streams with ``None`` instead
(sacrebleu's documented way to give a variable number of references).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sacrebleu
from rouge_score import rouge_scorer

METRICS = ("bleu", "rougeL", "chrf", "ter")

Item = tuple[Sequence[str], str]  # (references, prediction)


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, Item]:
    """One (references, prediction) item per metric; the aggregations do the scoring."""
    item = (list(doc["references"]), results[0].strip())
    return {metric: item for metric in METRICS}


def _streams(items: Sequence[Item]) -> tuple[list[str], list[list[str | None]]]:
    preds = [pred for _, pred in items]
    width = max(len(refs) for refs, _ in items)
    streams = [[refs[j] if j < len(refs) else None for refs, _ in items] for j in range(width)]
    return preds, streams


def corpus_bleu(items: Sequence[Item]) -> float:
    preds, streams = _streams(items)
    return float(sacrebleu.corpus_bleu(preds, streams).score)


def corpus_chrf(items: Sequence[Item]) -> float:
    preds, streams = _streams(items)
    return float(sacrebleu.corpus_chrf(preds, streams).score)


def corpus_ter(items: Sequence[Item]) -> float:
    preds, streams = _streams(items)
    return float(sacrebleu.corpus_ter(preds, streams).score)


def mean_rouge_l(items: Sequence[Item]) -> float:
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    scores = [scorer.score_multi(list(refs), pred)["rougeL"].fmeasure for refs, pred in items]
    return 100.0 * sum(scores) / len(scores)
