"""SPDF static sparsity invariants: exact counts, masks that survive AdamW, dense equivalence."""

from __future__ import annotations

import pytest
import torch
from helpers import RandomTokens, toy_model

from sparselm.errors import ConfigError
from sparselm.optim import OptimConfig, build_adamw
from sparselm.sparsity.masks import erk_densities, kept_count
from sparselm.sparsity.static import StaticSparsity, StaticSparsityConfig
from sparselm.train import TrainConfig, TrainRun, train

OPTIM = OptimConfig(lr=1e-2, min_lr=1e-3, warmup_steps=2, weight_decay=0.1)


def _sparse(model, level, **kw):
    return StaticSparsity.from_config(
        model.block_linears(), StaticSparsityConfig(level=level, **kw)
    )


@pytest.mark.parametrize("level", [0.5, 0.75, 0.9])
@pytest.mark.parametrize("init", ["random", "magnitude"])
def test_every_target_has_exact_nnz_after_init(level, init):
    model = toy_model()
    hook = _sparse(model, level, init=init, seed=3)
    hook.on_train_start(model, build_adamw(model, OPTIM))
    for t in model.block_linears():  # q, k and v each counted on their own slice
        assert int((t.view() != 0).sum()) == kept_count(t.view().numel(), 1 - level), t


def test_dense_parts_stay_dense():
    model = toy_model()
    hook = _sparse(model, 0.75, seed=1)
    hook.on_train_start(model, build_adamw(model, OPTIM))
    dense = [n for n, p in model.named_parameters() if p.dim() == 2 and n not in hook.masks.masks]
    assert dense == ["wte.weight", "wpe.weight"]  # the tied LM head is wte
    for name in dense:
        assert (model.get_parameter(name) != 0).all(), name


def test_masked_weights_and_adam_moments_stay_zero_with_weight_decay(tmp_path):
    model = toy_model()
    opt = build_adamw(model, OPTIM)
    hook = _sparse(model, 0.75, seed=2)
    run = TrainRun(model, opt, RandomTokens(), TrainConfig(steps=30), OPTIM, tmp_path, hooks=[hook])
    train(run)
    for name, mask in hook.masks.masks.items():
        p = hook.masks.params[name]
        assert (p[~mask] == 0).all(), name
        assert (p[mask] != 0).all(), name  # kept weights did move and are not accidentally 0
        for key in ("exp_avg", "exp_avg_sq"):
            assert (opt.state[p][key][~mask] == 0).all(), (name, key)


def test_re_masking_after_the_step_runs_until_the_zeros_settle_then_is_skipped(tmp_path):
    """With masked gradients, AdamW keeps settled zeros exactly (checked by the test above on
    the same 30 steps), so weights and moments are re-masked after the first step only, and
    again whenever the masks are replaced."""
    model = toy_model()
    hook = _sparse(model, 0.75, seed=2)
    calls = []
    apply = hook.masks.apply_to_weights
    hook.masks.apply_to_weights = lambda: (calls.append(1), apply())[1]
    opt = build_adamw(model, OPTIM)
    run = TrainRun(model, opt, RandomTokens(), TrainConfig(steps=5), OPTIM, tmp_path, hooks=[hook])
    train(run)
    assert len(calls) == 2  # on_train_start, then after the first optimizer step
    calls.clear()
    hook.load_state_dict(hook.state_dict())  # a restored mask set must settle again
    hook.after_optimizer_step(5)
    hook.after_optimizer_step(6)
    assert len(calls) == 2  # load_state_dict, then the first step after it
    unmasked = _sparse(toy_model(), 0.75, seed=2, mask_grads=False)
    unmasked.on_train_start(model, opt)
    n = []
    unmasked.masks.apply_to_weights = lambda: n.append(1)
    for step in range(3):  # without masked gradients every step must re-mask
        unmasked.after_optimizer_step(step)
    assert len(n) == 3


def test_without_moment_masking_adam_would_not_keep_zeros():
    """Guards the test above: gradients alone don't suffice once the mask drops elsewhere."""
    model = toy_model()
    opt = build_adamw(model, OPTIM)
    x, y = RandomTokens().train_batch(0, 0)
    from sparselm.model import lm_loss

    lm_loss(model(x).logits, y).backward()
    opt.step()
    hook = _sparse(model, 0.75, seed=2, mask_optimizer_state=False)
    hook.on_train_start(model, opt)
    p = next(iter(hook.masks.params.values()))
    mask = next(iter(hook.masks.masks.values()))
    assert (opt.state[p]["exp_avg"][~mask] != 0).any()  # stale momentum would revive weights


def test_sparsity_zero_equals_dense_bit_for_bit(tmp_path):
    def run(hooks_for):
        model = toy_model(seed=5)
        opt = build_adamw(model, OPTIM)
        out = tmp_path / str(len(list(tmp_path.iterdir())))
        r = TrainRun(
            model,
            opt,
            RandomTokens(),
            TrainConfig(steps=8, grad_accum=2),
            OPTIM,
            out,
            hooks=hooks_for(model),
        )
        metrics = train(r)
        return model.state_dict(), metrics

    dense, m_dense = run(lambda m: [])
    sparse0, m_sparse = run(lambda m: [_sparse(m, 0.0, seed=9)])
    assert m_dense["final_val_loss"] == m_sparse["final_val_loss"]
    for k in dense:
        assert torch.equal(dense[k], sparse0[k]), k


def test_erk_hits_the_global_budget_and_caps_density():
    shapes = [(96, 32), (32, 32), (64, 32), (32, 64), (4, 4)]
    dens = erk_densities(shapes, 0.8)
    kept = sum(d * a * b for d, (a, b) in zip(dens, shapes, strict=True))
    assert kept == pytest.approx(0.2 * sum(a * b for a, b in shapes))
    assert max(dens) <= 1.0 and dens[-1] == 1.0  # the small matrix is made dense


@pytest.mark.parametrize(
    "bad",
    [
        dict(level=1.5),
        dict(level=-0.1),
        dict(level=0.5, init="x"),
        dict(level=0.5, targets=("lm_head",)),
    ],
)
def test_bad_sparsity_config_names_the_key(bad):
    with pytest.raises(ConfigError, match=r"^method\."):
        StaticSparsityConfig(**bad)
