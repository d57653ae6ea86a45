"""The optimizer and LR schedule each method's spec names: decay groups, clipping, decay shape."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import RandomTokens, toy_model

from sparselm.cli import builders
from sparselm.cli.common import compose_config
from sparselm.optim import OptimConfig, build_adamw
from sparselm.schedules import lr_at, warmup_linear_lr
from sparselm.train import TrainConfig, TrainRun, train


def _group_names(model, optimizer) -> tuple[set[str], set[str]]:
    name = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] > 0 and no_decay["weight_decay"] == 0.0
    return {name[id(p)] for p in decay["params"]}, {name[id(p)] for p in no_decay["params"]}


def test_adamw_groups_decay_block_matrices_and_embeddings_only_when_asked():
    model = toy_model()
    block_matrices = {
        n for n, p in model.named_parameters() if n.startswith("blocks.") and p.dim() == 2
    }
    vectors = {n for n, p in model.named_parameters() if p.dim() == 1}  # LayerNorm, biases
    assert vectors and all(
        ".ln_" in n or n.startswith("ln_f") or n.endswith(".bias") for n in vectors
    )
    # MST (mst.md §3): Linear weights only; the tied wte/lm_head and wpe do not decay
    decay, no_decay = _group_names(model, build_adamw(model, OptimConfig(decay_embeddings=False)))
    assert decay == block_matrices
    assert no_decay == vectors | {"wte.weight", "wpe.weight"}
    # every matrix (nanoGPT's configure_optimizers today): the embeddings decay, 1-D never
    decay, no_decay = _group_names(model, build_adamw(model, OptimConfig(decay_embeddings=True)))
    assert decay == block_matrices | {"wte.weight", "wpe.weight"}
    assert no_decay == vectors
    assert model.lm_head.weight is model.wte.weight  # the head goes wherever wte goes


@pytest.mark.parametrize(
    ("config", "overrides", "decay_embeddings", "grad_clip", "lr_schedule"),
    [
        ("pretrain", [], True, 1.0, "cosine"),  # SPDF, RaPTr: spdf.md §4
        ("pretrain", ["method=mst"], False, 1.0, "cosine"),  # mst.md §3
        ("pretrain", ["method=rigl"], False, 1.0, "cosine"),  # MST's baselines share it
        ("pretrain", ["method=mst", "optim.decay_embeddings=true"], True, 1.0, "cosine"),
        ("finetune", ["pretrained=x"], True, 1.0, "cosine"),  # spdf.md §5.2
        ("sparse_finetune", [], True, None, "linear"),  # squarehead.md §3.2
    ],
)
def test_each_job_gets_its_specs_optimizer(
    config, overrides, decay_embeddings, grad_clip, lr_schedule
):
    oc = builders.optim_config(compose_config(config, overrides)[0])
    assert oc.decay_embeddings is decay_embeddings
    assert oc.grad_clip == grad_clip
    assert oc.lr_schedule == lr_schedule


def test_sparse_finetune_schedule_is_linear_to_zero():
    oc = builders.optim_config(compose_config("sparse_finetune", ["optim.warmup_steps=3"])[0])
    assert oc.min_lr == 0.0
    total = 23
    lrs = [
        lr_at(oc.lr_schedule, t, oc.lr, oc.min_lr, oc.warmup_steps, total) for t in range(total + 1)
    ]
    assert lrs[-1] == 0.0  # the run ends at 0 (composer alpha_f = 0)
    assert lrs[2] == lrs[3] == pytest.approx(oc.lr)  # end of warmup, start of the decay
    # after warmup, equal steps down: a straight line (a cosine's steps grow then shrink)
    drops = [a - b for a, b in zip(lrs[3:], lrs[4:], strict=False)]
    assert drops == pytest.approx([oc.lr / (total - 3)] * len(drops))
    assert lrs[total - 1] == pytest.approx(oc.lr / (total - 3))  # the last update


def test_linear_schedule_reaches_min_lr_and_warms_up_like_cosine():
    assert warmup_linear_lr(10, 1.0, 0.1, 0, 10) == pytest.approx(0.1)
    assert warmup_linear_lr(5, 1.0, 0.1, 0, 10) == pytest.approx(0.55)
    assert lr_at("linear", 0, 1.0, 0.0, 4, 10) == lr_at("cosine", 0, 1.0, 0.0, 4, 10) == 0.25
    with pytest.raises(ValueError, match="optim.lr_schedule"):
        lr_at("step", 0, 1.0, 0.0, 0, 10)


def _one_sgd_step(tmp_path, optim: OptimConfig) -> tuple[float, float]:
    """The norm of the update one plain-SGD step made (lr 1: the applied gradient) and the
    gradient norm the loop logged."""
    model = toy_model(seed=1)
    before = [p.detach().clone() for p in model.parameters()]
    sgd = torch.optim.SGD(model.parameters(), lr=1.0)
    cfg = TrainConfig(steps=1, eval_batches=1, progress="off")
    train(TrainRun(model, sgd, RandomTokens(), cfg, optim, tmp_path))
    applied = math.sqrt(
        sum(
            float((a - p.detach()).pow(2).sum())
            for a, p in zip(before, model.parameters(), strict=True)
        )
    )
    logged = json.loads((tmp_path / "train_log.jsonl").read_text().splitlines()[0])["grad_norm"]
    return applied, logged


def test_gradient_clipping_follows_the_config(tmp_path):
    # lr 1.0 (constant: no warmup, min_lr = lr): the SGD update is the gradient as clipped
    base = dict(lr=1.0, min_lr=1.0, warmup_steps=0)
    applied, norm = _one_sgd_step(tmp_path / "none", OptimConfig(**base, grad_clip=None))
    assert norm > 0.5
    assert applied == pytest.approx(norm, rel=1e-5)  # null: the full gradient
    clip = norm / 4
    applied, norm2 = _one_sgd_step(tmp_path / "clip", OptimConfig(**base, grad_clip=clip))
    assert norm2 == pytest.approx(norm)  # the log keeps the norm before clipping
    assert applied == pytest.approx(clip, rel=1e-4)


def test_the_loop_runs_the_configured_schedule(tmp_path):
    optim = OptimConfig(lr=1.0, min_lr=0.0, warmup_steps=0, lr_schedule="linear")
    model = toy_model()
    cfg = TrainConfig(steps=4, eval_batches=1, progress="off")
    train(TrainRun(model, build_adamw(model, optim), RandomTokens(), cfg, optim, tmp_path))
    log = (tmp_path / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["lr"] for line in log] == pytest.approx([1.0, 0.75, 0.5, 0.25])
