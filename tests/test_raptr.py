"""RaPTr invariants (raptr.md §2, §10): the sampler, the stage schedule, the optimizer option,
p = 1 equals standard training bit for bit, and the pretrain CLI with method=raptr."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import RandomTokens, toy_model
from omegaconf import OmegaConf

from sparselm.cli.method_registry import method_hooks
from sparselm.errors import ConfigError
from sparselm.hooks import TrainHook
from sparselm.methods.raptr import (
    RaptrConfig,
    RaptrHook,
    inclusion_prob,
    path_plan,
    resolve_fixed_layers,
    sample_path,
)
from sparselm.optim import OptimConfig, build_adamw
from sparselm.schedules import Stage, equal_stages, stage_at, stage_starts
from sparselm.train import TrainConfig, TrainRun, train

OPTIM = OptimConfig(lr=1e-2, min_lr=1e-3, warmup_steps=2, weight_decay=0.1)
FIXED = (0, 11)


def test_stage_schedule_switches_at_the_configured_steps():
    stages = equal_stages([6, 8, 10, 12])
    assert stage_starts(100, stages) == [0, 25, 50, 75]
    assert [stage_at(s, 100, stages)[0] for s in (0, 24, 25, 74, 75, 99, 150)] == [
        0,
        0,
        1,
        2,
        3,
        3,
        3,
    ]
    uneven = [Stage(6, 0.1), Stage(12, 0.9)]
    assert stage_starts(30, uneven) == [0, 3] and stage_at(2, 30, uneven)[0] == 0


def test_same_seed_and_step_give_the_same_path_without_touching_global_rngs():
    torch_state, np_state, py_state = (
        torch.get_rng_state(),
        np.random.get_state(),
        random.getstate(),
    )
    for mode, length in (("bernoulli", 7.5), ("fixed_count", 7)):
        first = [sample_path(s, 3, 12, length, FIXED, mode) for s in range(50)]
        # another micro-batch / another data-parallel rank asks again: same answer
        again = [sample_path(s, 3, 12, length, FIXED, mode) for s in reversed(range(50))][::-1]
        assert first == again
        assert len({tuple(p) for p in first}) > 10  # but steps differ from each other
        assert first != [sample_path(s, 4, 12, length, FIXED, mode) for s in range(50)]
    assert torch.equal(torch_state, torch.get_rng_state())
    assert random.getstate() == py_state
    assert np.array_equal(np_state[1], np.random.get_state()[1])


@pytest.mark.parametrize("length", [6, 8, 10, 12])
def test_bernoulli_paths_keep_fixed_layers_and_the_expected_length(length):
    paths = [sample_path(s, 0, 12, length, FIXED, "bernoulli") for s in range(10_000)]
    assert all(0 in p and 11 in p and p == sorted(set(p)) for p in paths)
    assert np.mean([len(p) for p in paths]) == pytest.approx(length, rel=0.01)
    # p is the same for every non-fixed layer
    p = inclusion_prob(length, 12, 2)
    for layer in range(1, 11):
        assert np.mean([layer in q for q in paths]) == pytest.approx(p, abs=0.02)


def test_fixed_count_paths_have_exactly_the_stage_length():
    for length in (2, 5, 12):
        for s in range(200):
            path = sample_path(s, 1, 12, length, FIXED, "fixed_count")
            assert len(path) == length and {0, 11} <= set(path)
    with pytest.raises(ValueError, match="whole path_len"):
        sample_path(0, 0, 12, 6.5, FIXED, "fixed_count")


def test_inverse_p_scaling_and_its_p1_limit():
    assert inclusion_prob(6, 12, 2) == pytest.approx(0.4)
    plan = path_plan([0, 3, 11], FIXED, 0.4, "inverse_p")
    assert plan == [(0, 1.0), (3, 2.5), (11, 1.0)]
    assert path_plan([0, 3, 11], FIXED, 0.4, "none") == [(0, 1.0), (3, 1.0), (11, 1.0)]
    assert all(scale == 1.0 for _, scale in path_plan(list(range(12)), FIXED, 1.0, "inverse_p"))


def test_hook_reports_stage_p_and_executed_fraction():
    hook = RaptrHook(RaptrConfig(seed=5), n_layer=12, total_steps=40)
    assert [hook.log_fields(s)["raptr_stage"] for s in (0, 9, 10, 39)] == [0, 0, 1, 3]
    assert [round(hook.stage(s)[2], 6) for s in (0, 10, 20, 30)] == [0.4, 0.6, 0.8, 1.0]
    fields = hook.log_fields(3)
    assert fields["path_len"] == len(hook.forward_kwargs(3)["plan"])
    assert hook.flop_factors(3)["executed_block_frac"] == fields["path_len"] / 12
    assert hook.forward_kwargs(39)["plan"] == [(i, 1.0) for i in range(12)]


def test_stages_rescale_to_the_model_depth_and_fixed_layers_resolve():
    hook = RaptrHook(RaptrConfig(), n_layer=4, total_steps=8)
    assert [s.path_len for s in hook.stages] == pytest.approx([2, 8 / 3, 10 / 3, 4])
    assert resolve_fixed_layers(["first", "last", -1], 4) == (0, 3)
    with pytest.raises(ConfigError, match="method.fixed_layers"):
        resolve_fixed_layers(["middle"], 4)
    with pytest.raises(ConfigError, match="method.reference_depth"):
        RaptrHook(RaptrConfig(stages=(12, 16, 20, 24)), n_layer=12, total_steps=8)
    with pytest.raises(ConfigError, match="method.sampling"):
        RaptrConfig(sampling="uniform")


def test_fixed_layers_that_cover_the_model_are_a_one_line_error():
    """2 layers with the first and last fixed: no layer is left to sample, RaPTr would be the
    dense baseline in disguise."""
    node = {"name": "raptr", "fixed_layers": ["first", "last"]}
    with pytest.raises(ConfigError) as err:
        method_hooks(OmegaConf.create({"method": node}), toy_model(n_layer=2), total_steps=10)
    msg = str(err.value)
    assert "model.n_layer=2" in msg and "method.fixed_layers=[first, last]" in msg
    assert "model.n_layer=4" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="model.n_layer=1 .*fixed_layers=\\[0\\]"):
        RaptrHook(RaptrConfig(fixed_layers=(0,)), n_layer=1, total_steps=4)
    # what the message suggests works: 4 layers sample the middle two, or nothing fixed
    (deep,) = method_hooks(OmegaConf.create({"method": node}), toy_model(n_layer=4), 10)
    assert any(len(deep.plan(s)) < 4 for s in range(5))
    free = RaptrHook(RaptrConfig(fixed_layers=()), n_layer=2, total_steps=10)
    assert any(len(free.plan(s)) < 2 for s in range(5))


def _run(out, hooks=(), n_layer=4, steps=6, grad_accum=2):
    model = toy_model(seed=2, n_layer=n_layer)
    cfg = TrainConfig(steps=steps, grad_accum=grad_accum, eval_every=3, progress=False)
    hooks = list(hooks)
    return TrainRun(model, build_adamw(model, OPTIM), RandomTokens(), cfg, OPTIM, out, hooks)


@pytest.mark.parametrize("freeze", [False, True])
def test_full_path_reproduces_standard_training_bit_for_bit(tmp_path, freeze):
    plain = _run(tmp_path / "plain")
    full = RaptrConfig(stages=(4,), reference_depth=None, freeze_skipped_optimizer=freeze)
    raptr = _run(tmp_path / "raptr", [RaptrHook(full, 4, 6)])
    a, b = train(plain), train(raptr)
    assert a["final_val_loss"] == b["final_val_loss"]
    for (name, p), q in zip(plain.model.named_parameters(), raptr.model.parameters(), strict=True):
        assert torch.equal(p, q), name


class SkippedBlockSpy(TrainHook):
    """Snapshots every skipped block's weights and AdamW state around each optimizer step."""

    def __init__(self, raptr: RaptrHook) -> None:
        self.raptr, self.changed, self.checked = raptr, [], 0

    def on_train_start(self, model, optimizer):
        self.model, self.optimizer = model, optimizer

    def _snapshot(self, step):
        ran = set(self.raptr.path(step))
        snap = {}
        for layer, block in enumerate(self.model.blocks):
            if layer in ran:
                continue
            for i, p in enumerate(block.parameters()):
                state = {k: v.clone() for k, v in self.optimizer.state.get(p, {}).items()}
                snap[(layer, i)] = (p.detach().clone(), p.grad, state)
        return snap

    def after_backward(self, step):
        self.before = self._snapshot(step)

    def after_optimizer_step(self, step):
        after = self._snapshot(step)
        for key, (w0, grad, s0) in self.before.items():
            w1, _, s1 = after[key]
            self.checked += 1
            same_state = s0.keys() == s1.keys() and all(torch.equal(s0[k], s1[k]) for k in s0)
            if grad is not None or not torch.equal(w0, w1) or not same_state:
                self.changed.append((step, key))


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_skipped_optimizer_leaves_skipped_blocks_untouched(tmp_path, freeze):
    cfg = RaptrConfig(stages=(2.5,), reference_depth=None, freeze_skipped_optimizer=freeze)
    raptr = RaptrHook(cfg, n_layer=4, total_steps=12)
    spy = SkippedBlockSpy(raptr)
    train(_run(tmp_path, [raptr, spy], steps=12))
    assert spy.checked > 20  # layers 1 and 2 were skipped often, after having AdamW state
    if freeze:  # no grad, no weight change (decay included), moments and step count kept
        assert spy.changed == []
    else:  # the default: zero grads, so momentum and weight decay still move them
        assert len(spy.changed) == spy.checked


