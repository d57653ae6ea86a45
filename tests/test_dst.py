"""Dynamic sparse training (RigL, SET, mixed growing) invariants on a toy GPT (mst.md §2.1-2.2)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import RandomTokens, toy_model

from sparselm.errors import ConfigError
from sparselm.flops import ModelShape, train_flops_per_token
from sparselm.hooks import TrainHook
from sparselm.model import lm_loss
from sparselm.optim import OptimConfig, build_adamw
from sparselm.sparsity.dst import DynamicSparsity, dst_targets, next_mask, target_shape
from sparselm.sparsity.dst_schedule import (
    DSTConfig,
    grow_split,
    model_targets,
    swap_counts,
    target_counts,
)
from sparselm.train import TrainConfig, TrainRun, train

OPTIM = OptimConfig(lr=1e-2, min_lr=1e-3, warmup_steps=2, weight_decay=0.1)
GPT2_MST = ModelShape(n_layer=12, d_model=768, n_head=12, d_ff=3072, seq_len=1024, vocab_size=50304)
TOY_SHAPE = ModelShape(n_layer=2, d_model=32, n_head=2, d_ff=64, seq_len=16, vocab_size=64)


def _up_down(step: int) -> float:
    """Net prune (0.3 -> 0.8), then net grow (-> 0.5): every kind of update in 14 steps."""
    return 0.3 if step < 4 else 0.8 if step < 8 else 0.5


def _hook(model, steps=14, target=_up_down, **kw) -> DynamicSparsity:
    cfg = DSTConfig(**({"interval": 2, "drop_fraction": 0.3, "seed": 3} | kw))
    return DynamicSparsity.from_config(model, cfg, target, steps)


def _backward(model, step=0):
    x, y = RandomTokens().train_batch(step, 0)
    lm_loss(model(x).logits, y).backward()


def _masks_of(hook):
    return {n: m.clone() for n, m in hook.masks.masks.items()}


# ---------------------------------------------------------------- allocation


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        (0.50, {"q": 0.460, "attn_out": 0.190, "mlp_in": 0.493, "mlp_out": 0.493, "head": 0.589}),
        (0.75, {"q": 0.730, "attn_out": 0.595, "mlp_in": 0.747, "mlp_out": 0.747, "head": 0.794}),
        (0.90, {"q": 0.892, "attn_out": 0.838, "mlp_in": 0.899, "mlp_out": 0.899, "head": 0.918}),
    ],
)
def test_er_reproduces_the_reference_table(s, expected):
    targets = model_targets(GPT2_MST)
    counts = target_counts(targets, s, "er")
    for kind, sparsity in expected.items():
        i = next(i for i, t in enumerate(targets) if t.kind == kind)
        assert 1 - counts[i] / targets[i].numel == pytest.approx(sparsity, abs=1e-3), kind
    total = sum(t.numel for t in targets)
    assert sum(counts) / total == pytest.approx(1 - s, abs=1e-4)


def test_er_includes_the_tied_head_only_when_asked():
    model = toy_model()
    with_head = dst_targets(model, sparsify_lm_head=True)
    assert with_head[-1].kind == "head" and with_head[-1].weight is model.lm_head.weight
    assert with_head[-1].shape == (64, 32)  # (vocab, d_model)
    assert [t.kind for t in dst_targets(model, False)] == [t.kind for t in with_head[:-1]]
    # the model-free twin used by the FLOP ledger describes exactly these targets
    assert model_targets(TOY_SHAPE) == [target_shape(t) for t in with_head]
    counts = target_counts(model_targets(TOY_SHAPE), 0.7, "er")
    assert 0 < counts[-1] < 64 * 32
    hook = _hook(model, target=0.7)
    assert int(hook.masks.masks["wte.weight"].sum()) == counts[-1]


def test_zero_target_is_fully_dense_for_every_distribution():
    targets = model_targets(TOY_SHAPE)
    for dist in ("er", "erk", "uniform"):
        assert target_counts(targets, 0.0, dist) == tuple(t.numel for t in targets)


# ---------------------------------------------------------------- exact counts


class _CountChecker(TrainHook):
    """Runs after the DST hook: after every update, counts equal targets and holes are zero."""

    name = "count_checker"

    def __init__(self, dst: DynamicSparsity) -> None:
        self.dst, self.seen = dst, []

    def after_optimizer_step(self, step: int) -> None:
        if not self.dst.timeline.is_update_step(step):
            return
        counts = self.dst.timeline.counts_at(step)
        for t, want in zip(self.dst.targets, counts, strict=True):
            mask = self.dst.masks.masks[t.name][t.rows]
            assert int(mask.sum()) == want, (step, t.name, t.kind)
            assert (t.view()[~mask] == 0).all(), (step, t.name, t.kind)
        self.seen.append(sum(counts))


@pytest.mark.parametrize(
    "kw",
    [
        {"grow": "gradient"},
        {"grow": "random"},
        {"grow": "gradient", "grow_mix_ratio": 3.0},
        {"grow": "gradient", "skip_opt_step_on_update": False, "distribution": "erk"},
        {"grow": "random", "distribution": "uniform", "sparsify_lm_head": False},
    ],
)
def test_every_update_hits_exact_counts_through_net_prune_and_net_grow(tmp_path, kw):
    model = toy_model()
    dst = _hook(model, **kw)
    checker = _CountChecker(dst)
    cfg = TrainConfig(steps=14, grad_accum=1)
    train(TrainRun(model, build_adamw(model, OPTIM), RandomTokens(), cfg, OPTIM, tmp_path,
                   hooks=[dst, checker]))  # fmt: skip
    assert len(checker.seen) == 6  # steps 2, 4, ..., 12
    assert checker.seen[1] < checker.seen[0] and checker.seen[3] > checker.seen[2]
    for name, mask in dst.masks.masks.items():  # and still so at the end
        assert (dst.masks.params[name][~mask] == 0).all(), name


def test_swap_and_grow_counts():
    assert swap_counts(100, 100, 0.3) == (30, 30)  # constant target: a pure swap
    assert swap_counts(100, 60, 0.3) == (40, 0)  # net prune beyond ζ: nothing grows
    assert swap_counts(100, 80, 0.3) == (30, 10)
    assert swap_counts(100, 150, 0.3) == (30, 80)  # net grow on top of the swap
    assert grow_split(10, "gradient", None) == (10, 0)
    assert grow_split(10, "gradient", 3.0) == (7, 3)  # int(10·3/4) by gradient
    assert grow_split(10, "random", None) == (0, 10)


# ---------------------------------------------------------------- prune and grow


def test_rigl_grows_where_the_dense_gradient_is_largest_and_regrown_start_at_zero():
    model = toy_model()
    hook = _hook(model, target=0.6, skip_opt_step_on_update=False)
    hook.on_train_start(model, build_adamw(model, OPTIM))
    _backward(model)
    before = {t.name: t.weight.detach().clone() for t in hook.targets}
    grads = {t.name: t.weight.grad.clone() for t in hook.targets}
    old = _masks_of(hook)
    assert any((g[~old[n]] != 0).any() for n, g in grads.items())  # masked entries have grads

    hook.after_backward(2)  # an update step
    zeta = hook.timeline.drop_fraction(2)
    for t in hook.targets:
        m_old = old[t.name][t.rows].flatten()
        m_new = hook.masks.masks[t.name][t.rows].flatten()
        w, g = before[t.name][t.rows].flatten(), grads[t.name][t.rows].flatten()
        n_prune, n_grow = swap_counts(int(m_old.sum()), int(m_old.sum()), zeta)
        keep = torch.zeros_like(m_old)
        active = m_old.nonzero().flatten()
        keep[active[w[active].abs().argsort(descending=True)[: len(active) - n_prune]]] = True
        rest = (~keep).nonzero().flatten()
        grown = torch.zeros_like(m_old)
        grown[rest[g[rest].abs().argsort(descending=True)[:n_grow]]] = True
        assert torch.equal(m_new, keep | grown), t.name
        now = t.view().detach().flatten()
        assert (now[m_new & ~m_old] == 0).all()  # newly grown: exactly zero
        assert torch.equal(now[m_new & m_old], w[m_new & m_old])  # survivors keep values
        assert (now[~m_new] == 0).all()
        grad_now = t.weight.grad[t.rows].flatten()
        assert (grad_now[~m_new] == 0).all()  # grads masked after the capture


def test_mixed_growing_takes_three_quarters_by_gradient_and_the_rest_at_random():
    n = 40
    weight = torch.arange(1.0, n + 1)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[:20] = True
    grad = torch.zeros(n)
    grad[20:] = torch.arange(20.0, 0.0, -1.0)  # positions 20, 21, ... have the largest |grad|
    n_prune, n_grow = swap_counts(20, 20, 0.4)
    n_grad, n_rand = grow_split(n_grow, "gradient", 3.0)
    assert (n_grad, n_rand) == (6, 2)
    picks = []
    for seed in range(6):
        rand = torch.rand(n, generator=torch.Generator().manual_seed(seed))
        new = next_mask(weight, mask, n_prune, n_grad, n_rand, grad, rand)
        assert new[8:20].all()  # the 12 largest |w| survive
        assert new[20:26].all()  # the 6 largest |grad| are grown
        # 2 more anywhere else, just-pruned positions included (the reference's rule)
        extra = set(torch.arange(n)[new].tolist()) - set(range(8, 26))
        assert len(extra) == 2 and int(new.sum()) == 20
        picks.append(frozenset(extra))
    assert len(set(picks)) > 1  # the random part really is random
    # mixed growing off: every grown position comes from the gradient
    pure = next_mask(weight, mask, n_prune, n_grow, 0, grad, None)
    assert torch.equal(torch.arange(n)[pure & ~mask], torch.arange(20, 28))


def test_hook_mixed_growing_is_seeded_by_seed_and_step():
    def grown(seed, step):
        model = toy_model()
        hook = _hook(model, target=0.6, grow_mix_ratio=1.0, seed=seed)
        hook.on_train_start(model, build_adamw(model, OPTIM))
        _backward(model)
        old = _masks_of(hook)
        hook.update(step)
        return {n: m & ~old[n] for n, m in hook.masks.masks.items()}

    a, b = grown(1, 2), grown(1, 2)
    assert all(torch.equal(a[n], b[n]) for n in a)
    c = grown(2, 2)
    assert any(not torch.equal(a[n], c[n]) for n in a)


def test_drop_fraction_is_cosine_to_zero_at_end_frac():
    hook = _hook(toy_model(), steps=1000, target=0.5, interval=10, end_frac=0.8)
    tl = hook.timeline
    assert tl.drop_fraction(0) == pytest.approx(0.3)
    assert tl.drop_fraction(400) == pytest.approx(0.15)  # halfway to t_end = 800
    assert tl.drop_fraction(200) == pytest.approx(0.15 * (1 + 2**-0.5))
    assert tl.drop_fraction(799) == pytest.approx(0.0, abs=1e-5)
    assert tl.drop_fraction(800) == 0.0 and tl.drop_fraction(950) == 0.0
    assert tl.is_update_step(790) and not tl.is_update_step(800)  # constant target: stop
    flat = _hook(toy_model(), steps=1000, target=0.5, anneal="constant").timeline
    assert flat.drop_fraction(0) == flat.drop_fraction(999) == 0.3


def test_updates_continue_after_end_frac_only_when_the_target_moves():
    def target(step):
        return 0.5 if step < 60 else 0.7

    tl = _hook(toy_model(), steps=100, target=target, interval=10, end_frac=0.3).timeline
    updates = [t for t in range(100) if tl.is_update_step(t)]
    assert updates == [10, 20, 60]  # swaps stop at 30; the net prune at 60 still happens
    assert tl.drop_fraction(60) == 0.0


# ---------------------------------------------------------------- optimizer interplay


class _Snapshot(TrainHook):
    """Placed before the DST hook: compares update steps' parameters and AdamW state."""

    name = "snapshot"

    def __init__(self, model, opt, dst):
        self.model, self.opt, self.dst, self.checked, self.moved = model, opt, dst, [], 0
        self.mask_before = self.params = self.state = None

    def after_backward(self, step):
        self.params = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        self.state = {
            n: {k: v.clone() for k, v in self.opt.state.get(p, {}).items()}
            for n, p in self.model.named_parameters()
        }
        self.mask_before = _masks_of(self.dst)

    def after_optimizer_step(self, step):
        update = self.dst.timeline.is_update_step(step)
        for n, p in self.model.named_parameters():
            before = self.params[n]
            if n in self.dst.masks.masks:
                mask, old = self.dst.masks.masks[n], self.mask_before[n]
                if update:
                    assert torch.equal(p[mask & old], before[mask & old]), (step, n)
                    assert (p[~(mask & old)] == 0).all(), (step, n)
            elif update:
                assert torch.equal(p, before), (step, n)
            self.moved += int(not update and not torch.equal(p, before))
            if update:
                state = self.opt.state.get(p, {})
                assert state.keys() == self.state[n].keys()
                for k, v in state.items():
                    assert torch.equal(v, self.state[n][k]), (step, n, k)
        self.checked += [step] if update else []


