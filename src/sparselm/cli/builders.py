"""Turn a composed config into the objects the library takes. ``cfg`` goes no further."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from sparselm.cli.common import typed
from sparselm.errors import ConfigError
from sparselm.flops import CONVENTIONS, DEFAULT_CONVENTION, ModelShape, train_flops_per_token
from sparselm.hooks import TrainHook
from sparselm.methods import mst
from sparselm.methods.hsa import HSAConfig
from sparselm.methods.layer_drop import LayerDropConfig, LayerDropHook
from sparselm.methods.raptr import RaptrConfig, RaptrHook
from sparselm.methods.stacking import StackingConfig, StackingHook
from sparselm.model import GPT, GPTConfig
from sparselm.optim import OptimConfig
from sparselm.progress import PROGRESS_MODES
from sparselm.schedules import LR_SCHEDULES
from sparselm.sparsity.dst_schedule import DSTConfig
from sparselm.sparsity.static import StaticSparsity, StaticSparsityConfig
from sparselm.sparsity.variation import VariationConfig
from sparselm.tracking import Tracker, TrackerConfig, build_tracker
from sparselm.train import TrainConfig

SPARSITY_KINDS = ("none", "static")
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


def sparsity_hooks(cfg: DictConfig, model: GPT) -> list[TrainHook]:
    kind = cfg.sparsity.kind
    if kind not in SPARSITY_KINDS:
        raise ConfigError(f"sparsity.kind={kind!r} is unknown; allowed: {SPARSITY_KINDS}")
    if kind == "none":
        level = float(cfg.sparsity.get("level", 0.0))
        if level != 0.0:
            raise ConfigError(
                f"sparsity.level={level} needs sparsity=static (sparsity=dense "
                "is the dense control)"
            )
        return []
    return [StaticSparsity.from_config(model.block_linears(), _static_config(cfg))]


def _static_config(cfg: DictConfig) -> StaticSparsityConfig:
    node = OmegaConf.create({k: v for k, v in cfg.sparsity.items() if k != "kind"})
    return typed(StaticSparsityConfig, node, "sparsity")


@dataclass(frozen=True)
class RunShape:
    """What a method built from the model also needs to know about the run."""

    total_steps: int
    seq_len: int
    convention: str = DEFAULT_CONVENTION


@dataclass(frozen=True)
class ModelMethod:
    """A method whose hooks hold the model's parameters (masks): ``parse`` turns the ``method``
    node into its config, ``build`` makes the hooks for this model and run."""

    parse: Callable[[DictConfig], Any]
    build: Callable[[Any, GPT, RunShape], list[TrainHook]]
    owns_masks: bool = True  # cannot be combined with sparsity=static


# method name -> (config dataclass, hook class), built from the depth alone, or a ModelMethod;
# `none` is the plain loop. A new method is one entry here plus conf/method/<name>.yaml: the
# loop never learns its name.
METHODS: dict[str, tuple[type, type[TrainHook]] | ModelMethod | None] = {
    "none": None,
    "raptr": (RaptrConfig, RaptrHook),
    "stacking": (StackingConfig, StackingHook),
    "layer_drop": (LayerDropConfig, LayerDropHook),
}


def method_hooks(cfg: DictConfig, model: GPT, total_steps: int) -> list[TrainHook]:
    """The hooks of ``cfg.method`` (a training method on top of the loop) for this model."""
    node = cfg.get("method") or OmegaConf.create({"name": "none"})
    name = node.get("name")
    if name not in METHODS:
        raise ConfigError(f"method.name={name!r} is unknown; allowed: {', '.join(METHODS)}")
    entry = METHODS[name]
    extra = sorted(k for k in node if k != "name")
    if entry is None:
        if extra:
            raise ConfigError(f"method.{extra[0]} is not a key of method=none")
        return []
    if isinstance(entry, ModelMethod):
        return _model_method_hooks(cfg, entry, model, total_steps)
    config_cls, hook_cls = entry
    method_cfg = typed(config_cls, OmegaConf.create({k: node[k] for k in extra}), "method")
    try:
        return [hook_cls(method_cfg, model.config.n_layer, total_steps)]
    except ValueError as e:
        raise ConfigError(f"method: {e}") from None


def _model_method_hooks(
    cfg: DictConfig, entry: ModelMethod, model: GPT, total_steps: int
) -> list[TrainHook]:
    kind = OmegaConf.select(cfg, "sparsity.kind", default="none")
    if entry.owns_masks and kind != "none":
        raise ConfigError(
            f"method={cfg.method.name} brings its own masks; sparsity.kind={kind!r} would add a "
            "second set (use sparsity=dense)"
        )
    run = RunShape(
        total_steps=total_steps,
        seq_len=int(OmegaConf.select(cfg, "train.seq_len", default=model.config.block_size)),
        convention=str(OmegaConf.select(cfg, "flops.convention", default=DEFAULT_CONVENTION)),
    )
    return entry.build(entry.parse(cfg.method), model, run)


# ---------------------------------------------------------------- MST and its DST baselines

# decay_embeddings is read by conf/optim (optim.decay_embeddings), not by the method
MST_KEYS = ("name", "target_reduction", "solve_knob", "sparsity", "hsa", "seed", "decay_embeddings")
MST_SPARSITY_KEYS = (
    "distribution", "init", "sparsify_lm_head", "erk_power", "schedule", "level", "dst",
    "variation",
)  # fmt: skip
DST_KEYS = tuple(
    f.name
    for f in dataclasses.fields(DSTConfig)
    if f.name not in ("distribution", "init", "sparsify_lm_head", "erk_power", "seed")
)
HSA_KEYS = ("enabled", "window", "pattern", "stride", "start_frac", "end_frac", "start_step",
            "end_step", "layer_pattern", "route", "flop_basis")  # fmt: skip


@dataclass(frozen=True)
class _MaskKeys:
    """The scalar keys of ``method.sparsity`` (typed before they are spread over configs)."""

    distribution: str = "er"
    init: str = "random"
    sparsify_lm_head: bool = True
    erk_power: float = 1.0
    schedule: str = "variation"
    level: float = 0.9


@dataclass(frozen=True)
class _Enabled:
    enabled: bool = True


def _node(node: Any, key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if node is None:
        return {}
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{key}={node!r} must be a mapping")
    unknown = sorted(set(node) - set(allowed))
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]} is not a known key; allowed: {', '.join(allowed)}")
    return {k: node[k] for k in node}


def mst_config(node: DictConfig) -> mst.MSTConfig:
    """``method`` of conf/method/{mst,rigl,set,static_sparse}.yaml -> ``MSTConfig``."""
    top = _node(node, "method", MST_KEYS)
    sparsity = _node(top.get("sparsity"), "method.sparsity", MST_SPARSITY_KEYS)
    scalars = {k: v for k, v in sparsity.items() if k not in ("dst", "variation")}
    masks = typed(_MaskKeys, OmegaConf.create(scalars), "method.sparsity")
    dst_node = OmegaConf.create(_node(sparsity.get("dst"), "method.sparsity.dst", DST_KEYS))
    var_keys = tuple(f.name for f in dataclasses.fields(VariationConfig))
    var_node = _node(sparsity.get("variation"), "method.sparsity.variation", var_keys)
    hsa = _node(top.get("hsa"), "method.hsa", HSA_KEYS)
    enabled = typed(_Enabled, OmegaConf.create({"enabled": hsa.pop("enabled", True)}), "method.hsa")
    window = hsa.pop("window", "ultra")
    seed = top.get("seed", 0)
    try:
        dst = typed(
            DSTConfig,
            dst_node,
            "method.sparsity.dst",
            distribution=masks.distribution,
            init=masks.init,
            sparsify_lm_head=masks.sparsify_lm_head,
            erk_power=masks.erk_power,
            seed=seed,
        )
        variation = typed(VariationConfig, OmegaConf.create(var_node), "method.sparsity.variation")
        hsa_cfg = typed(HSAConfig, OmegaConf.create(hsa), "method.hsa") if enabled.enabled else None
        return mst.MSTConfig(
            dst=dst,
            variation=variation,
            schedule=masks.schedule,
            level=masks.level,
            hsa=hsa_cfg,
            hsa_window=window,
            target_reduction=_optional_float(
                top.get("target_reduction"), "method.target_reduction"
            ),
            solve_knob=str(top.get("solve_knob", "auto")),
        )
    except ConfigError as e:  # the sub-configs name their keys without the group
        msg = str(e)
        raise ConfigError(msg if msg.startswith("method.") else f"method.{msg}") from None


def _optional_float(value: Any, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}={value!r} must be a number or null")
    return float(value)


def _build_mst(cfg: mst.MSTConfig, model: GPT, run: RunShape) -> list[TrainHook]:
    plan, hooks = mst.build_hooks(cfg, model, run.total_steps, run.seq_len, run.convention)
    solved = plan.cfg
    if cfg.target_reduction is not None:  # the job's log records what the budget fixed
        bases = mst.attention_bases(plan)
        print(
            f"method: {solved.knob}={solved.knob_value():.6f} gives "
            f"{plan.ledger()['reduction']:.4f}x fewer training FLOPs ({run.convention}, "
            f"attention basis {bases['target_basis']}; full_t2 {bases['full_t2']:.4f}x, "
            f"causal_pairs {bases['causal_pairs']:.4f}x)",
            file=sys.stderr,
        )
    return hooks


MST_METHOD = ModelMethod(parse=mst_config, build=_build_mst)
for _name in ("mst", "rigl", "set", "static_sparse"):  # one schema, different defaults
    METHODS[_name] = MST_METHOD


def flops_function(
    model: GPTConfig, seq_len: int, convention: str
) -> Callable[[dict[str, Any]], float]:
    """Per-token training FLOPs for a step, from the factors the hooks report."""
    if convention not in CONVENTIONS:
        raise ConfigError(f"flops.convention={convention!r} is unknown; allowed: {CONVENTIONS}")
    shape = model_shape(model, seq_len)

    def per_token(factors: dict[str, Any]) -> float:
        return train_flops_per_token(shape, convention=convention, **factors)["total"]

    return per_token


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
            config=OmegaConf.to_container(cfg, resolve=True),
        )
    )
