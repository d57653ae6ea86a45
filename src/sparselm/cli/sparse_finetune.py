"""Prune a dense model, then fine-tune it with the mask fixed and distillation from the dense
model (SquareHead, squarehead.md): ``python -m sparselm.cli.sparse_finetune``.

    python -m sparselm.cli.sparse_finetune teacher=<dense fine-tuned run> task=e2e \
        prune=sparsegpt prune.sparsity=0.7 distill=ce_squarehead hydra.run.dir=<out>
    python -m sparselm.cli.sparse_finetune model=hf model.path=<HF model folder> ...

The teacher is the dense model itself (frozen, eval mode); the student starts as its copy,
pruned by ``prune`` (magnitude, SparseGPT on task calibration batches, or gradual magnitude).
Writes the training files into ``hydra.run.dir`` plus, in ``metrics.json`` (last), the
validation loss and per-layer error against the teacher right after pruning and after
fine-tuning, and whether the masks stayed exact. An HF student is also saved as ``hf_model/``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from sparselm.cli import builders
from sparselm.cli.checks import check_job
from sparselm.cli.common import compose_config, pick_device, run_cli, save_resolved_config, typed
from sparselm.cli.finetune import finetune_steps, task_batches
from sparselm.cli.job import train_and_record
from sparselm.cli.model_source import is_hf, load_source, save_hf_model
from sparselm.cli.run_folder import check_start, claim_run_dir, record_start, require_finished
from sparselm.data.task_batches import TaskBatches
from sparselm.flops import ModelShape, forward_flops_per_token
from sparselm.hooks import TrainHook
from sparselm.methods.distill import (
    DistillationHook,
    DistillConfig,
    Teacher,
    layerwise_error,
    nonpad_mask,
)
from sparselm.model import lm_loss
from sparselm.optim import build_adamw
from sparselm.sparsity import prune_setup
from sparselm.sparsity.prune_setup import PruneConfig
from sparselm.train import TrainRun


def main(argv: Sequence[str]) -> int:
    cfg, run_dir = compose_config("sparse_finetune", argv)
    check_job(cfg)
    claim_run_dir(cfg, run_dir)  # before anything is written
    prune_cfg = typed(PruneConfig, cfg.prune, "prune")
    distill_cfg = typed(DistillConfig, cfg.distill, "distill")
    device = pick_device(cfg.device)
    if cfg.get("teacher") and not is_hf(cfg):
        require_finished(Path(cfg.teacher), "teacher")
    source = load_source(cfg, device)
    start = check_start(run_dir, "teacher", source.origin) if source.family == "sparselm" else None
    batches = task_batches(
        cfg, source.tokenizer, source.max_len, source.eos_id if source.hf_eos else None
    )
    steps = finetune_steps(cfg, batches.num_train_examples)
    train_cfg = builders.train_config(cfg, steps=steps)
    optim_cfg = builders.optim_config(cfg)
    val = batches.val_batches(train_cfg.eval_batches)

    teacher = Teacher(source.model)
    student = copy.deepcopy(source.model)
    for p in student.parameters():
        p.requires_grad_(True)
    targets = prune_setup.select(student.block_linears(), prune_cfg)
    before = {"dense_val_loss": val_loss(teacher.model, val)}
    if prune_cfg.one_shot:
        calibration = calibration_batches(batches, prune_cfg.calibration_samples)
        masks = prune_setup.prune_one_shot(student, targets, prune_cfg, calibration)
        mask_hook: TrainHook = prune_setup.fixed_mask_hook(targets, masks, prune_cfg)
        before |= {
            "pruned_val_loss": val_loss(student, val),
            "layerwise_error_pruned": mean_layerwise_error(student, teacher, val),
        }
        expected_nnz = mask_hook.masks.nnz()
    else:
        mask_hook = prune_setup.gradual_hook(targets, prune_cfg, steps)
        expected_nnz = None  # masks shrink while training
    hooks = [mask_hook, DistillationHook(teacher, distill_cfg)]

    source.copy_tokenizer(run_dir)
    config_yaml = save_resolved_config(cfg, run_dir)
    record_start(run_dir, start)
    tracker = builders.tracker(cfg, run_dir, job_type="sparse_finetune")
    student.train()
    flops = SparseFTFlops(student, batches.seq_len, distill_cfg)
    run = TrainRun(
        model=student,
        optimizer=build_adamw(student, optim_cfg),
        batches=batches,
        cfg=train_cfg,
        optim=optim_cfg,
        out_dir=run_dir,
        hooks=hooks,
        tracker=tracker,
        flops_per_token=flops,
        config_yaml=config_yaml,
    )

    def describe(metrics: dict[str, Any]) -> dict[str, Any]:
        check = prune_setup.mask_check(mask_hook, expected_nnz)
        if not (check["mask_zero_outside"] and check["mask_nnz_unchanged"]):
            raise RuntimeError(f"masks did not stay exact through fine-tuning: {check}")
        density = mask_hook.flop_factors(steps - 1).get("density", {})
        return {
            **before,
            **check,
            # squarehead.md §6: the per-token inference saving that goes with the accuracy
            "inference_flops_ratio": flops.forward({}) / flops.forward(density),
            "layerwise_error_final": mean_layerwise_error(student, teacher, val),
            "task": cfg.task.name,
            "prune_method": prune_cfg.method,
            "prune_target": prune_cfg.label,
            "distill": OmegaConf.to_container(cfg.distill),
            "teacher": str(source.origin),
            "model_family": source.family,
            "train_examples": batches.num_train_examples,
            "calibration_samples": prune_cfg.calibration_samples if prune_cfg.one_shot else 0,
        }

    train_and_record(run, bool(cfg.resume), describe)
    if source.family == "hf":
        save_hf_model(source, student, run_dir / "hf_model")
    return 0


def calibration_batches(batches: TaskBatches, samples: int) -> list[torch.Tensor]:
    """The first ``samples`` training sequences in the run's own (seeded) order.

    Batches are right-padded with EOS; padding enters the Hessian like any token, which the
    SparseGPT reference's padded calibration samples do too.
    """
    out, seen, step = [], 0, 0
    while seen < samples:
        x, _ = batches.train_batch(step, 0)
        x = x[: samples - seen]
        out.append(x)
        seen += x.shape[0]
        step += 1
    return out


@torch.no_grad()
def val_loss(model: nn.Module, val: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Mean completion cross-entropy over the validation batches (as the loop evaluates)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    losses = [float(lm_loss(model(x.to(device)).logits, y.to(device))) for x, y in val]
    model.train(was_training)
    return sum(losses) / len(losses)


@torch.no_grad()
def mean_layerwise_error(
    student: nn.Module, teacher: Teacher, val: Sequence[tuple[torch.Tensor, torch.Tensor]]
) -> list[float]:
    """Per-layer normalised squared error of the student's hidden states, over val batches."""
    was_training = student.training
    student.eval()
    device = next(student.parameters()).device
    sums: list[float] = []
    for x, y in val:
        x, y = x.to(device), y.to(device)
        errs = layerwise_error(
            student(x, return_hidden=True).hidden_states,
            teacher(x).hidden_states,
            nonpad_mask(y),
        )
        sums = errs if not sums else [a + b for a, b in zip(sums, errs, strict=True)]
    student.train(was_training)
    return [s / len(val) for s in sums]