def test_skipped_optimizer_step_leaves_weights_and_moments_untouched(tmp_path):
    model = toy_model()
    opt = build_adamw(model, OPTIM)
    dst = _hook(model, grow_mix_ratio=3.0)
    snap = _Snapshot(model, opt, dst)
    run = TrainRun(model, opt, RandomTokens(), TrainConfig(steps=10), OPTIM, tmp_path,
                   hooks=[snap, dst])  # fmt: skip
    train(run)
    assert snap.checked == [2, 4, 6, 8] and snap.moved > 0
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["grad_norm"] == 0.0 for r in log] == [s in (2, 4, 6, 8) for s in range(10)]


@pytest.mark.parametrize("reset", [False, True])
def test_adam_moments_of_regrown_weights(reset):
    model = toy_model()
    opt = build_adamw(model, OPTIM)
    hook = _hook(model, target=0.6, reset_adam_on_grow=reset)
    hook.on_train_start(model, opt)
    _backward(model)
    hook.after_backward(1)
    opt.step()
    hook.after_optimizer_step(1)
    for p in hook.masks.params.values():  # stale moments everywhere, as after many steps
        opt.state[p]["exp_avg"].fill_(1.0)
        opt.state[p]["exp_avg_sq"].fill_(1.0)
    opt.zero_grad()
    _backward(model, step=2)
    old = _masks_of(hook)
    hook.after_backward(2)
    grown = 0
    for n, p in hook.masks.params.items():
        newly = hook.masks.masks[n] & ~old[n]
        grown += int(newly.sum())
        for key in ("exp_avg", "exp_avg_sq"):
            value = opt.state[p][key]
            assert (value[~newly] == 1.0).all(), (n, key)  # nothing else is touched
            assert (value[newly] == (0.0 if reset else 1.0)).all(), (n, key)
    assert grown > 0