def test_method_hooks_registry_and_config_errors():
    model = toy_model(n_layer=4)
    node = {"name": "raptr", "stages": [2, 4], "reference_depth": None, "seed": 1}
    (hook,) = method_hooks(OmegaConf.create({"method": node}), model, total_steps=10)
    assert isinstance(hook, RaptrHook) and hook.cfg.stages == (2, 4)
    assert method_hooks(OmegaConf.create({"method": {"name": "none"}}), model, 10) == []
    for bad, key in (
        ({"name": "dropout"}, "method.name"),
        ({**node, "samplng": "x"}, "method.samplng"),
        ({**node, "scaling": "sqrt"}, "method.scaling"),
        ({**node, "stages": [2, 6]}, "method.stages"),
    ):
        with pytest.raises(ConfigError, match=key) as err:
            method_hooks(OmegaConf.create({"method": bad}), model, 10)
        assert "\n" not in str(err.value)


@pytest.mark.slow
def test_pretrain_cli_refuses_raptr_on_the_two_layer_smoke_model(data_dir, tmp_path):
    env = os.environ | {
        "SPARSELM_DATA_DIR": str(data_dir),
        "SPARSELM_PREPARED_DIR": str(tmp_path / "prepared"),
    }
    args = ["scale=smoke", "method=raptr", "logger=none", "tokenizer.max_train_chars=20000"]
    proc = subprocess.run(
        [sys.executable, "-m", "sparselm.cli.pretrain", *args, f"hydra.run.dir={tmp_path / 'r'}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert "model.n_layer=2" in line and "method.fixed_layers=[first, last]" in line
    assert not (tmp_path / "r" / "metrics.json").exists()


@pytest.mark.slow
def test_pretrain_cli_with_raptr_logs_the_path(data_dir, tmp_path):
    out = tmp_path / "run"
    env = os.environ | {
        "SPARSELM_DATA_DIR": str(data_dir),
        "SPARSELM_PREPARED_DIR": str(tmp_path / "prepared"),
    }
    # the smoke model has 2 blocks: fix only the first so the second is really sampled
    args = ["scale=smoke", "method=raptr", "method.fixed_layers=[first]", "logger=none"]
    proc = subprocess.run(
        [sys.executable, "-m", "sparselm.cli.pretrain", *args, f"hydra.run.dir={out}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "raptr" and metrics["steps"] == 30
    assert 1.0 < metrics["flops_reduction"] < 2.0  # some steps ran only the first block
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert all("path_len" in r and "raptr_stage" in r for r in log)
    assert [r["raptr_stage"] for r in log] == sorted(r["raptr_stage"] for r in log)
    assert log[-1]["raptr_stage"] == 3 and log[-1]["path_len"] == 2
    assert "method:" in (out / "config.yaml").read_text()
