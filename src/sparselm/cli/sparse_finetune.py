"""Prune a dense model, then fine-tune it with the mask fixed and distillation from the dense
model (SquareHead, squarehead.md): ``python -m sparselm.cli.sparse_finetune``.

    python -m sparselm.cli.sparse_finetune teacher=<dense fine-tuned run> task=e2e \
        prune=sparsegpt prune.sparsity=0.7 distill=ce_squarehead hydra.run.dir=<out>
    python -m sparselm.cli.sparse_finetune model=hf model.path=<HF model folder> ...

The one fine-tuning entry point (``sparselm.cli.finetune``) with this module's plan: the
teacher is the dense model itself (frozen, eval mode); the student starts as its copy, pruned by
``prune`` (magnitude, SparseGPT on task calibration batches, or gradual magnitude), and trains
under the mask hook and the distillation hook, on the shared FLOP ledger (the teacher's forward
is a hook's factor) and, under torchrun, on the shared distributed path (DDP; every rank takes
rank 0's masks). ``metrics.json`` (last) adds the validation loss and per-layer error against the
teacher right after pruning and after fine-tuning, and whether the masks stayed exact. An HF
student is also saved as ``hf_model/``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from sparselm import distributed
from sparselm.cli.common import run_cli, typed
from sparselm.cli.finetune import Job, JobStart, Plan, run_job
from sparselm.data.task_batches import TaskBatches
from sparselm.flops import forward_flops_per_token
from sparselm.hooks import TrainHook
from sparselm.methods.distill import (
    DistillationHook,
    DistillConfig,
    Teacher,
    layerwise_error,
    nonpad_mask,
)
from sparselm.model import lm_loss
from sparselm.sparsity import prune_setup
from sparselm.sparsity.prune_setup import PruneConfig


def main(argv: Sequence[str]) -> int:
    return run_job(SPARSE_FINETUNE, argv)


def sparse_plan(start: JobStart) -> Plan:
    """The pruned student of the start model under the fixed-mask and distillation hooks."""
    cfg, source, batches = start.cfg, start.source, start.batches
    dist, train_cfg = start.dist, start.train_cfg
    prune_cfg = typed(PruneConfig, cfg.prune, "prune")
    distill_cfg = typed(DistillConfig, cfg.distill, "distill")
    steps = train_cfg.steps
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
        weights = {id(t.weight): t.weight for t in targets}  # q, k, v may share one
        dist.from_main([*masks, *weights.values()])  # one student on every rank
        mask_hook: TrainHook = prune_setup.fixed_mask_hook(targets, masks, prune_cfg)
        before |= {
            "pruned_val_loss": val_loss(student, val),
            "layerwise_error_pruned": mean_layerwise_error(student, teacher, val),
        }
        expected_nnz = mask_hook.masks.nnz()
    else:
        mask_hook = prune_setup.gradual_hook(targets, prune_cfg, steps)
        expected_nnz = None  # masks shrink while training
    # the masks hold full tensors: FSDP is refused by the mask hook, DDP wraps in the loop
    student = distributed.shard_model(student, dist, train_cfg.parallel)
    shape, convention = start.shape, str(cfg.flops.convention)

    def describe(metrics: dict[str, Any]) -> dict[str, Any]:
        check = prune_setup.mask_check(mask_hook, expected_nnz)
        if not (check["mask_zero_outside"] and check["mask_nnz_unchanged"]):
            raise RuntimeError(f"masks did not stay exact through fine-tuning: {check}")
        density = mask_hook.flop_factors(steps - 1).get("density", {})
        dense = forward_flops_per_token(shape, convention=convention)["total"]
        sparse = forward_flops_per_token(shape, density=density, convention=convention)["total"]
        return {
            **before,
            **check,
            # squarehead.md §6: the per-token inference saving that goes with the accuracy
            "inference_flops_ratio": dense / sparse,
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

    return Plan(student, [mask_hook, DistillationHook(teacher, distill_cfg)], describe)


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


SPARSE_FINETUNE = Job("sparse_finetune", "teacher", sparse_plan)


if __name__ == "__main__":
    run_cli(main, "sparse_finetune")