def test_zero_target_without_skipping_equals_dense_bit_for_bit(tmp_path):
    def run(with_dst):
        model = toy_model(seed=5)
        hooks = [_hook(model, target=0.0, skip_opt_step_on_update=False)] if with_dst else []
        out = tmp_path / str(with_dst)
        train(TrainRun(model, build_adamw(model, OPTIM), RandomTokens(), TrainConfig(steps=6),
                       OPTIM, out, hooks=hooks))  # fmt: skip
        return model.state_dict()

    dense, dst = run(False), run(True)
    for k in dense:
        assert torch.equal(dense[k], dst[k]), k


# ---------------------------------------------------------------- FLOPs, logs, resume


def test_flop_factors_follow_the_masks_in_use_and_charge_dense_grads_on_updates():
    model = toy_model()
    hook = _hook(model)
    hook.on_train_start(model, build_adamw(model, OPTIM))
    f0 = hook.flop_factors(0)
    kept = {
        k: sum(int(hook.masks.masks[t.name][t.rows].sum()) for t in hook.targets if t.kind == k)
        for k in ("q", "mlp_in", "head")
    }
    assert f0["density"]["q"] == kept["q"] / (2 * 32 * 32)
    assert f0["density"]["mlp_in"] == kept["mlp_in"] / (2 * 64 * 32)
    assert f0["head_density"] == kept["head"] / (64 * 32)
    assert "dense_weight_grad" not in f0
    assert hook.flop_factors(4)["dense_weight_grad"] is True
    assert hook.flop_factors(5)["density"] == hook.flop_factors(6)["density"]  # mask of step 4
    assert hook.flop_factors(4)["density"] == f0["density"]  # step 4 still uses the old mask
    assert hook.flop_factors(5)["density"]["q"] < f0["density"]["q"]  # target rose at 4
    per_step = train_flops_per_token(TOY_SHAPE, **hook.flop_factors(4))
    plain = train_flops_per_token(
        TOY_SHAPE, **(hook.flop_factors(4) | {"dense_weight_grad": False})
    )
    assert per_step["total"] - plain["total"] == per_step["dst_overhead"] > 0
    random = _hook(toy_model(), grow="random")
    assert "dense_weight_grad" not in random.flop_factors(4)  # SET needs no dense gradient


