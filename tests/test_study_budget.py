"""The study budget planner: costs read from the real DAG, and the gpu scale's hour."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "study_budget.py"


def _load():
    spec = importlib.util.spec_from_file_location("study_budget", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def budget():
    return _load()


def test_pretrain_cost_is_its_tokens_times_the_ledger(budget, data_dir):
    from sparselm.cli.common import compose_config
    from sparselm.flops import ModelShape, train_flops_per_token

    jobs = budget.dag_commands("spdf", "smoke", data_dir)
    stages = [stage for stage, _ in jobs]
    assert stages.count("pretrain") == 3 and stages.count("finetune") == 9  # the smoke grid
    a = budget.Assumptions(1e15, 0.5, 10.0, 60.0, 30.0)
    planner = budget.Planner(a)
    costs = [planner.cost(stage, overrides) for stage, overrides in jobs]
    pre = next(c for c in costs if c.stage == "pretrain")
    cfg, _ = compose_config("pretrain", ["scale=smoke"])  # the scale alone fixes the size
    t, m = cfg.train, cfg.model
    tokens = t.steps * t.micro_batch_size * t.grad_accum * t.seq_len
    assert pre.tokens == tokens
    shape = ModelShape(m.n_layer, m.d_model, m.n_head, m.d_ff, t.seq_len, m.vocab_size)
    assert pre.flops == pytest.approx(tokens * train_flops_per_token(shape)["total"])
    assert pre.seconds == pytest.approx(pre.flops / 5e14 + 10.0)  # compile is off at smoke
    fine = [c for c in costs if c.stage == "finetune"]
    assert all(0 < c.tokens for c in fine) and all(c.seconds > 10.0 for c in fine)
    evals = [(c, o) for c, (stage, o) in zip(costs, jobs, strict=True) if stage == "evaluate"]
    nlg = [c for c, o in evals if any("_nlg" in w or "webnlg" in w or "dart" in w for w in o)]
    assert len(nlg) == 9 and all(c.seconds == 30.0 for c, _ in evals if c not in nlg)
    # NLG jobs add their decoding: the smoke grid's 4 inputs x 2 beams at 200 rows/s
    assert all(c.seconds == pytest.approx(30.0 + 4 * 2 / 200) for c in nlg)


@pytest.mark.slow
def test_every_study_at_gpu_scale_plans_to_about_an_hour(budget, data_dir):
    a = budget.Assumptions(790e12, 0.40, 30.0, 60.0, 60.0)
    text = budget.report(list(budget.STUDIES), "gpu", data_dir, a)
    minutes = dict(re.findall(r"(\w+) (\d+) min", text.splitlines()[-1]))
    assert set(minutes) == set(budget.STUDIES)
    for study, value in minutes.items():
        assert 40 <= int(value) <= 70, (study, value)


def test_jobs_sharing_the_gpu_overlap_fixed_costs_but_not_compute(budget):
    jobs = [budget.JobCost("evaluate", seconds=60.0) for _ in range(5)]
    assert budget.stage_seconds(jobs, 1) == 300.0
    assert budget.stage_seconds(jobs, 4) == 120.0  # 4 then 1: two rounds
    heavy = [budget.JobCost("pretrain", seconds=100.0, compute_s=90.0) for _ in range(4)]
    assert budget.stage_seconds(heavy, 4) == 360.0  # the GPU's compute is not shared away
    assert budget.jobs_at_once("evaluate", "gpu") == 4
    assert budget.jobs_at_once("pretrain", "gpu") == 1
    assert budget.jobs_at_once("pretrain", "gpu_smoke") == 4
    assert budget.jobs_at_once("prepare", "gpu") == 1
    assert budget.jobs_at_once("pretrain", "smoke") == 1


@pytest.mark.slow
def test_gpu_smoke_spdf_plans_under_ten_minutes(budget, data_dir):
    a = budget.Assumptions(790e12, 0.40, 30.0, 60.0, 60.0)
    text = budget.report(["spdf"], "gpu_smoke", data_dir, a)
    minutes = int(re.search(r"spdf (\d+) min", text.splitlines()[-1]).group(1))
    assert minutes < 10
