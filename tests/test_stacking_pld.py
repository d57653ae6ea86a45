"""The RaPTr baselines on the same loop: gradual stacking and progressive layer dropping."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import RandomTokens, toy_model

from sparselm.errors import ConfigError
from sparselm.methods.layer_drop import (
    LayerDropConfig,
    LayerDropHook,
    expected_block_fraction,
    keep_probs,
    pld_plan,
)
from sparselm.methods.stacking import StackingConfig, StackingHook, copy_sources, depth_stages
from sparselm.model import lm_loss
from sparselm.optim import OptimConfig, build_adamw
from sparselm.schedules import pld_keep_ratio
from sparselm.train import TrainConfig, TrainRun, train

OPTIM = OptimConfig(lr=1e-2, min_lr=1e-3, warmup_steps=2, weight_decay=0.1)


def test_copy_sources_take_the_top_blocks():
    assert copy_sources(6, 9) == [3, 4, 5]
    assert copy_sources(6, 12) == [0, 1, 2, 3, 4, 5]
    assert copy_sources(2, 6) == [0, 1, 0, 1]
    assert copy_sources(4, 4) == []


def test_depth_stages_rescale_and_validate():
    assert [s.path_len for s in depth_stages(StackingConfig(), 4)] == [2, 3, 4]
    assert [s.path_len for s in depth_stages(StackingConfig(), 12)] == [6, 9, 12]
    with pytest.raises(ConfigError, match="method.stages"):
        depth_stages(StackingConfig(stages=(9, 6, 12)), 12)
    with pytest.raises(ConfigError, match="method.stages"):
        depth_stages(StackingConfig(stages=(6, 9)), 12)  # never reaches the full depth


def _stacking_run(out, steps=6, stop_at=None):
    model = toy_model(seed=3, n_layer=4)
    init = [b.state_dict() for b in model.blocks]
    init = [{k: v.clone() for k, v in sd.items()} for sd in init]
    hook = StackingHook(StackingConfig(stages=(2, 4), reference_depth=None), 4, steps)
    cfg = TrainConfig(steps=steps, eval_every=0, ckpt_every=1, progress=False)
    run = TrainRun(model, build_adamw(model, OPTIM), RandomTokens(), cfg, OPTIM, out, [hook])
    return run, init


def _equal_blocks(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_stacking_grows_by_copying_the_top_blocks_at_the_boundary(tmp_path):
    run, init = _stacking_run(tmp_path / "a")
    train(run, stop_at=2)  # last step of the 2-block stage: the top blocks are untouched
    blocks, state = run.model.blocks, run.optimizer.state
    for layer in (2, 3):
        assert all(torch.equal(v, init[layer][k]) for k, v in blocks[layer].state_dict().items())
        assert all(p not in state for p in blocks[layer].parameters())
    run, _ = _stacking_run(tmp_path / "b")
    train(run, stop_at=3)  # the boundary step: grown after its optimizer step
    blocks, state = run.model.blocks, run.optimizer.state
    assert _equal_blocks(blocks[2], blocks[0]) and _equal_blocks(blocks[3], blocks[1])
    assert all(p not in state for layer in (2, 3) for p in blocks[layer].parameters())
    assert all(p in state for p in blocks[0].parameters())
    train(run)  # resumes; all four blocks now train, with their own fresh moments
    assert not _equal_blocks(blocks[2], blocks[0])
    assert all(p in run.optimizer.state for p in blocks[3].parameters())
    log = [
        json.loads(line) for line in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()
    ]
    assert [r["path_len"] for r in log] == [2, 2, 2, 4, 4, 4]


def test_stacking_resume_across_the_boundary_equals_uninterrupted(tmp_path):
    whole, _ = _stacking_run(tmp_path / "whole")
    train(whole)
    part, _ = _stacking_run(tmp_path / "part")
    train(part, stop_at=3)
    resumed, _ = _stacking_run(tmp_path / "part")
    train(resumed)
    for p, q in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_pld_keep_ratio_schedule():
    assert pld_keep_ratio(0) == 1.0
    assert pld_keep_ratio(1000) == pytest.approx(0.5 * np.exp(-1) + 0.5)
    assert pld_keep_ratio(10**6) == pytest.approx(0.5)
    probs = keep_probs(10**6, LayerDropConfig(), 4)
    assert probs == pytest.approx([0.875, 0.75, 0.625, 0.5])  # deeper layers drop more
    assert keep_probs(0, LayerDropConfig(), 4) == [1.0] * 4
    with pytest.raises(ConfigError, match="method.theta_bar"):
        LayerDropConfig(theta_bar=0.0)


def test_pld_paths_are_per_step_and_match_their_expectation():
    cfg = LayerDropConfig(gamma=0.01, seed=2)
    assert pld_plan(500, cfg, 12) == pld_plan(500, cfg, 12)
    late = [len(pld_plan(s, cfg, 12)) for s in range(2000, 6000)]
    assert np.mean(late) == pytest.approx(sum(keep_probs(10**6, cfg, 12)), rel=0.02)
    scales = dict(pld_plan(4000, cfg, 12))
    probs = keep_probs(4000, cfg, 12)
    assert all(scales[i] == pytest.approx(1 / probs[i]) for i in scales)
    assert expected_block_fraction(cfg, 12, 1) == 1.0
    assert 0.7 < expected_block_fraction(cfg, 12, 1000) < 1.0


def test_pld_hook_trains_through_the_loop(tmp_path):
    model = toy_model(seed=4, n_layer=4)
    hook = LayerDropHook(LayerDropConfig(theta_bar=0.5, gamma=0.5), 4, 6)
    cfg = TrainConfig(steps=6, progress=False)
    metrics = train(
        TrainRun(model, build_adamw(model, OPTIM), RandomTokens(), cfg, OPTIM, tmp_path, [hook])
    )
    assert np.isfinite(metrics["final_val_loss"])
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["pld_theta"] == 1.0 and min(r["path_len"] for r in log) < 4


def test_stacking_validates_only_the_grown_blocks(tmp_path):
    # raptr.md §2.3: before the last stage the model is the first k blocks; blocks above k are
    # untrained init, so validating them would report a model that was never trained. The val
    # loss must be that of a k-block GPT holding the same weights.
    steps = 6
    model = toy_model(seed=3, n_layer=4)
    hook = StackingHook(StackingConfig(stages=(2, 4), reference_depth=None), 4, steps)
    cfg = TrainConfig(steps=steps, eval_every=1, eval_batches=2, progress=False)
    batches = RandomTokens()
    run = TrainRun(model, build_adamw(model, OPTIM), batches, cfg, OPTIM, tmp_path, [hook])
    train(run, stop_at=2)  # inside the 2-block stage
    shallow = toy_model(n_layer=2)
    state = {
        k: v for k, v in model.state_dict().items() if not k.startswith(("blocks.2", "blocks.3"))
    }
    shallow.load_state_dict(state)
    shallow.eval()
    with torch.no_grad():
        want = [float(lm_loss(shallow(x).logits, y)) for x, y in batches.val_batches(2)]
        full = [float(lm_loss(model.eval()(x).logits, y)) for x, y in batches.val_batches(2)]
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2
    assert log[-1]["val_loss"] == pytest.approx(sum(want) / 2, rel=1e-6)
    assert (
        abs(log[-1]["val_loss"] - sum(full) / 2) > 1e-5
    )  # the 4-block model differs (far above float error)
    model.train()
    train(run)  # the last stage: the whole model is validated
    with torch.no_grad():
        final = [float(lm_loss(model.eval()(x).logits, y)) for x, y in batches.val_batches(2)]
    assert _last_val_loss(tmp_path) == pytest.approx(sum(final) / 2, rel=1e-6)


def _last_val_loss(out) -> float:
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return log[-1]["val_loss"]


def test_pld_gamma_per_run_is_gamma_times_the_run_length():
    per_step = LayerDropConfig(theta_bar=0.5, gamma=0.016)
    per_run = LayerDropConfig(theta_bar=0.5, gamma=0.9, gamma_per_run=4.0)  # gamma is overridden
    hook = LayerDropHook(per_run, n_layer=4, total_steps=250)
    assert hook.cfg.gamma == pytest.approx(0.016) and hook.cfg.gamma_per_run is None
    ours = [p for t in range(250) for p in keep_probs(t, hook.cfg, 4)]
    assert ours == pytest.approx([p for t in range(250) for p in keep_probs(t, per_step, 4)])
    assert expected_block_fraction(per_run, 4, 250) == pytest.approx(
        expected_block_fraction(per_step, 4, 250)
    )
    with pytest.raises(ConfigError, match="method.gamma_per_run"):
        LayerDropConfig(gamma_per_run=-1.0)