def test_log_fields_report_each_update(tmp_path):
    model = toy_model()
    dst = _hook(model)
    train(TrainRun(model, build_adamw(model, OPTIM), RandomTokens(), TrainConfig(steps=14),
                   OPTIM, tmp_path, hooks=[dst]))  # fmt: skip
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    updates = [r for r in log if r["dst_update"]]
    assert [r["step"] - 1 for r in updates] == [2, 4, 6, 8, 10, 12]
    at = {r["step"] - 1: r for r in updates}
    assert at[2]["dst_pruned_frac"] == pytest.approx(at[2]["dst_grown_frac"], abs=0.01)
    assert at[4]["dst_pruned_frac"] > at[4]["dst_grown_frac"]  # net prune 0.3 -> 0.8
    assert at[8]["dst_grown_frac"] > at[8]["dst_pruned_frac"]  # net grow 0.8 -> 0.5
    for r in updates:
        assert 0 < r["dst_mask_churn"] <= max(r["dst_pruned_frac"], r["dst_grown_frac"])
    assert at[12]["dst_sparsity"] == pytest.approx(0.5, abs=0.02)
    assert log[3]["dst_last_update_step"] == 2 and not log[3]["dst_update"]


def _resume_run(out, kw):
    model = toy_model(seed=1, dropout=0.1)
    hook = _hook(model, steps=12, interval=3, **kw)
    cfg = TrainConfig(steps=12, grad_accum=2, eval_every=4, ckpt_every=4)
    return TrainRun(model, build_adamw(model, OPTIM), RandomTokens(), cfg, OPTIM, out, hooks=[hook])


