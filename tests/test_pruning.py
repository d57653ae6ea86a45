"""Magnitude pruning: exact counts (unstructured and N:M), the cubic schedule, gradual pruning
whose masks only shrink, and fixed masks that survive sparse fine-tuning."""

from __future__ import annotations

import pytest
import torch
from helpers import RandomTokens, toy_model

from sparselm.errors import ConfigError
from sparselm.hooks import TrainHook
from sparselm.optim import OptimConfig, build_adamw
from sparselm.sparsity.mask_set import MaskSet
from sparselm.sparsity.masks import kept_count
from sparselm.sparsity.pruning import (
    GradualMagnitudePruning,
    cubic_sparsity,
    masks_from_zeros,
    nm_mask,
    one_shot_magnitude,
    parse_nm,
)
from sparselm.sparsity.static import StaticSparsity
from sparselm.train import TrainConfig, TrainRun, train

OPTIM = OptimConfig(lr=1e-2, min_lr=1e-3, warmup_steps=2, weight_decay=0.1)


def _nnz(t) -> int:
    return int((t.view() != 0).sum())


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
def test_one_shot_magnitude_exact_counts_and_largest_kept(sparsity):
    model = toy_model()
    targets = model.block_linears()
    masks = one_shot_magnitude(targets, sparsity)
    MaskSet.from_targets(targets, masks).apply_to_weights()
    for t, m in zip(targets, masks, strict=True):
        assert _nnz(t) == int(m.sum()) == kept_count(m.numel(), 1 - sparsity), t.name
        kept = t.view()[m].abs()
        assert kept.min() > 0


@pytest.mark.parametrize("n,m", [(2, 4), (16, 32), (1, 4)])
def test_nm_masks_keep_n_per_group_along_inputs(n, m):
    w = torch.randn(8, 64)
    mask = nm_mask(w, n, m)
    assert (mask.reshape(8, -1, m).sum(-1) == n).all()
    # the kept ones are the largest of their group
    groups = w.abs().reshape(8, -1, m)
    kept_min = groups.masked_fill(~mask.reshape(8, -1, m), float("inf")).amin(-1)
    dropped_max = groups.masked_fill(mask.reshape(8, -1, m), -1.0).amax(-1)
    assert (kept_min >= dropped_max).all()


def test_nm_one_shot_on_model_and_bad_specs():
    targets = toy_model().block_linears()
    for t, mask in zip(targets, one_shot_magnitude(targets, nm=(2, 4)), strict=True):
        assert int(mask.sum()) * 2 == mask.numel(), t.name
    assert parse_nm("16:64") == (16, 64)
    for bad in ("2-4", "5:4", "0:4"):
        with pytest.raises(ConfigError, match="prune.nm"):
            parse_nm(bad)
    with pytest.raises(ConfigError, match="prune.nm"):
        nm_mask(torch.randn(4, 6), 2, 4)


def test_cubic_schedule_endpoints_and_monotone():
    assert cubic_sparsity(0, 10, 110, 0.1, 0.8) == 0.1
    assert cubic_sparsity(10, 10, 110, 0.1, 0.8) == 0.1
    assert cubic_sparsity(110, 10, 110, 0.1, 0.8) == pytest.approx(0.8)
    assert cubic_sparsity(500, 10, 110, 0.1, 0.8) == pytest.approx(0.8)
    values = [cubic_sparsity(t, 10, 110, 0.1, 0.8) for t in range(0, 130)]
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))
    # cubic: half way through, 1 - 0.5^3 = 87.5 % of the increase is done
    assert cubic_sparsity(60, 10, 110, 0.0, 0.8) == pytest.approx(0.8 * 0.875)
    assert cubic_sparsity(5, 5, 5, 0.0, 0.5) == 0.5  # a zero-length ramp jumps at start


def test_gradual_pruning_masks_only_shrink_and_reach_target(tmp_path):
    model = toy_model()
    opt = build_adamw(model, OPTIM)
    hook = GradualMagnitudePruning(model.block_linears(), 0.8, start=2, end=10, every=2)
    seen = []

    class Spy(TrainHook):  # records the masks after every step
        name = "spy"

        def after_optimizer_step(self, step):
            seen.append({n: m.clone() for n, m in hook.masks.masks.items()})

    run = TrainRun(
        model, opt, RandomTokens(), TrainConfig(steps=14), OPTIM, tmp_path, hooks=[hook, Spy()]
    )
    train(run)
    levels = [
        1 - sum(int(m.sum()) for m in s.values()) / sum(m.numel() for m in s.values()) for s in seen
    ]
    assert all(b >= a for a, b in zip(levels, levels[1:], strict=False))
    for before, after in zip(seen, seen[1:], strict=False):
        for name in before:
            assert not (after[name] & ~before[name]).any(), name  # nothing revived
    for t in hook.targets:
        assert _nnz(t) == kept_count(t.view().numel(), 1 - 0.8), t.name
    assert hook.level == pytest.approx(0.8)


def test_gradual_pruning_config_errors():
    targets = toy_model().block_linears()
    with pytest.raises(ConfigError, match="prune.every"):
        GradualMagnitudePruning(targets, 0.5, start=0, end=10, every=0)
    with pytest.raises(ConfigError, match="prune.initial_sparsity"):
        GradualMagnitudePruning(targets, 0.5, start=0, end=10, every=1, initial_sparsity=0.6)
    with pytest.raises(ConfigError, match="prune.final_sparsity"):
        GradualMagnitudePruning(targets, 1.0, start=0, end=10, every=1)


def test_fixed_mask_sparse_finetune_keeps_exact_nnz(tmp_path):
    """SquareHead's fixed-mask fine-tune: the reference masks weights only, after each step."""
    model = toy_model()
    targets = model.block_linears()
    masks = one_shot_magnitude(targets, 0.6)
    hook = StaticSparsity(
        targets, MaskSet.from_targets(targets, masks), mask_grads=False, mask_optimizer_state=False
    )
    opt = build_adamw(model, OPTIM)
    train(TrainRun(model, opt, RandomTokens(), TrainConfig(steps=12), OPTIM, tmp_path, [hook]))
    for t, m in zip(targets, masks, strict=True):
        assert _nnz(t) == kept_count(m.numel(), 0.4), t.name
        assert (t.view()[~m] == 0).all()
    # a pruned checkpoint's masks can be recovered from its zeros
    recovered = masks_from_zeros(targets)
    assert all(torch.equal(a, b) for a, b in zip(recovered, masks, strict=True))


def test_gradual_pruning_resume_equals_uninterrupted(tmp_path):
    def run(out):
        model = toy_model(seed=3)
        hook = GradualMagnitudePruning(model.block_linears(), 0.7, start=1, end=9, every=3)
        cfg = TrainConfig(steps=10, ckpt_every=4)
        return TrainRun(model, build_adamw(model, OPTIM), RandomTokens(), cfg, OPTIM, out, [hook])

    whole = run(tmp_path / "whole")
    train(whole)
    train(run(tmp_path / "split"), stop_at=5)
    resumed = run(tmp_path / "split")
    train(resumed)
    for k, v in whole.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert resumed.hooks[0].level == whole.hooks[0].level
