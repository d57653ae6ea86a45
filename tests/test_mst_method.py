"""MST as a method of the loop (mst.md): config -> hooks, the FLOP budget, the ledger, resume."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from helpers import RandomTokens, toy_model
from omegaconf import OmegaConf

from sparselm.cli.builders import flop_summary, flops_function, model_shape
from sparselm.cli.common import compose_config
from sparselm.cli.method_registry import method_hooks
from sparselm.cli.mst_config import mst_config
from sparselm.errors import ConfigError
from sparselm.flops import ModelShape
from sparselm.methods.hsa import HSAConfig, HSAHook
from sparselm.methods.mst import MSTConfig, MSTPlan, MSTSchedule, build_hooks, main, solve
from sparselm.model import lm_loss
from sparselm.optim import OptimConfig, build_adamw
from sparselm.sparsity.dst import DynamicSparsity
from sparselm.sparsity.dst_schedule import DSTConfig
from sparselm.sparsity.variation import schedule_flops
from sparselm.train import TrainConfig, TrainRun, train

OPTIM = OptimConfig(lr=1e-2, min_lr=1e-3, warmup_steps=2, weight_decay=0.1)
STEPS = 20
TOY = dict(n_layer=2, d_model=32, n_head=2, d_ff=64, vocab_size=64)
# the toy run: ΔT=2, w=T/4, every phase of 20 steps, solved to 2× fewer FLOPs than dense
TOY_OVERRIDES = (
    "method.sparsity.dst.interval=2",
    "method.hsa.stride=4",
    "method.target_reduction=2.0",
    "method.sparsity.variation.warmup_frac=0.2",
    "method.sparsity.variation.ultra_frac=0.6",
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Toy matrices: a second thread only contends (10 steps took 5x longer with two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _method_cfg(*overrides: str, method: str = "mst", seq_len: int = 16):
    """The node ``method_hooks`` reads, composed from conf/ exactly as a job composes it."""
    cfg, _ = compose_config("pretrain", ["scale=smoke", f"method={method}", *overrides])
    return OmegaConf.create(
        {"method": cfg.method, "train": {"seq_len": seq_len}, "flops": cfg.flops}
    )


def _toy_hooks(*overrides: str, method: str = "mst", steps: int = STEPS, **model_kw):
    model = toy_model(seed=1, **model_kw)
    return model, method_hooks(_method_cfg(*TOY_OVERRIDES, *overrides, method=method), model, steps)


# ---------------------------------------------------------------- config -> hooks


def test_method_yaml_defaults_are_the_config_defaults():
    cfg, _ = compose_config("pretrain", ["scale=smoke", "method=mst"])
    parsed = mst_config(cfg.method)
    default = MSTConfig()
    assert parsed == dataclasses.replace(
        default, dst=dataclasses.replace(default.dst, seed=cfg.seed)
    )


@pytest.mark.parametrize(
    ("method", "kinds", "schedule", "mix", "end_frac"),
    [
        ("mst", [DynamicSparsity, HSAHook, MSTSchedule], "variation", 3.0, 1.0),
        ("rigl", [DynamicSparsity, MSTSchedule], "constant", None, 0.75),
        ("set", [DynamicSparsity, MSTSchedule], "constant", None, 0.75),
        ("static_sparse", [DynamicSparsity, MSTSchedule], "constant", None, 0.0),
    ],
)
def test_registry_builds_each_dst_method(method, kinds, schedule, mix, end_frac):
    model, hooks = _toy_hooks(method=method)
    assert [type(h) for h in hooks] == kinds
    plan = hooks[-1].plan
    assert plan.cfg.schedule == schedule and plan.cfg.dst.grow_mix_ratio == mix
    assert plan.cfg.dst.end_frac == end_frac
    assert plan.ledger()["reduction"] == pytest.approx(2.0, abs=2e-3)  # every one solved
    assert plan.ledger()["reduction"] >= 2.0
    if method == "set":
        assert plan.cfg.dst.grow == "random"
    if method == "static_sparse":
        assert not any(plan.timeline.is_update_step(t) for t in range(STEPS))


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["method.sparsity.dst.interval=0"], "method.sparsity.dst.interval"),
        (["method.sparsity.schedule=rising"], "method.sparsity.schedule"),
        (["method.sparsity.variation.ramp=linear"], "method.sparsity.variation.ramp"),
        (["method.hsa.pattern=diagonal"], "method.hsa.pattern"),
        (["method.hsa.window=always"], "method.hsa.window"),
        (["method.solve_knob=level"], "method.solve_knob"),
        (["+method.sparsity.dst.rate=1"], "method.sparsity.dst.rate"),
        (["method.sparsity.level=yes"], "method.sparsity.level"),
        (["method.target_reduction=40.0"], "method.target_reduction=40.0 is out of reach"),
        (["method.hsa.flop_basis=half"], "method.hsa.flop_basis"),
    ],
)
def test_bad_method_config_is_a_one_line_error_naming_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        _toy_hooks(*overrides)
    assert str(err.value).startswith(key) and "\n" not in str(err.value)


# ---------------------------------------------------------------- the plan and the budget


def test_plan_reports_what_the_hooks_report_at_every_step():
    model, hooks = _toy_hooks()
    plan = hooks[-1].plan
    for step in range(STEPS):
        factors = {}
        for hook in hooks:
            factors.update(hook.flop_factors(step))
        assert factors == plan.flop_factors(step), step
        assert ("attn_density" in factors) == plan.variation.is_ultra(step)


def test_plan_ledger_equals_the_variation_ledger_of_the_spec():
    shape = ModelShape(n_layer=12, d_model=768, n_head=12, d_ff=3072, seq_len=1024,
                       vocab_size=50304)  # fmt: skip
    cfg = MSTConfig(target_reduction=None)
    plan = MSTPlan(cfg, shape, 6000)
    ref = schedule_flops(shape, 6000, cfg.variation, cfg.dst, ultra_attn_density=plan.attn_density)
    assert plan.ledger() == pytest.approx(ref, rel=1e-12)
    assert plan.ledger()["reduction"] > 4.0  # s_max = 0.9 as written: 4.16× (mst.md §2.3)


def test_equal_flops_levels_of_the_baselines():
    """Static, RigL and constant-sparsity MST solve their level to MST's budget."""
    shape = ModelShape(n_layer=4, d_model=128, n_head=4, d_ff=512, seq_len=128, vocab_size=4096)
    base = MSTConfig(dst=DSTConfig(interval=10, grow_mix_ratio=3.0), hsa=HSAConfig(stride=16))
    static = dataclasses.replace(
        base, schedule="constant", hsa=None,
        dst=DSTConfig(interval=10, drop_fraction=0.0, end_frac=0.0),
    )  # fmt: skip
    solved = {}
    for name, cfg in (("mst", base), ("nosv", dataclasses.replace(base, schedule="constant")),
                      ("static", static)):  # fmt: skip
        cfg, reduction = solve(cfg, shape, 250)
        assert 4.0 <= reduction <= 4.001, name
        solved[name] = cfg.knob_value()
    assert solved["mst"] > solved["static"] > solved["nosv"]  # HSA buys the constant run less