def _log(out):
    drop = ("step_time_s", "tokens_per_s")
    rows = (json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines())
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


@pytest.mark.parametrize(
    "kw", [{"grow": "gradient", "grow_mix_ratio": 3.0}, {"grow": "random", "init": "magnitude"}]
)
def test_resume_equals_uninterrupted(tmp_path, kw):
    whole = _resume_run(tmp_path / "whole", kw)
    train(whole)
    train(_resume_run(tmp_path / "split", kw), stop_at=5)  # killed after step 5
    resumed = _resume_run(tmp_path / "split", kw)
    train(resumed)
    for k, v in whole.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    for n, m in whole.hooks[0].masks.masks.items():
        assert torch.equal(m, resumed.hooks[0].masks.masks[n]), n
    assert _log(tmp_path / "whole") == _log(tmp_path / "split")


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"grow": "rigl"}, "sparsity.dst.grow"),
        ({"distribution": "erk2"}, "sparsity.distribution"),
        ({"interval": 0}, "sparsity.dst.interval"),
        ({"drop_fraction": 1.5}, "sparsity.dst.drop_fraction"),
        ({"end_frac": -0.1}, "sparsity.dst.end_frac"),
        ({"grow": "random", "grow_mix_ratio": 3.0}, "sparsity.dst.grow_mix_ratio"),
        ({"anneal": "linear"}, "sparsity.dst.anneal"),
    ],
)
def test_bad_config_is_a_one_line_error(kw, key):
    with pytest.raises(ConfigError, match=key) as err:
        DSTConfig(**kw)
    assert "\n" not in str(err.value)


def test_target_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match="sparsity target"):
        _hook(toy_model(), target=1.0)
