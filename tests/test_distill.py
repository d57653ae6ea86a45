"""Distillation losses against hand computations, and the hook inside the real loop."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from helpers import RandomTokens, toy_model

from sparselm.errors import ConfigError
from sparselm.methods.distill import (
    BF16_EPS,
    DistillationHook,
    DistillConfig,
    Teacher,
    kl,
    layerwise_error,
    nonpad_mask,
    squarehead,
)
from sparselm.optim import OptimConfig, build_adamw
from sparselm.sparsity.mask_set import MaskSet
from sparselm.sparsity.masks import kept_count
from sparselm.sparsity.pruning import one_shot_magnitude
from sparselm.sparsity.static import StaticSparsity
from sparselm.train import TrainConfig, TrainRun, train

OPTIM = OptimConfig(lr=3e-4, min_lr=3e-5, warmup_steps=1, weight_decay=0.0)


def _hidden(seed: int, layers: int = 3, shape=(2, 5, 4)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for _ in range(layers)]


def test_squarehead_is_zero_for_identical_student():
    h = _hidden(0)
    mask = torch.ones(2, 5, dtype=torch.bool)
    assert float(squarehead(h, [t.clone() for t in h], mask)) == 0.0


def test_squarehead_matches_hand_computation_over_kept_tokens():
    s, t = _hidden(1), _hidden(2)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    expected = 0.0
    for hs, ht in zip(s, t, strict=True):
        num, den, n = 0.0, 0.0, 0
        for b in range(2):
            for p in range(5):
                if mask[b, p]:
                    for d in range(4):
                        num += (hs[b, p, d] - ht[b, p, d]).item() ** 2
                        den += ht[b, p, d].item() ** 2
                        n += 1
        expected += (num / n) / (den / n + BF16_EPS)
    assert float(squarehead(s, t, mask)) == pytest.approx(expected, rel=1e-5)
    # padding does not matter, the denominator does not depend on the student
    s2 = [h.clone() for h in s]
    for h in s2:
        h[0, 3:] = 1e6
    assert float(squarehead(s2, t, mask)) == pytest.approx(expected, rel=1e-5)
    errs = layerwise_error(s, t, mask)
    assert len(errs) == 3 and sum(errs) == pytest.approx(expected, rel=1e-2)


def test_squarehead_scales_quadratically_with_the_student_error():
    t = _hidden(3)
    s = [h + 0.1 for h in t]
    s3 = [h + 0.3 for h in t]
    mask = torch.ones(2, 5, dtype=torch.bool)
    assert float(squarehead(s3, t, mask)) == pytest.approx(9 * float(squarehead(s, t, mask)))


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_kl_matches_hand_computation_on_label_tokens(temperature):
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(2, 3, 5, generator=g), torch.randn(2, 3, 5, generator=g)
    labels = torch.tensor([[-100, 1, 2], [3, -100, -100]])
    total, n = 0.0, 0
    for b, p in [(0, 1), (0, 2), (1, 0)]:
        pt = [math.exp(v / temperature) for v in zt[b, p].tolist()]
        ps = [math.exp(v / temperature) for v in zs[b, p].tolist()]
        pt = [v / sum(pt) for v in pt]
        ps = [v / sum(ps) for v in ps]
        total += sum(a * math.log(a / c) for a, c in zip(pt, ps, strict=True))
        n += 1
    expected = total / n * temperature**2
    assert float(kl(zs, zt, labels, temperature)) == pytest.approx(expected, rel=1e-5)
    assert float(kl(zt, zt, labels, temperature)) == pytest.approx(0.0, abs=1e-6)
    # prompt/pad positions are ignored
    zs2 = zs.clone()
    zs2[0, 0] += 100.0
    assert float(kl(zs2, zt, labels, temperature)) == pytest.approx(expected, rel=1e-5)


def test_nonpad_mask_keeps_prompt_and_completion_not_right_padding():
    labels = torch.tensor([[-100, -100, 5, 6, -100, -100], [1, 2, 3, 4, 5, 6]])
    expected = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(nonpad_mask(labels), expected)


def test_teacher_is_frozen_and_returns_hidden_states():
    model = toy_model()
    model.train()
    teacher = Teacher(model)
    out = teacher(RandomTokens().train_batch(0, 0)[0])
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert len(out.hidden_states) == 2 and not out.logits.requires_grad


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="distill.kl"):
        DistillConfig(kl=-1.0)
    with pytest.raises(ConfigError, match="distill.temperature"):
        DistillConfig(temperature=0.0)


def _sparse_student_run(tmp_path, cfg: DistillConfig, steps: int = 6):
    teacher_model = toy_model(seed=7)
    student = copy.deepcopy(teacher_model)
    targets = student.block_linears()
    masks = one_shot_magnitude(targets, 0.6)
    sparse = StaticSparsity(targets, MaskSet.from_targets(targets, masks), False, False)
    hook = DistillationHook(Teacher(teacher_model), cfg)
    opt = build_adamw(student, OPTIM)
    run = TrainRun(
        student, opt, RandomTokens(), TrainConfig(steps=steps), OPTIM, tmp_path, [sparse, hook]
    )
    metrics = train(run)
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    return student, teacher_model, targets, masks, log, metrics


def test_sparse_finetune_with_squarehead_keeps_masks_and_logs_terms(tmp_path):
    cfg = DistillConfig(ce=0.5, kl=0.5, temperature=2.0, squarehead=1.0)
    student, teacher, targets, masks, log, _ = _sparse_student_run(tmp_path, cfg)
    for t, m in zip(targets, masks, strict=True):
        assert int((t.view() != 0).sum()) == kept_count(m.numel(), 0.4), t.name
    for rec in log:
        assert {"loss_ce", "loss_kl", "loss_squarehead", "loss_ce_adjust"} <= rec.keys()
        assert rec["loss_ce"] == pytest.approx(0.5 * rec["train_loss"], rel=1e-5)
        parts = rec["loss_ce"] + rec["loss_kl"] + rec["loss_squarehead"]
        assert parts == pytest.approx(rec["loss_total"], rel=1e-5)
    # the teacher did not move
    assert all(not p.requires_grad for p in teacher.parameters())
    assert torch.equal(
        teacher.blocks[0].mlp.fc_in.weight, toy_model(seed=7).blocks[0].mlp.fc_in.weight
    )


def test_squarehead_alone_pulls_the_pruned_student_towards_the_teacher(tmp_path):
    cfg = DistillConfig(ce=0.0, squarehead=1.0)  # loss_ce_adjust cancels the loop's CE
    *_, log, _ = _sparse_student_run(tmp_path, cfg, steps=10)
    assert all(rec["loss_total"] == pytest.approx(rec["loss_squarehead"], abs=1e-5) for rec in log)
    assert log[-1]["loss_squarehead"] < 0.5 * log[0]["loss_squarehead"]


def test_ce_only_weights_reduce_to_plain_training(tmp_path):
    _, _, _, _, log, _ = _sparse_student_run(tmp_path, DistillConfig(squarehead=0.0), steps=2)
    assert all(rec["loss_ce"] == pytest.approx(rec["train_loss"]) for rec in log)
    assert not any("loss_squarehead" in rec or "loss_kl" in rec for rec in log)
