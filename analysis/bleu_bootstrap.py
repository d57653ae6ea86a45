"""ΔBLEU between two systems scored on the same test inputs, with an interval that covers both
the choice of test inputs (sacrebleu's paired bootstrap) and the training seed.

Per seed, the two runs' saved generations (``generations/<task>.jsonl`` beside each
evaluation's metrics.json) are aligned by input and resampled together, as sacrebleu's paired
bootstrap test does: the same resampled inputs for both systems, corpus BLEU recomputed from
sacrebleu's per-sentence sufficient statistics. The interval of the mean difference over seeds
adds the seed spread (Student t) and the bootstrap spread in quadrature; the bootstrap part is
not divided by the number of seeds, since every seed is scored on the same inputs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sacrebleu.metrics import BLEU

from analysis.stats import mean_ci
from analysis.verdicts import Interval

N_SAMPLES = 1000
SEED = 12345  # sacrebleu's own default resampling seed (SACREBLEU_SEED)
Z95 = 1.959963984540054


def generations_of(metrics_json: str | Path) -> Path | None:
    """The one generations file beside an evaluation's metrics.json, if it was saved."""
    files = sorted((Path(metrics_json).parent / "generations").glob("*.jsonl"))
    return files[0] if len(files) == 1 else None


def _read(path: Path) -> dict[int, tuple[str, list[str]]]:
    rows = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {int(r["doc_id"]): (r["output"].strip(), list(r["references"])) for r in rows}


def _stats(metric: BLEU, hyps: list[str], refs: list[list[str]]) -> np.ndarray:
    width = max(len(r) for r in refs)
    streams = [[r[j] if j < len(r) else None for r in refs] for j in range(width)]
    # sacrebleu's paired bootstrap works on these per-sentence sufficient statistics
    return np.asarray(metric._extract_corpus_statistics(hyps, streams), dtype=np.float64)


def _bleu(metric: BLEU, stats: np.ndarray) -> float:
    return float(metric._compute_score_from_stats(stats.sum(0).tolist()).score)


def paired_delta(
    a: Path, b: Path, n_samples: int = N_SAMPLES, seed: int = SEED
) -> tuple[float, float, int]:
    """(BLEU(a) − BLEU(b), bootstrap variance of that difference, number of shared inputs)."""
    ga, gb = _read(a), _read(b)
    docs = sorted(ga.keys() & gb.keys())
    if not docs:
        raise ValueError(f"{a} and {b} share no test inputs")
    refs = [ga[d][1] for d in docs]
    metric = BLEU()
    sa = _stats(metric, [ga[d][0] for d in docs], refs)
    sb = _stats(metric, [gb[d][0] for d in docs], refs)
    picks = np.random.default_rng(seed).integers(0, len(docs), size=(n_samples, len(docs)))
    diffs = [_bleu(metric, sa[i]) - _bleu(metric, sb[i]) for i in picks]
    return _bleu(metric, sa) - _bleu(metric, sb), float(np.var(diffs, ddof=1)), len(docs)


def paired_bleu_interval(pairs: Sequence[tuple[Path, Path]]) -> Interval:
    """Interval of the mean ΔBLEU over seeds, one (system, baseline) generations pair per seed."""
    if not pairs:
        return Interval(math.nan, math.nan, 0)
    deltas, variances, inputs = zip(*(paired_delta(a, b) for a, b in pairs), strict=True)
    mean, seed_half, n = mean_ci(deltas)
    seed_half = 0.0 if n < 2 else seed_half
    boot_half = Z95 * math.sqrt(float(np.mean(variances)))
    return Interval(mean, math.hypot(seed_half, boot_half), n, inputs=min(inputs))
