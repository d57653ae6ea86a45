"""Every training method a run can name with ``method=<name>``, in one entry shape.

A method is its module (config dataclass + hooks) under ``sparselm/methods`` or
``sparselm/sparsity``, its YAML under ``conf/method/`` and one entry here saying how the
``method`` node becomes hooks (SPDF's static masks are ``method=static``, like any other). The
training loop never learns a method's name, and ``tests/test_methods.py`` runs the same
invariants over every entry: the declared no-op trains exactly like dense, resume equals
uninterrupted, the FLOP ledger adds up the logged steps, and masked weights stay zero.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sparselm.cli.common import typed
from sparselm.cli.mst_config import mst_config
from sparselm.errors import ConfigError
from sparselm.flops import DEFAULT_CONVENTION
from sparselm.hooks import TrainHook
from sparselm.methods import mst
from sparselm.methods.layer_drop import LayerDropConfig, LayerDropHook
from sparselm.methods.raptr import RaptrConfig, RaptrHook
from sparselm.methods.stacking import StackingConfig, StackingHook
from sparselm.model import GPT
from sparselm.sparsity.static import StaticSparsity, StaticSparsityConfig


@dataclass(frozen=True)
class RunShape:
    """What a method built from the model also needs to know about the run."""

    total_steps: int
    seq_len: int
    convention: str = DEFAULT_CONVENTION


@dataclass(frozen=True)
class Method:
    """How ``method=<name>`` enters training.

    ``parse`` turns the ``method`` node into the method's typed config (one line naming a bad
    key); ``build`` makes the hooks for this model and run. ``owns_masks``: the hooks keep masks
    (a ``MaskSet``) whose masked weights must stay exactly zero. ``noop``: overrides under which
    the method must train exactly like the dense loop (checked bit for bit by
    tests/test_methods.py).
    ``short_run``: overrides under which the method acts within a dozen steps (schedules and
    mask updates that a full run spreads over thousands), for the invariant tests.
    """

    parse: Callable[[DictConfig], Any]
    build: Callable[[Any, GPT, RunShape], list[TrainHook]]
    owns_masks: bool = False
    noop: tuple[str, ...] = ()
    short_run: tuple[str, ...] = ()
    # (config, n_layer, total_steps) -> hook, for methods that need no model (layer paths);
    # the analysis rebuilds their schedules from a run's config.yaml with it
    from_depth: Callable[[Any, int, int], TrainHook] | None = None


def _plain_loop(node: DictConfig) -> None:
    extra = sorted(k for k in node if k != "name")
    if extra:
        raise ConfigError(f"method.{extra[0]} is not a key of method=none")


def _fields(node: DictConfig) -> DictConfig:
    """The method's own keys: the ``method`` node less the registry's ``name``."""
    return OmegaConf.create({k: node[k] for k in node if k != "name"})


def _build_static(cfg: StaticSparsityConfig, model: GPT, run: RunShape) -> list[TrainHook]:
    return [StaticSparsity.from_config(model.block_linears(), cfg)]


def depth_method(
    config_cls: type,
    hook_cls: type[TrainHook],
    noop: tuple[str, ...],
    short_run: tuple[str, ...] = (),
) -> Method:
    """A method whose hook needs only the model's depth and the run's length (layer paths)."""

    def parse(node: DictConfig) -> Any:
        return typed(config_cls, _fields(node), "method")

    def build(cfg: Any, model: GPT, run: RunShape) -> list[TrainHook]:
        try:
            return [hook_cls(cfg, model.config.n_layer, run.total_steps)]
        except ValueError as e:
            raise ConfigError(f"method: {e}") from None

    return Method(parse=parse, build=build, noop=noop, short_run=short_run, from_depth=hook_cls)


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


# one stage covering the whole depth from the first step: every block runs, unscaled
_FULL_DEPTH = ("method.reference_depth=1", "method.stages=[1]", "method.fractions=null")
# density 1 everywhere, no mask update (so no skipped optimizer step), dense attention
_MST_NOOP = (
    "method.target_reduction=null",
    "method.sparsity.schedule=constant",
    "method.sparsity.level=0.0",
    "method.sparsity.dst.drop_fraction=0.0",
    "method.sparsity.dst.end_frac=0.0",
    "method.hsa.enabled=false",
)
_MST = Method(
    parse=mst_config,
    build=_build_mst,
    owns_masks=True,
    noop=_MST_NOOP,
    # an update every 3 steps costs dense gradients often: 4x is out of reach in 12 steps
    short_run=(
        "method.sparsity.dst.interval=3",
        "method.hsa.stride=8",
        "method.target_reduction=2.0",
    ),
)

METHODS: dict[str, Method] = {
    "none": Method(parse=_plain_loop, build=lambda cfg, model, run: []),
    # SPDF's static masks on the block linears; level 0 keeps every weight (exact x1 masking)
    "static": Method(
        parse=lambda node: typed(StaticSparsityConfig, _fields(node), "method"),
        build=_build_static,
        owns_masks=True,
        noop=("method.level=0.0",),
    ),
    "raptr": depth_method(RaptrConfig, RaptrHook, noop=_FULL_DEPTH),
    "stacking": depth_method(StackingConfig, StackingHook, noop=_FULL_DEPTH),
    "layer_drop": depth_method(
        LayerDropConfig,
        LayerDropHook,
        noop=("method.theta_bar=1.0",),
        short_run=("method.gamma=0.3",),
    ),
    # one schema (conf/method/mst.yaml), different defaults
    "mst": _MST,
    "rigl": _MST,
    "set": _MST,
    "static_sparse": _MST,
}


def method_entry(name: Any) -> Method:
    if name not in METHODS:
        raise ConfigError(f"method.name={name!r} is unknown; allowed: {', '.join(METHODS)}")
    return METHODS[name]


def method_hooks(cfg: DictConfig, model: GPT, total_steps: int) -> list[TrainHook]:
    """The hooks of ``cfg.method`` (a training method on top of the loop) for this model."""
    node = cfg.get("method") or OmegaConf.create({"name": "none"})
    entry = method_entry(node.get("name"))
    parsed = entry.parse(node)
    run = RunShape(
        total_steps=total_steps,
        seq_len=int(OmegaConf.select(cfg, "train.seq_len", default=model.config.block_size)),
        convention=str(OmegaConf.select(cfg, "flops.convention", default=DEFAULT_CONVENTION)),
    )
    return entry.build(parsed, model, run)


def static_level(cfg: DictConfig) -> float:
    """SPDF's mask level (``method=static``), recorded in metrics.json; 0 for any other method."""
    if OmegaConf.select(cfg, "method.name", default="none") != "static":
        return 0.0
    return float(cfg.method.level)
