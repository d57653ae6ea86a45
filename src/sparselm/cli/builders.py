"""Turn a composed config into the objects the library takes. ``cfg`` goes no further."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sparselm.cli.common import typed
from sparselm.errors import ConfigError
from sparselm.flops import CONVENTIONS, ModelShape, train_flops_per_token
from sparselm.hooks import TrainHook
from sparselm.model import GPT, GPTConfig
from sparselm.optim import OptimConfig
from sparselm.progress import PROGRESS_MODES
from sparselm.schedules import LR_SCHEDULES
from sparselm.tracking import Tracker, TrackerConfig, build_tracker
from sparselm.train import TrainConfig

MODEL_KEYS = ("vocab_size", "n_layer", "n_head", "d_model", "d_ff", "block_size", "bias", "dropout")


def model_config(cfg: DictConfig, vocab_size: int) -> GPTConfig:
    """The model's shape; the vocabulary must hold every id the tokenizer can emit."""
    node = {k: cfg.model[k] for k in MODEL_KEYS if k in cfg.model}
    if node["vocab_size"] < vocab_size:
        raise ConfigError(
            f"model.vocab_size={node['vocab_size']} is smaller than the "
            f"tokenizer's vocabulary ({vocab_size})"
        )
    try:
        return typed(GPTConfig, OmegaConf.create(node), "model")
    except ValueError as e:
        raise ConfigError(str(e)) from None


def build_model(cfg: GPTConfig, seed: int, device: torch.device) -> GPT:
    torch.manual_seed(seed)  # the model's init is a function of the config's seed alone
    return GPT(cfg).to(device)


COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "max-autotune", "reduce-overhead")


def train_config(cfg: DictConfig, **extra: Any) -> TrainConfig:
    node = {
        k: v
        for k, v in cfg.train.items()
        if k not in ("micro_batch_size", "seq_len", "epochs", "max_steps")
    }
    node.update(extra)
    if isinstance(node.get("progress"), bool):  # YAML reads a bare `off` as false
        node["progress"] = "bar" if node["progress"] else "off"
    tc = typed(TrainConfig, OmegaConf.create(node), "train")
    for key in ("steps", "grad_accum", "eval_batches"):
        if getattr(tc, key) < 1:
            raise ConfigError(f"train.{key}={getattr(tc, key)} must be >= 1")
    if tc.precision not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"train.precision={tc.precision!r} is unknown; allowed: auto, bf16, fp32")
    if tc.compile_mode not in COMPILE_MODES:
        allowed = ", ".join(COMPILE_MODES)
        raise ConfigError(f"train.compile_mode={tc.compile_mode!r} is unknown; allowed: {allowed}")
    if tc.loss_chunk < 0:
        raise ConfigError(f"train.loss_chunk={tc.loss_chunk} must be >= 0 (0: full logits)")
    if tc.progress not in PROGRESS_MODES:
        allowed = ", ".join(PROGRESS_MODES)
        raise ConfigError(f"train.progress={tc.progress!r} is unknown; allowed: {allowed}")
    if tc.progress_every_s < 0 or tc.progress_every < 0:
        raise ConfigError(
            f"train.progress_every_s={tc.progress_every_s} and "
            f"train.progress_every={tc.progress_every} must be >= 0"
        )
    return tc


def optim_config(cfg: DictConfig) -> OptimConfig:
    oc = typed(OptimConfig, cfg.optim, "optim")
    if oc.lr <= 0 or oc.min_lr < 0 or oc.min_lr > oc.lr:
        raise ConfigError(f"optim.lr={oc.lr}, optim.min_lr={oc.min_lr}: need 0 <= min_lr <= lr")
    clip_ok = oc.grad_clip is None or oc.grad_clip > 0
    if oc.weight_decay < 0 or not clip_ok or oc.warmup_steps < 0:
        raise ConfigError(
            "optim.weight_decay and optim.warmup_steps must be >= 0 and optim.grad_clip > 0 "
            "(or null: no clipping)"
        )
    if oc.lr_schedule not in LR_SCHEDULES:
        allowed = ", ".join(LR_SCHEDULES)
        raise ConfigError(f"optim.lr_schedule={oc.lr_schedule!r} is unknown; allowed: {allowed}")
    return oc


