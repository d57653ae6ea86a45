"""Hybrid sparse attention (mst.md §2.4): patterns, densities, routes that equal mask SDPA,
the model taking a pattern object, and the HSA hook's window, layers, FLOPs and dense eval."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import RandomTokens, toy_model

from sparselm.attention import (
    PATTERNS,
    AttentionPattern,
    allowed_pairs,
    density,
    effective_pattern,
    keys_per_query,
    pattern_mask,
    pick_route,
)
from sparselm.attention.flex import mask_mod
from sparselm.attention.kernels import blocked_attention, mask_attention
from sparselm.errors import ConfigError
from sparselm.flops import ModelShape, forward_flops_per_token
from sparselm.methods.hsa import HSAConfig, HSAHook, flop_attn_density
from sparselm.model import lm_loss
from sparselm.optim import OptimConfig, build_adamw
from sparselm.train import TrainConfig, TrainRun, _Loop, train

SPARSE = ("local", "strided", "sparse", "fixed")
CPU = torch.device("cpu")


def _keys(pattern: str, t: int, w: int, q: int) -> set[int]:
    return set(pattern_mask(pattern, t, w)[q].nonzero().flatten().tolist())


def test_masks_follow_the_pattern_definitions():
    # T = 8, w = 3, query 7: local = last 3; strided = 7, 4, 1; fixed = own block {6, 7}
    # plus the summaries 2 and 5 (k % 3 == 2) of the earlier blocks
    assert _keys("local", 8, 3, 7) == {5, 6, 7}
    assert _keys("strided", 8, 3, 7) == {1, 4, 7}
    assert _keys("sparse", 8, 3, 7) == {1, 4, 5, 6, 7}
    assert _keys("fixed", 8, 3, 7) == {2, 5, 6, 7}
    assert _keys("fixed", 8, 3, 4) == {2, 3, 4}
    assert _keys("dense", 8, 3, 7) == set(range(8))
    for p in PATTERNS:  # every pattern is causal and keeps the query's own key
        m = pattern_mask(p, 37, 5)
        assert not m.triu(1).any() and m.diagonal().all(), p


def test_densities_reproduce_the_spec_table():
    # mst.md §2.4: T=1024, w=128, density relative to causal attention
    expected = {"local": 23.4, "strided": 0.9, "sparse": 24.1, "fixed": 13.3, "dense": 100.0}
    for p, pct in expected.items():
        assert round(100 * density(p, 1024, 128), 1) == pct, p
        full = density(p, 1024, 128, basis="full")
        assert full == pytest.approx(density(p, 1024, 128) * 1025 / 2048)
    assert allowed_pairs("local", 1024, 128) == 128 * 129 // 2 + (1024 - 128) * 128


@pytest.mark.parametrize("t, w", [(64, 16), (50, 16), (7, 16), (33, 1), (12, 12)])
def test_closed_form_counts_equal_mask_counts(t, w):
    for p in PATTERNS:
        assert pattern_mask(p, t, w).sum(1).tolist() == keys_per_query(p, t, w), p


@pytest.mark.parametrize("t, w", [(64, 16), (50, 16), (10, 16), (24, 1)])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_blocked_route_equals_mask_sdpa_forward_and_backward(pattern, t, w):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, t, 8, requires_grad=True) for _ in range(3))
    mask = pattern_mask(pattern, t, w)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    grad = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad)
    outputs = (
        blocked_attention(q, k, v, pattern, w),
        mask_attention(q, k, v, pattern, w),
        AttentionPattern(pattern, w, "blocked")(q, k, v),
    )
    for out in outputs:
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        for g, g_ref in zip(torch.autograd.grad(out, (q, k, v), grad), ref_grads, strict=True):
            torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=1e-5)


def test_flex_mask_mods_state_the_same_patterns():
    t, w = 40, 6
    q_idx = torch.arange(t).view(t, 1)
    kv_idx = torch.arange(t).view(1, t)
    for p in PATTERNS:
        assert torch.equal(mask_mod(p, w)(0, 0, q_idx, kv_idx), pattern_mask(p, t, w)), p


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention route needs CUDA")
@pytest.mark.parametrize("pattern", PATTERNS)
def test_flex_route_equals_mask_sdpa_on_cuda(pattern):
    torch.manual_seed(0)
    t, w = 256, 32
    q, k, v = (torch.randn(2, 4, t, 64, device="cuda", requires_grad=True) for _ in range(3))
    attn = AttentionPattern(pattern, w, "flex")
    out = attn(q, k, v)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=attn.mask(t, "cuda"))
    grad = torch.randn_like(ref)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    for g, g_ref in zip(
        torch.autograd.grad(out, (q, k, v), grad),
        torch.autograd.grad(ref, (q, k, v), grad),
        strict=True,
    ):
        torch.testing.assert_close(g, g_ref, atol=1e-4, rtol=1e-4)


def test_route_choice():
    def route(pattern, t, device=CPU, **kw):
        return pick_route(pattern, kw.pop("route", "auto"), torch.device(device), t, 128, **kw)

    assert [route(p, 1024) for p in SPARSE] == ["blocked"] * 4
    assert [route(p, 256) for p in SPARSE] == ["mask", "blocked", "mask", "blocked"]
    assert route("dense", 1024) == "mask"
    assert route("sparse", 1024, "cuda") == "flex"
    assert route("sparse", 1024, "mps") == "mask"  # not measured
    assert route("sparse", 1024, route="blocked", dropout_p=0.1) == "mask"  # only mask drops out
    with pytest.raises(ConfigError, match="hsa.route='flex' needs a CUDA device"):
        route("sparse", 1024, route="flex")
    with pytest.raises(ConfigError, match="hsa.route='triton' is unknown"):
        AttentionPattern("sparse", 4, "triton")
    with pytest.raises(ConfigError, match="hsa.pattern='bigbird' is unknown"):
        AttentionPattern("bigbird")
    with pytest.raises(ConfigError, match="hsa.stride=0"):
        AttentionPattern("local", 0)


def test_a_pattern_that_keeps_every_causal_pair_runs_as_causal_attention():
    assert [effective_pattern(p, 128, 128) for p in PATTERNS] == [
        "dense",
        "dense",
        "strided",
        "dense",
        "dense",
    ]
    assert effective_pattern("strided", 50, 1) == "dense"
    assert effective_pattern("local", 129, 128) == "local"
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 16, 8) for _ in range(3))
    causal = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(AttentionPattern("sparse", 16, "mask")(q, k, v), causal)


def test_model_with_a_pattern_object_equals_the_boolean_mask_forward_and_backward():
    x = torch.randint(0, 64, (2, 16))
    for attn in (AttentionPattern("sparse", 4, "blocked"), [AttentionPattern("fixed", 4), None]):
        runs = []
        for use_object in (True, False):
            model = toy_model(seed=3)
            if use_object:
                mask = attn
            elif isinstance(attn, list):
                mask = [attn[0].mask(16), None]
            else:
                mask = attn.mask(16)
            out = model(x, attn_mask=mask).logits
            out.square().mean().backward()
            runs.append((out, [p.grad for p in model.parameters()]))
        (out_a, grads_a), (out_b, grads_b) = runs
        torch.testing.assert_close(out_a, out_b, atol=1e-5, rtol=1e-5)
        for ga, gb in zip(grads_a, grads_b, strict=True):
            torch.testing.assert_close(ga, gb, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(out_a, toy_model(seed=3)(x).logits)  # the pattern mattered


def test_with_attention_dropout_the_pattern_object_drops_out_like_the_mask():
    x = torch.randint(0, 64, (2, 16))
    model = toy_model(seed=1, dropout=0.3).train()
    attn = AttentionPattern("local", 4)
    torch.manual_seed(7)
    a = model(x, attn_mask=attn).logits
    torch.manual_seed(7)
    b = model(x, attn_mask=attn.mask(16)).logits
    assert torch.equal(a, b)


def test_window_from_fractions_steps_or_a_callable():
    hook = HSAHook(HSAConfig(stride=4, start_frac=0.2, end_frac=0.6), 2, 10)
    on = [s for s in range(12) if hook.forward_kwargs(s)]
    assert on == [2, 3, 4, 5]
    assert hook.forward_kwargs(3)["attn_mask"] == AttentionPattern("sparse", 4)
    explicit = HSAHook(HSAConfig(stride=4, start_step=1, end_step=3), 2, 10)
    assert [s for s in range(12) if explicit.forward_kwargs(s)] == [1, 2]
    only_start = HSAHook(HSAConfig(stride=4, start_step=7, end_frac=0.9), 2, 10)
    assert only_start.window == (7, 9)
    odd = HSAHook(HSAConfig(stride=4), 2, 10, active=lambda step: step % 2 == 1)
    assert [s for s in range(6) if odd.forward_kwargs(s)] == [1, 3, 5]
    with pytest.raises(ConfigError, match="end step 2 is before start step 5"):
        HSAHook(HSAConfig(start_step=5, end_step=2), 2, 10)


def test_layer_pattern_tiles_over_depth_and_dense_layers_get_no_pattern():
    cfg = HSAConfig(stride=4, start_frac=0.0, end_frac=1.0, layer_pattern=("sparse", "dense"))
    specs = HSAHook(cfg, 4, 10).forward_kwargs(0)["attn_mask"]
    assert specs == [AttentionPattern("sparse", 4), None] * 2
    # the model fed the hook's kwargs equals the model fed the boolean masks
    model, x = toy_model(seed=2).eval(), torch.randint(0, 64, (2, 16))
    hook = HSAHook(cfg, 2, 10)
    masks = [pattern_mask("sparse", 16, 4), None]
    torch.testing.assert_close(
        model(x, **hook.forward_kwargs(0)).logits, model(x, attn_mask=masks).logits
    )
    all_dense = HSAHook(HSAConfig(pattern="dense", start_frac=0.0), 2, 10)
    assert all_dense.forward_kwargs(5) == {}
    with pytest.raises(ConfigError, match="hsa.layer_pattern has 3 entries"):
        HSAHook(HSAConfig(layer_pattern=("sparse", "dense", "local")), 4, 10)
    with pytest.raises(ConfigError, match="hsa.layer_pattern='wide' is unknown"):
        HSAConfig(layer_pattern=("sparse", "wide"))


def test_flop_factors_follow_the_flops_convention():
    cfg = HSAConfig(seq_len=1024, start_step=0, end_step=5)
    hook = HSAHook(cfg, 12, 10)
    full = density("sparse", 1024, 128, basis="full")
    assert hook.flop_factors(0) == {"attn_density": pytest.approx(full)}
    assert hook.flop_factors(5) == {}  # outside the window: dense, the default
    half = HSAHook(HSAConfig(seq_len=1024, flops_convention="causal_half_attn"), 12, 10)
    assert half.flop_factors(5)["attn_density"] == pytest.approx(density("sparse", 1024, 128))
    mixed = HSAHook(HSAConfig(seq_len=1024, layer_pattern=("sparse", "dense")), 12, 10)
    assert mixed.flop_factors(5)["attn_density"] == pytest.approx((full + 1.0) / 2)
    # under the full-T×T convention the attention term shrinks to the pattern's T² share
    shape = ModelShape(12, 768, 12, 3072, 1024, 50304)
    dense = forward_flops_per_token(shape)["attention"]
    assert forward_flops_per_token(shape, **hook.flop_factors(0))["attention"] == pytest.approx(
        dense * allowed_pairs("sparse", 1024, 128) / 1024**2
    )
    assert flop_attn_density("dense", 1024, 128, "megatron_full_attn") == 1.0


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="hsa.eval_dense=false"):
        HSAConfig(eval_dense=False)
    with pytest.raises(ConfigError, match="hsa.end_frac=1.5"):
        HSAConfig(end_frac=1.5)
    with pytest.raises(ConfigError, match="hsa.start_step=-1"):
        HSAConfig(start_step=-1)
    with pytest.raises(ConfigError, match="hsa.flops_convention='flat'"):
        HSAConfig(flops_convention="flat")
    with pytest.raises(ConfigError, match="hsa.seq_len=null"):
        HSAHook(HSAConfig(), 2, 10).attn_density()


def _run(tmp_path, hooks, steps=3):
    model = toy_model(seed=4)
    optim = OptimConfig(lr=1e-2, min_lr=1e-3, warmup_steps=0)
    run = TrainRun(
        model,
        build_adamw(model, optim),
        RandomTokens(),
        TrainConfig(steps=steps, eval_batches=2),
        optim,
        tmp_path,
        hooks=hooks,
        flops_per_token=lambda f: f.get("attn_density", 1.0),
    )
    return run


def test_training_uses_the_pattern_but_validation_is_dense(tmp_path):
    cfg = HSAConfig(pattern="local", stride=4, start_frac=0.0, end_frac=1.0)
    sparse_run = _run(tmp_path / "hsa", [HSAHook(cfg, 2, 3)])
    dense_run = _run(tmp_path / "dense", [])
    sparse, dense = train(sparse_run), train(dense_run)
    assert sparse["final_train_loss"] != dense["final_train_loss"]  # training saw the pattern
    # the loop validates the trained model without forward kwargs: dense attention
    model = sparse_run.model.eval()
    with torch.no_grad():
        batches = sparse_run.batches.val_batches(2)
        by_hand = sum(float(lm_loss(model(x).logits, y)) for x, y in batches) / 2
    assert sparse["final_val_loss"] == pytest.approx(by_hand, abs=1e-6)
    # the ledger charged the pattern's T² share per token (T = the toy block size, 16)
    per_token = density("local", 16, 4, basis="full")
    assert sparse["flops_total"] == pytest.approx(3 * 4 * 16 * per_token)
    assert HSAHook(cfg, 2, 3).state_dict() == {}  # a function of the step: nothing to resume


def test_loop_logs_window_state(tmp_path):
    hook = HSAHook(HSAConfig(pattern="fixed", stride=4, start_step=1, end_step=2), 2, 3)
    loop = _Loop(_run(tmp_path, [hook]))
    loop.start(resume=False)
    records = [loop.step() for _ in range(3)]
    assert [hook.log_fields(r["step"] - 1)["hsa_on"] for r in records] == [False, True, False]
    assert hook.log_fields(1)["attn_density"] == pytest.approx(density("fixed", 16, 4, "full"))
