"""Pretrain a GPT (dense or sparse): ``python -m sparselm.cli.pretrain [overrides]``.

Writes into ``hydra.run.dir``: ``checkpoints/``, ``train_log.jsonl``, ``metrics.json``,
``config.yaml`` (resolved) and ``tokenizer.json``. Under ``torchrun --nproc_per_node N`` the
ranks share each step's micro-batches (``train.parallel``: ddp or fsdp); rank 0 writes.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sparselm import distributed
from sparselm.cli import builders
from sparselm.cli.checks import check_job
from sparselm.cli.common import (
    compose_config,
    pick_device,
    run_cli,
    save_resolved_config,
)
from sparselm.cli.job import train_and_record
from sparselm.cli.method_registry import method_hooks, static_level
from sparselm.cli.prepare import ensure_shards, ensure_tokenizer
from sparselm.cli.run_folder import claim_run_dir
from sparselm.data.batches import TokenBatches
from sparselm.data.shards import open_split, read_manifest
from sparselm.loading import TOKENIZER_FILE
from sparselm.optim import build_adamw
from sparselm.tokenizer import save_tokenizer
from sparselm.tracking import NullTracker
from sparselm.train import TrainRun


def main(argv: Sequence[str]) -> int:
    cfg, run_dir = compose_config("pretrain", argv)
    check_job(cfg, seq_len_within_block=True)
    with distributed.session(str(cfg.device)) as dist:
        return pretrain(cfg, run_dir, dist)


def pretrain(cfg: DictConfig, run_dir: Path, dist: distributed.DistContext) -> int:
    device = dist.device(pick_device(cfg.device))
    train_cfg = builders.train_config(cfg)
    optim_cfg = builders.optim_config(cfg)
    claim_run_dir(cfg, run_dir, write=dist.is_main)  # before anything is written
    dist.barrier()
    with dist.main_first():  # rank 0 trains the tokenizer / writes shards; the others reuse
        tok, tok_path = ensure_tokenizer(cfg)
        shards = ensure_shards(cfg, tok)
    model_cfg = builders.model_config(cfg, tok.get_vocab_size())
    seq_len = int(cfg.train.seq_len)
    batches = TokenBatches(
        open_split(shards, cfg.data.train_split),
        open_split(shards, cfg.data.val_split),
        seq_len,
        int(cfg.train.micro_batch_size),
        int(cfg.seed),
        vocab_size=model_cfg.vocab_size,
    )

    model = builders.build_model(model_cfg, int(cfg.seed), device)
    # FSDP replaces the parameters: shard before the hooks and the optimizer hold them
    model = distributed.shard_model(model, dist, train_cfg.parallel)
    hooks = method_hooks(cfg, model, train_cfg.steps)
    config_yaml, tracker = OmegaConf.to_yaml(cfg, resolve=True), NullTracker()
    if dist.is_main:  # rank 0 writes every file
        run_dir.mkdir(parents=True, exist_ok=True)
        if tok_path is not None:
            shutil.copyfile(tok_path, run_dir / TOKENIZER_FILE)
        else:
            save_tokenizer(tok, run_dir / TOKENIZER_FILE)
        config_yaml = save_resolved_config(cfg, run_dir)
        tracker = builders.tracker(cfg, run_dir, job_type="pretrain")
    run = TrainRun(
        model=model,
        optimizer=build_adamw(model, optim_cfg),
        batches=batches,
        cfg=train_cfg,
        optim=optim_cfg,
        out_dir=run_dir,
        hooks=hooks,
        tracker=tracker,
        flops_per_token=builders.flops_function(
            builders.model_shape(model_cfg, seq_len), cfg.flops.convention
        ),
        config_yaml=config_yaml,
        dist=dist,
    )
    train_and_record(
        run,
        bool(cfg.resume),
        lambda _: (
            builders.flop_summary(model_cfg, seq_len, cfg.flops.convention, hooks, train_cfg.steps)
            | {
                "data": read_manifest(shards)["source"],
                "static_sparsity": static_level(cfg),
                "method": str(cfg.method.name),
            }
        ),
    )
    return 0


if __name__ == "__main__":
    run_cli(main, "pretrain")
