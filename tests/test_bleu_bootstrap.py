"""ΔBLEU with sacrebleu's paired bootstrap over test inputs, combined with the seed spread."""

from __future__ import annotations

import json
import random

import pytest
import sacrebleu

from analysis.bleu_bootstrap import generations_of, paired_bleu_interval, paired_delta
from analysis.verdicts import HELD, INCONCLUSIVE, above

WORDS = "the cheap coffee shop near the river serves italian food with a high rating".split()


def _write(path, outputs, refs):
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {"doc_id": i, "input": "", "output": out, "references": r}
        for i, (out, r) in enumerate(zip(outputs, refs, strict=True))
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _refs(n, seed=0):
    rng = random.Random(seed)
    return [[" ".join(rng.sample(WORDS, 8)) for _ in range(1 + i % 3)] for i in range(n)]


def test_point_difference_is_sacrebleus_corpus_bleu_difference(tmp_path):
    refs = _refs(60)
    rng = random.Random(1)
    good = [r[0] if rng.random() < 0.6 else " ".join(rng.sample(WORDS, 6)) for r in refs]
    bad = [" ".join(rng.sample(WORDS, 6)) for _ in refs]
    a, b = _write(tmp_path / "a.jsonl", good, refs), _write(tmp_path / "b.jsonl", bad, refs)
    delta, variance, n = paired_delta(a, b)

    def corpus(outputs):
        width = max(len(r) for r in refs)
        streams = [[r[j] if j < len(r) else None for r in refs] for j in range(width)]
        return sacrebleu.corpus_bleu(outputs, streams).score

    assert n == 60
    assert delta == pytest.approx(corpus(good) - corpus(bad), abs=1e-9)
    assert variance > 0


def test_one_seed_gets_an_interval_from_the_inputs_and_a_clear_gap_resolves(tmp_path):
    refs = _refs(80)
    rng = random.Random(2)
    good = [r[0] for r in refs]
    bad = [" ".join(rng.sample(WORDS, 5)) for _ in refs]
    pair = (_write(tmp_path / "a.jsonl", good, refs), _write(tmp_path / "b.jsonl", bad, refs))
    interval = paired_bleu_interval([pair])
    assert interval.n == 1 and interval.inputs == 80 and interval.resolved
    assert above(interval, 0.0) == HELD


def test_identical_systems_give_zero_and_noisy_systems_stay_inconclusive(tmp_path):
    refs = _refs(40)
    rng = random.Random(3)
    same = [" ".join(rng.sample(WORDS, 7)) for _ in refs]
    a = _write(tmp_path / "a.jsonl", same, refs)
    b = _write(tmp_path / "b.jsonl", same, refs)
    zero = paired_bleu_interval([(a, b)])
    assert zero.mean == 0.0 and zero.half == 0.0
    # two seeds whose differences disagree in sign: the interval straddles 0
    flip = [" ".join(rng.sample(WORDS, 7)) for _ in refs]
    c = _write(tmp_path / "c.jsonl", flip, refs)
    mixed = paired_bleu_interval([(a, c), (c, a)])
    assert mixed.lo < 0 < mixed.hi
    assert above(mixed, 0.0) == INCONCLUSIVE


def test_generations_file_is_found_beside_metrics(tmp_path):
    metrics = tmp_path / "run" / "metrics.json"
    assert generations_of(metrics) is None
    _write(tmp_path / "run" / "generations" / "sparselm_e2e_nlg.jsonl", ["x"], [["x"]])
    assert generations_of(metrics).name == "sparselm_e2e_nlg.jsonl"


def test_spdf_bleu_claim_uses_the_bootstrap_when_generations_are_saved(tmp_path):
    """One seed: without generations there is no interval (INCONCLUSIVE); with them the
    bootstrap over inputs gives one, and a clear BLEU gap is resolved."""
    import pandas as pd

    from analysis.spdf_claims import BLEU_MEASURE, claim_within_tolerance

    refs = _refs(80)
    rng = random.Random(4)
    outputs = {0.0: [r[0] for r in refs], 0.75: [" ".join(rng.sample(WORDS, 5)) for _ in refs]}
    rows = []
    for sparsity, outs in outputs.items():
        run = tmp_path / f"s{sparsity}"
        _write(run / "generations" / "sparselm_e2e_nlg.jsonl", outs, refs)
        rows.append(
            {
                "stage": "eval_nlg",
                "task": "e2e",
                "sparsity": sparsity,
                "fraction": 1.0,
                "seed": 0,
                "metric": "bleu",
                "value": 50.0 if sparsity == 0.0 else 5.0,
                "source": str(run / "metrics.json"),
            }  # fmt: skip
        )
    runs = pd.DataFrame(rows)
    with_files = claim_within_tolerance(runs, BLEU_MEASURE)
    assert "bootstrap" in with_files.evidence and with_files.verdict == "DID NOT HOLD"
    without = claim_within_tolerance(runs.drop(columns="source"), BLEU_MEASURE)
    assert "no interval" in without.evidence and without.verdict == "INCONCLUSIVE"