def test_ledger_cli_reports_at_least_four_times_under_the_headline_convention(capsys):
    assert main(["model=gpt2_small", "seq_len=1024", "vocab_size=50304", "steps=6000"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["headline_convention"] == "megatron_full_attn/with_overhead/with_head"
    assert report["reduction"] >= 4.0
    assert report["reductions"]["megatron_full_attn/with_overhead/with_head"] == pytest.approx(
        report["reduction"]
    )
    assert report["solved"]["knob"] == "s_max" and report["solved"]["value"] < 0.9
    assert 4.0 <= report["solved"]["reduction"] <= 4.001
    # both attention bases, and which one the 4x target uses (mst.md §4 as written)
    bases = report["attention_bases"]
    assert bases["target_basis"] == "full_t2"
    assert bases["full_t2"] == pytest.approx(report["reduction"])
    assert bases["causal_pairs"] < 4.0 < bases["full_t2"]  # 600k steps: 3.96x vs 4.16x
    assert "flop_basis=full" in bases["note"]


def test_attention_basis_counts_a_pattern_over_t2_or_over_the_causal_pairs():
    """hsa.flop_basis=full counts the dense term over T² but a pattern over its causal pairs
    (mst.md §4 as written); =causal counts the pattern's share of the dense causal attention."""
    from sparselm.attention.patterns import allowed_pairs

    shape = ModelShape(n_layer=12, d_model=768, n_head=12, d_ff=3072, seq_len=1024,
                       vocab_size=50304)  # fmt: skip
    full_cfg = MSTConfig(target_reduction=None)
    causal_cfg = dataclasses.replace(
        full_cfg, hsa=dataclasses.replace(full_cfg.hsa, flop_basis="causal")
    )
    pairs = allowed_pairs("sparse", 1024, 128)
    full, causal = MSTPlan(full_cfg, shape, 6000), MSTPlan(causal_cfg, shape, 6000)
    assert full.attn_density == pytest.approx(pairs / 1024**2, rel=1e-12)
    assert causal.attn_density == pytest.approx(pairs / (1024 * 1025 / 2), rel=1e-12)
    assert full.basis_reductions() == pytest.approx(
        {"full_t2": full.ledger()["reduction"], "causal_pairs": causal.ledger()["reduction"]}
    )
    assert causal.ledger()["reduction"] < full.ledger()["reduction"]
    # causal_half_attn counts the causal half for dense and pattern alike: the basis is moot
    half = [MSTPlan(c, shape, 6000, "causal_half_attn") for c in (full_cfg, causal_cfg)]
    assert half[0].attn_density == half[1].attn_density == causal.attn_density
    # the same 4x budget needs more sparsity when a pattern is counted on the causal basis
    small = ModelShape(n_layer=4, d_model=128, n_head=4, d_ff=512, seq_len=128, vocab_size=4096)
    base = MSTConfig(dst=DSTConfig(interval=10, grow_mix_ratio=3.0), hsa=HSAConfig(stride=16))
    on_causal = dataclasses.replace(base, hsa=HSAConfig(stride=16, flop_basis="causal"))
    assert solve(on_causal, small, 250)[0].knob_value() > solve(base, small, 250)[0].knob_value()


def test_ledger_cli_bad_argument_is_one_line(capsys):
    assert main(["model=gpt2_small", "steps=-3"]) == 2
    assert capsys.readouterr().err.strip() == "error: steps='-3' must be a positive integer"


# ---------------------------------------------------------------- through the loop


def _run(out, *overrides: str, dropout: float = 0.1) -> TrainRun:
    model, hooks = _toy_hooks(*overrides, dropout=dropout)
    cfg = TrainConfig(steps=STEPS, log_every=1, eval_every=5, ckpt_every=5)
    flops = flops_function(model_shape(model.config, 16), "megatron_full_attn")
    return TrainRun(
        model, build_adamw(model, OPTIM), RandomTokens(), cfg, OPTIM, out, hooks=hooks,
        flops_per_token=flops,
    )  # fmt: skip


def _log(out) -> list[dict]:
    drop = ("step_time_s", "tokens_per_s")
    rows = (json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines())
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def test_ledger_total_is_the_sum_of_the_logged_steps(tmp_path):
    run = _run(tmp_path)
    metrics = train(run)
    log, plan = _log(tmp_path), run.hooks[-1].plan
    cum = [0.0] + [r["flops_cum"] for r in log]
    per_step = [b - a for a, b in zip(cum[:-1], cum[1:], strict=True)]
    tokens = 4 * 16  # batch x seq
    expected = [tokens * run.flops_per_token(plan.flop_factors(t)) for t in range(STEPS)]
    assert per_step == pytest.approx(expected, rel=1e-12)
    assert metrics["flops_total"] == pytest.approx(sum(expected), rel=1e-12)
    summary = flop_summary(run.model.config, 16, "megatron_full_attn", run.hooks, STEPS)
    assert summary["flops_reduction"] == pytest.approx(plan.ledger()["reduction"], rel=1e-12)
    updates = [r["step"] - 1 for r in log if r["dst_update"]]
    assert updates == [t for t in range(STEPS) if plan.timeline.is_update_step(t)]
    assert {r["mst_phase"] for r in log} == {"warmup", "ultra", "restoration"}
    # after the last update every target holds exactly the planned count
    dst = run.hooks[0]
    counts = plan.timeline.counts_at(updates[-1])
    for t, want in zip(dst.targets, counts, strict=True):
        assert int(dst.masks.masks[t.name][t.rows].sum()) == want, t.name
        assert int((t.view() != 0).sum()) <= want


def test_validation_uses_dense_attention(tmp_path):
    run = _run(tmp_path, dropout=0.0)
    run.cfg = dataclasses.replace(run.cfg, steps=10)  # ends inside the HSA window
    metrics = train(run)
    assert run.hooks[1].is_on(9)
    model = run.model.eval()
    with torch.no_grad():
        losses = [float(lm_loss(model(x).logits, y)) for x, y in RandomTokens().val_batches(4)]
    assert metrics["final_val_loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-6)
    x, y = RandomTokens().val_batches(1)[0]
    sparse = run.hooks[1].forward_kwargs(9)
    with torch.no_grad():
        assert not math.isclose(float(lm_loss(model(x, **sparse).logits, y)), losses[0])


def test_resume_of_a_full_mst_run_equals_uninterrupted(tmp_path):
    """Masks, schedules, DST state, dropout RNG: stop inside the HSA window, then continue."""
    whole = _run(tmp_path / "whole")
    train(whole)
    train(_run(tmp_path / "split"), stop_at=7)
    resumed = _run(tmp_path / "split")
    train(resumed)
    for k, v in whole.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    for n, m in whole.hooks[0].masks.masks.items():
        assert torch.equal(m, resumed.hooks[0].masks.masks[n]), n
    opt_a, opt_b = whole.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    for i, state in opt_a.items():
        for key, value in state.items():
            assert torch.equal(value, opt_b[i][key]), (i, key)
    assert _log(tmp_path / "whole") == _log(tmp_path / "split")


def test_build_hooks_without_a_budget_runs_the_knobs_as_written():
    cfg = MSTConfig(target_reduction=None, dst=DSTConfig(interval=2), hsa=None)
    plan, hooks = build_hooks(cfg, toy_model(), STEPS, seq_len=16)
    assert plan.cfg == cfg and [type(h) for h in hooks] == [DynamicSparsity, MSTSchedule]


def test_a_stride_relative_to_the_context_is_the_same_run_as_written_out():
    """hsa.stride_frac × T gives the same plan and hooks as the absolute stride it stands for
    (T=16 here: 0.25 × 16 = 4, the toy run's stride)."""
    _, written = _toy_hooks()
    _, relative = _toy_hooks("method.hsa.stride=128", "method.hsa.stride_frac=0.25")
    plan_w, plan_r = written[-1].plan, relative[-1].plan
    assert plan_r.cfg.hsa.stride == 4 and plan_r.cfg.hsa.stride_frac is None
    assert plan_r.cfg == plan_w.cfg
    assert [h.flop_factors(t) for h in relative for t in range(STEPS)] == [
        h.flop_factors(t) for h in written for t in range(STEPS)
    ]
