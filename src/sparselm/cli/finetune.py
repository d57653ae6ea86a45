"""Fine-tune a model on one task: ``python -m sparselm.cli.finetune``.

The one fine-tuning entry point. A job is this module's shared body (run folder, torchrun,
task batches, the FLOP ledger, metrics.json last) plus a *plan*: what trains and under which
hooks. SPDF's plan (``dense_plan``) fine-tunes densely: masks are dropped, masked weights start
at exactly 0 and may learn, and the optimizer starts fresh; ``finetune.keep_mask=true`` is the
sparse fine-tuning ablation. SquareHead's plan (``sparse_finetune.sparse_plan``, run by
``python -m sparselm.cli.sparse_finetune``) prunes a copy of the dense teacher and adds the
mask and distillation hooks. Writes the same files as pretraining into ``hydra.run.dir``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tokenizers import Tokenizer
from torch import nn

from sparselm import distributed
from sparselm.checkpoint import load_hook_tensors
from sparselm.cli import builders
from sparselm.cli.checks import check_job
from sparselm.cli.common import compose_config, pick_device, run_cli, save_resolved_config
from sparselm.cli.job import train_and_record
from sparselm.cli.model_source import ModelSource, is_hf, load_source, save_hf_model
from sparselm.cli.run_folder import check_start, claim_run_dir, record_start, require_finished
from sparselm.data.task_batches import TaskBatches, subset_indices
from sparselm.data.tasks import TaskExample, load_task
from sparselm.errors import ConfigError
from sparselm.flops import ModelShape
from sparselm.hooks import TrainHook
from sparselm.model import GPT
from sparselm.optim import build_adamw
from sparselm.sparsity.mask_set import MaskSet
from sparselm.sparsity.static import StaticSparsity
from sparselm.tracking import NullTracker
from sparselm.train import TrainConfig, TrainRun


@dataclass
class Plan:
    """What a fine-tuning job trains: the model, its hooks, and its own metrics.json fields
    (``describe`` maps the training metrics to them; it runs on rank 0 after training)."""

    model: nn.Module
    hooks: list[TrainHook]
    describe: Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class JobStart:
    """What every plan starts from: the job's config, its start model, task batches, training
    config and ranks."""

    cfg: DictConfig
    source: ModelSource
    batches: TaskBatches
    train_cfg: TrainConfig
    dist: distributed.DistContext
    shape: ModelShape  # the start model's, for the FLOP ledger (a pruned copy shares it)


PlanBuilder = Callable[[JobStart], Plan]


@dataclass(frozen=True)
class Job:
    """A kind of fine-tuning job: its config, the key naming its start model, its plan."""

    config_name: str
    source_key: str
    plan: PlanBuilder


def main(argv: Sequence[str]) -> int:
    return run_job(FINETUNE, argv)


def run_job(job: Job, argv: Sequence[str]) -> int:
    cfg, run_dir = compose_config(job.config_name, argv)
    check_job(cfg)
    with distributed.session(str(cfg.device)) as dist:
        return finetune(cfg, run_dir, dist, job)


def finetune(cfg: DictConfig, run_dir: Path, dist: distributed.DistContext, job: Job) -> int:
    claim_run_dir(cfg, run_dir, write=dist.is_main)  # before anything is written
    dist.barrier()
    device = dist.device(pick_device(cfg.device))
    if not is_hf(cfg) and cfg.get(job.source_key):
        require_finished(Path(cfg[job.source_key]), job.source_key)
    source = load_source(cfg, device, job.source_key)
    start = check_start(run_dir, job.source_key, source.origin) if not is_hf(cfg) else None
    batches = task_batches(
        cfg, source.tokenizer, source.max_len, source.eos_id if source.hf_eos else None
    )
    steps = finetune_steps(cfg, batches.num_train_examples)
    train_cfg = builders.train_config(cfg, steps=steps)
    optim_cfg = builders.optim_config(cfg)
    shape = builders.shape_of(source.model, batches.seq_len)
    plan = job.plan(JobStart(cfg, source, batches, train_cfg, dist, shape))

    config_yaml, tracker = OmegaConf.to_yaml(cfg, resolve=True), NullTracker()
    if dist.is_main:  # rank 0 writes every file
        source.copy_tokenizer(run_dir)
        config_yaml = save_resolved_config(cfg, run_dir)
        record_start(run_dir, start)
        tracker = builders.tracker(cfg, run_dir, job_type=job.config_name)
    plan.model.train()
    run = TrainRun(
        model=plan.model,
        optimizer=build_adamw(plan.model, optim_cfg),
        batches=batches,
        cfg=train_cfg,
        optim=optim_cfg,
        out_dir=run_dir,
        hooks=plan.hooks,
        tracker=tracker,
        flops_per_token=builders.flops_function(shape, cfg.flops.convention),
        config_yaml=config_yaml,
        dist=dist,
    )
    train_and_record(run, bool(cfg.resume), plan.describe)
    if source.family == "hf" and dist.is_main:
        save_hf_model(source, plan.model, run_dir / "hf_model")
    return 0


def dense_plan(start: JobStart) -> Plan:
    """SPDF: the pretrained model itself, dense (or under its pretraining masks: keep_mask)."""
    cfg, source, batches = start.cfg, start.source, start.batches
    dist, train_cfg = start.dist, start.train_cfg
    model = distributed.shard_model(source.model, dist, train_cfg.parallel)  # before hooks
    if cfg.finetune.keep_mask and source.family != "sparselm":
        raise ConfigError("finetune.keep_mask=true needs masks from one of our pretraining runs")
    hooks = kept_masks(model, source.origin) if cfg.finetune.keep_mask else []
    fields = {
        "task": cfg.task.name,
        "fraction": float(cfg.task.fraction),
        "train_examples": batches.num_train_examples,
        "keep_mask": cfg.finetune.keep_mask,
        "pretrained": str(source.origin),
    }
    return Plan(model, hooks, lambda _: fields)


FINETUNE = Job("finetune", "pretrained", dense_plan)


def task_batches(
    cfg: DictConfig, tok: Tokenizer, max_len: int, eot: int | None = None
) -> TaskBatches:
    """The task's train pool and validation split as batches sized by ``cfg.train``.

    ``eot``: the end-of-text id of a foreign (Hugging Face) tokenizer; ours is looked up.
    """
    data_dir = Path(cfg.paths.data_dir)
    split_map = dict(cfg.task.split_map) if cfg.task.get("split_map") else None
    pool = train_pool(
        load_task(cfg.task.name, "train", data_dir, split_map),
        float(cfg.task.pool_fraction),
        int(cfg.task.subset_seed),
    )
    return TaskBatches(
        pool,
        load_task(cfg.task.name, "validation", data_dir, split_map),
        tok,
        seq_len=min(int(cfg.train.seq_len), max_len),
        micro_batch_size=int(cfg.train.micro_batch_size),
        seed=int(cfg.seed),
        fraction=float(cfg.task.fraction),
        subset_seed=int(cfg.task.subset_seed),
        grad_accum=int(cfg.train.grad_accum),
        eot=eot,
    )


def train_pool(examples: list[TaskExample], pool_fraction: float, subset_seed: int) -> list:
    """The scale's share of the train split; ``task.fraction`` is then taken of this pool.

    A share rather than a count keeps the tasks' relative sizes, which the study compares.
    """
    if not 0.0 < pool_fraction <= 1.0:
        raise ConfigError(f"task.pool_fraction={pool_fraction} must be in (0, 1]")
    keep = subset_indices(len(examples), pool_fraction, subset_seed)
    return [examples[i] for i in keep]


def finetune_steps(cfg: DictConfig, n_examples: int) -> int:
    """``train.steps`` if set, else epochs over the (fractional) train set, capped."""
    if cfg.train.steps is not None:
        return int(cfg.train.steps)
    per_step = int(cfg.train.micro_batch_size) * int(cfg.train.grad_accum)
    steps = max(1, math.ceil(float(cfg.train.epochs) * n_examples / per_step))
    if cfg.train.max_steps is not None:
        steps = min(steps, int(cfg.train.max_steps))
    return steps


def kept_masks(model: GPT, ckpt: Path) -> list[TrainHook]:
    """Re-enforce the pretraining masks (the sparse fine-tuning ablation)."""
    state = load_hook_tensors(ckpt, StaticSparsity.name)
    if not state:
        raise ConfigError(
            f"finetune.keep_mask=true but {ckpt} holds no sparsity masks "
            "(was it pretrained with method=static?)"
        )
    params = dict(model.named_parameters())
    masks = {k.removeprefix("mask."): v.bool() for k, v in state.items()}
    targets = [t for t in model.block_linears() if t.name in masks]
    return [StaticSparsity(targets, MaskSet({n: params[n] for n in masks}, masks))]


if __name__ == "__main__":
    run_cli(main, "finetune")