def flops_function(shape: ModelShape, convention: str) -> Callable[[dict[str, Any]], float]:
    """Per-token training FLOPs for a step, from the factors the hooks report: the one ledger
    of pretraining, fine-tuning and sparse fine-tuning (``model_shape`` from a config,
    ``shape_of`` from a loaded model)."""
    if convention not in CONVENTIONS:
        raise ConfigError(f"flops.convention={convention!r} is unknown; allowed: {CONVENTIONS}")

    def per_token(factors: dict[str, Any]) -> float:
        return train_flops_per_token(shape, convention=convention, **factors)["total"]

    return per_token


def shape_of(model: nn.Module, seq_len: int) -> ModelShape:
    """The FLOP shape of a loaded model: our GPT's from its config, any other's (a Hugging Face
    causal LM) from its block linears, embeddings and head."""
    if isinstance(model, GPT):
        return model_shape(model.config, seq_len)
    linears = model.block_linears()
    layers = len({t.layer for t in linears})
    weights: dict[str, int] = {}
    for t in linears:
        weights[t.kind] = weights.get(t.kind, 0) + t.shape[0] * t.shape[1]
    vocab, d_model = model.lm_head.weight.shape
    return ModelShape(
        n_layer=layers,
        d_model=int(d_model),
        n_head=int(getattr(model, "n_head", 1)),  # read only by the chinchilla convention
        d_ff=1,  # unused: linear_params gives the linears
        seq_len=seq_len,
        vocab_size=int(vocab),
        linear_params=tuple((kind, n // layers) for kind, n in weights.items()),
    )


def model_shape(model: GPTConfig, seq_len: int) -> ModelShape:
    return ModelShape(
        n_layer=model.n_layer,
        d_model=model.d_model,
        n_head=model.n_head,
        d_ff=model.d_ff,
        seq_len=seq_len,
        vocab_size=model.vocab_size,
    )


def flop_summary(
    model: GPTConfig, seq_len: int, convention: str, hooks: list[TrainHook], steps: int = 1
) -> dict[str, Any]:
    """Dense vs this run's per-token training FLOPs under ``convention``, averaged over the
    run's ``steps`` (hooks such as RaPTr change the cost from step to step)."""
    shape = model_shape(model, seq_len)
    dense = train_flops_per_token(shape, convention=convention)["total"]
    per_step = []
    for step in range(max(1, steps)):
        factors: dict[str, Any] = {}
        for hook in hooks:
            factors.update(hook.flop_factors(step))
        per_step.append(train_flops_per_token(shape, convention=convention, **factors)["total"])
    ours = sum(per_step) / len(per_step)
    return {
        "dense_train_flops_per_token": dense,
        "train_flops_per_token": ours,
        "flops_reduction": dense / ours,
        "flops_convention": convention,
    }


def tracker(cfg: DictConfig, run_dir: Path, job_type: str) -> Tracker:
    log = cfg.logger
    return build_tracker(
        TrackerConfig(
            enabled=bool(log.enabled),
            project=log.project,
            mode=log.mode,
            group=log.get("group"),
            job_type=log.get("job_type") or job_type,
            name=log.get("name") or run_dir.name,
            run_id=log.get("run_id"),
            dir=str(run_dir),
            tags=tuple(log.get("tags") or ()),
            # run_dir: how other jobs' configs name this run (pretrained=, checkpoint=), so a
            # study's W&B runs can be joined as its folders are (analysis.wandb_compare)
            config=OmegaConf.to_container(cfg, resolve=True) | {"run_dir": str(run_dir)},
        )
    )
