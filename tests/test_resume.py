"""Stop-and-resume must equal an uninterrupted run, bit for bit on CPU."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import RandomTokens, toy_model

from sparselm.checkpoint import latest_checkpoint, load_model_weights
from sparselm.errors import CheckpointError, TrainingDivergedError
from sparselm.hooks import TrainHook
from sparselm.optim import OptimConfig, build_adamw
from sparselm.sparsity.static import StaticSparsity, StaticSparsityConfig
from sparselm.train import TrainConfig, TrainRun, train

OPTIM = OptimConfig(lr=1e-2, min_lr=1e-3, warmup_steps=3)
CFG = TrainConfig(steps=12, grad_accum=2, eval_every=4, ckpt_every=4)


def _run(out, dropout=0.1):
    model = toy_model(seed=1, dropout=dropout)  # dropout makes the RNG state matter
    hook = StaticSparsity.from_config(
        model.block_linears(), StaticSparsityConfig(level=0.5, seed=4)
    )
    return TrainRun(model, build_adamw(model, OPTIM), RandomTokens(), CFG, OPTIM, out, hooks=[hook])


def _losses(out):
    return [
        (r["step"], r.get("train_loss"), r.get("val_loss"))
        for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())
    ]


def test_resume_equals_uninterrupted(tmp_path):
    whole = _run(tmp_path / "whole")
    train(whole)

    first = _run(tmp_path / "split")
    train(first, stop_at=5)  # "killed" after step 5; checkpoints exist at 4 (and 5 on exit)
    resumed = _run(tmp_path / "split")  # a fresh process: new objects, same config
    train(resumed)

    for k, v in whole.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert _losses(tmp_path / "whole") == _losses(tmp_path / "split")


def test_resume_after_a_crash_between_checkpoints(tmp_path):
    """A kill leaves steps logged past the last checkpoint; they are replayed, not duplicated."""
    whole = _run(tmp_path / "whole")
    train(whole)
    crashed = _run(tmp_path / "split")
    train(crashed, stop_at=6)
    ckpts = tmp_path / "split" / "checkpoints"
    (ckpts / "latest").write_text("step_00000004")  # as if killed at step 6 before saving
    resumed = _run(tmp_path / "split")
    train(resumed)
    assert _losses(tmp_path / "whole") == _losses(tmp_path / "split")


def test_checkpoint_of_another_shape_is_a_one_line_error(tmp_path):
    run = _run(tmp_path / "a")
    train(run, stop_at=1)
    other = toy_model(d_model=48)
    with pytest.raises(CheckpointError, match="shape") as err:
        load_model_weights(latest_checkpoint(tmp_path / "a"), other)
    assert "\n" not in str(err.value)


class _GradientBlowsUpAt(TrainHook):
    """Stands in for a diverging run: from ``step`` on, one gradient entry becomes inf."""

    name = "blow_up"

    def __init__(self, model, step):
        self.model, self.at = model, step

    def after_backward(self, step):
        if step >= self.at:
            self.model.wte.weight.grad[0, 0] = float("inf")


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path):
    run = _run(tmp_path / "nan", dropout=0.0)
    run.hooks = [*run.hooks, _GradientBlowsUpAt(run.model, step=6)]
    with pytest.raises(TrainingDivergedError, match="step 7: .* not finite.*step_00000004"):
        train(run)
    assert latest_checkpoint(tmp_path / "nan").name == "step_00000004"
    assert not list((tmp_path / "nan" / "checkpoints").glob(".tmp*"))
    assert not (tmp_path / "nan" / "metrics.json").exists()
    # the weights in memory were not updated with the bad gradient either
    assert torch.isfinite(run.model.wte.weight).all()
