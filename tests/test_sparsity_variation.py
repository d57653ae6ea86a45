"""MST sparsity variation: phase values, the whole-run FLOP ledger and its solver (mst.md §2.3)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import RandomTokens, toy_model

from sparselm.errors import ConfigError
from sparselm.flops import FlopLedger, ModelShape, train_flops_per_token
from sparselm.optim import OptimConfig, build_adamw
from sparselm.sparsity.dst import DynamicSparsity
from sparselm.sparsity.dst_schedule import DSTConfig, DSTTimeline, model_targets
from sparselm.sparsity.variation import (
    SparsityVariation,
    VariationConfig,
    ledger_conventions,
    schedule_flops,
    schedule_reduction,
    solve_for_reduction,
    step_flops,
)
from sparselm.train import TrainConfig, TrainRun, train

GPT2_MST = ModelShape(n_layer=12, d_model=768, n_head=12, d_ff=3072, seq_len=1024, vocab_size=50304)
TOY_SHAPE = ModelShape(n_layer=2, d_model=32, n_head=2, d_ff=64, seq_len=16, vocab_size=64)
STEPS = 60_000  # the reduction depends on fractions and ΔT, not on the run length


def _hsa_sparse_pairs(t: int = 1024, w: int = 128) -> int:
    """Allowed (query, key) pairs of 'sparse' = local ∪ strided causal attention (mst.md §2.4)."""
    q, k = torch.arange(t)[:, None], torch.arange(t)[None, :]
    return int(((k <= q) & (((q - k) < w) | ((q - k) % w == 0))).sum())


HSA = _hsa_sparse_pairs() / 1024**2  # over the full T×T matrix (the headline convention)
HSA_CAUSAL = _hsa_sparse_pairs() / (1024 * 1025 // 2)


# ---------------------------------------------------------------- the schedule


def test_cubic_phase_boundaries():
    cfg = VariationConfig(warmup_frac=0.1, ultra_frac=0.7, s_start=0.05, s_max=0.9, s_end=0.2)
    s = SparsityVariation(cfg, 1000)
    assert s.ultra_window() == (100, 800)
    assert s(0) == pytest.approx(0.05)
    assert s(50) == pytest.approx(0.05 + 0.85 * (1 - 0.5**3))
    assert s(99) == pytest.approx(0.05 + 0.85 * (1 - 0.01**3))
    assert s(100) == s(500) == s(799) == 0.9
    assert s(900) == pytest.approx(0.9 - 0.7 * (1 - 0.5**3))
    assert s(1000) == pytest.approx(0.2)
    phases = [s.phase_at(t) for t in (0, 99, 100, 799, 800, 999)]
    assert phases == ["warmup", "warmup", "ultra", "ultra", "restoration", "restoration"]
    assert [t for t in range(1000) if s.is_ultra(t)] == list(range(100, 800))
    values = [s(t) for t in range(1000)]
    assert all(a <= b for a, b in zip(values[:100], values[1:100], strict=False))  # rises
    assert all(a >= b for a, b in zip(values[800:], values[801:], strict=False))  # falls


def test_staircase_changes_only_on_its_grid():
    cfg = VariationConfig(
        warmup_frac=0.2, ultra_frac=0.5, s_start=0.1, s_max=0.9, s_end=0.0, ramp="staircase",
        granularity_iters=50,
    )  # fmt: skip
    s = SparsityVariation(cfg, 1000)  # warm-up [0, 200), ultra [200, 700), restoration [700, 1000)
    assert [s(t) for t in (0, 49, 50, 99, 100, 150, 199)] == pytest.approx(
        [0.1, 0.1, 0.3, 0.3, 0.5, 0.7, 0.7]
    )
    assert s(200) == s(699) == 0.9
    assert [s(t) for t in (700, 749, 750, 800, 999)] == pytest.approx(
        [0.9, 0.9, 0.9 - 0.9 / 6, 0.9 - 0.9 / 3, 0.9 - 0.9 * 250 / 300]
    )
    changes = [t for t in range(1, 1000) if s(t) != s(t - 1)]
    assert all(t % 50 == 0 for t in changes)
    # a stair coarser than the warm-up keeps s_start until the ultra phase
    coarse = SparsityVariation(dataclasses.replace(cfg, granularity_iters=1000), 1000)
    assert coarse(199) == 0.1 and coarse(200) == 0.9


def test_empty_warmup_starts_ultra():
    s = SparsityVariation(VariationConfig(warmup_frac=0.0, ultra_frac=1.0), 100)
    assert s.phase_at(0) == "ultra" and s(0) == s(99) == 0.9


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"warmup_frac": 0.5, "ultra_frac": 0.6}, "warmup_frac\\+ultra_frac"),
        ({"s_max": 1.0}, "s_max"),
        ({"s_start": -0.1}, "s_start"),
        ({"ramp": "linear"}, "ramp"),
        ({"granularity_iters": 0}, "granularity_iters"),
    ],
)
def test_bad_variation_config_names_the_key(kw, key):
    with pytest.raises(ConfigError, match=f"sparsity.variation.{key}") as err:
        VariationConfig(**kw)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- the ledger


def test_ledger_total_equals_the_sum_of_its_steps():
    cfg, dst = VariationConfig(granularity_iters=40), DSTConfig(interval=7)
    steps = 600
    schedule = SparsityVariation(cfg, steps)
    timeline = DSTTimeline(model_targets(GPT2_MST), dst, schedule, steps)
    ledger = FlopLedger()
    for t in range(steps):
        ledger.add(1, step_flops(GPT2_MST, timeline, schedule, t, ultra_attn_density=HSA)["total"])
    whole = schedule_flops(GPT2_MST, steps, cfg, dst, ultra_attn_density=HSA)
    assert whole["ours"] == pytest.approx(ledger.total, rel=1e-12)
    assert whole["dense"] == pytest.approx(steps * train_flops_per_token(GPT2_MST)["total"])


def test_training_loop_logs_the_same_flops_as_the_ledger(tmp_path):
    optim = OptimConfig(lr=1e-2, min_lr=1e-3, warmup_steps=2)
    cfg = VariationConfig(warmup_frac=0.3, ultra_frac=0.4, s_start=0.1, s_max=0.8, s_end=0.2)
    dst, steps = DSTConfig(interval=2, seed=1), 20
    model = toy_model()
    hook = DynamicSparsity.from_config(model, dst, SparsityVariation(cfg, steps), steps)
    run = TrainRun(
        model, build_adamw(model, optim), RandomTokens(), TrainConfig(steps=steps), optim,
        tmp_path, hooks=[hook],
        flops_per_token=lambda f: train_flops_per_token(TOY_SHAPE, **f)["total"],
    )  # fmt: skip
    metrics = train(run)
    per_step_tokens = metrics["tokens"] // steps
    ledger = schedule_flops(TOY_SHAPE, steps, cfg, dst)  # no sparse attention in this run
    assert metrics["flops_total"] == pytest.approx(per_step_tokens * ledger["ours"], rel=1e-12)


def test_default_schedule_reduction_matches_the_spec():
    """mst.md §2.3: ≈4.16× with HSA 'sparse' in the ultra window, ≈3.05× without,
    ≈4.9× at ultra_frac=0.8 (full T×T attention, DST overhead in, sparse lm_head)."""
    assert HSA == pytest.approx(0.1207, abs=1e-4)  # 24.1 % of causal = 12.1 % of T×T
    default = VariationConfig()
    with_hsa = schedule_flops(GPT2_MST, STEPS, default, ultra_attn_density=HSA)
    assert with_hsa["reduction"] == pytest.approx(4.16, abs=0.01)
    assert with_hsa["dst_overhead"] / with_hsa["ours"] == pytest.approx(0.0094, abs=5e-4)
    assert schedule_reduction(GPT2_MST, STEPS, default) == pytest.approx(3.05, abs=0.01)
    longer = dataclasses.replace(default, ultra_frac=0.8)
    assert schedule_reduction(GPT2_MST, STEPS, longer, ultra_attn_density=HSA) == pytest.approx(
        4.87, abs=0.01
    )


def test_ledger_conventions_are_ordered():
    by_convention = {"megatron_full_attn": HSA, "causal_half_attn": HSA_CAUSAL}
    r = ledger_conventions(GPT2_MST, 6000, VariationConfig(), ultra_attn_density=by_convention)
    assert len(r) == 8
    assert HSA_CAUSAL == pytest.approx(0.241, abs=1e-3)  # mst.md §2.4 table
    head = "megatron_full_attn/with_overhead/with_head"
    assert r[head] == pytest.approx(
        schedule_reduction(GPT2_MST, 6000, VariationConfig(), ultra_attn_density=HSA)
    )
    assert r["megatron_full_attn/without_overhead/with_head"] > r[head]
    assert r["causal_half_attn/with_overhead/with_head"] > r[head]  # less dense attention


@pytest.mark.parametrize(("knob", "expected"), [("s_max", 0.887), ("ultra_frac", 0.736)])
def test_solver_hits_four_times(knob, expected):
    cfg, achieved = solve_for_reduction(
        GPT2_MST, STEPS, 4.0, knob=knob, tol=1e-3, ultra_attn_density=HSA
    )
    assert achieved == pytest.approx(4.0, abs=1e-3)
    assert getattr(cfg, knob) == pytest.approx(expected, abs=2e-3)
    assert schedule_reduction(GPT2_MST, STEPS, cfg, ultra_attn_density=HSA) == achieved


def test_solver_out_of_reach_is_a_config_error():
    # without sparse attention even s_max = 0.999 stays under 4x (attention is dense)
    with pytest.raises(ConfigError, match="out of reach by s_max") as err:
        solve_for_reduction(GPT2_MST, 6000, 4.0)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="solve_knob"):
        solve_for_reduction(GPT2_MST, 6000, 4.0, knob="s_end")