class SparseFTFlops:
    """Per-token training FLOPs (squarehead.md §6): 3·F_fwd(student at its density), plus a
    dense teacher forward when a distillation term needs it. Called by the loop's ledger.

    Counted from the model's own block linears, so it holds for our GPT and for HF models
    alike (gated MLPs included); attention is the full T×T score matrix.
    """

    def __init__(self, model: nn.Module, seq_len: int, distill: DistillConfig) -> None:
        linears = model.block_linears()
        vocab, d_model = model.lm_head.weight.shape
        self.block_params: dict[str, int] = {}
        for t in linears:
            self.block_params[t.kind] = self.block_params.get(t.kind, 0) + t.shape[0] * t.shape[1]
        shape = ModelShape(
            n_layer=1, d_model=d_model, n_head=1, d_ff=1, seq_len=seq_len, vocab_size=vocab
        )
        layers = len({t.layer for t in linears})
        self.fixed = forward_flops_per_token(shape)["attention"] * layers + 2.0 * vocab * d_model
        self.teacher = self.forward({}) if (distill.kl > 0 or distill.squarehead > 0) else 0.0

    def forward(self, density: dict[str, float]) -> float:
        """Forward FLOPs per token with block linears at ``density`` (per kind; default 1)."""
        linear = sum(2.0 * n * density.get(k, 1.0) for k, n in self.block_params.items())
        return linear + self.fixed

    def __call__(self, factors: dict[str, Any]) -> float:
        return 3.0 * self.forward(factors.get("density") or {}) + self.teacher


if __name__ == "__main__":
    run_cli(main, "sparse_finetune")
