"""Every training method a run can name with ``method=<name>``, in one entry shape.

A method is two files: its module under ``sparselm/methods`` or ``sparselm/sparsity`` (config
dataclass, hooks, and at its end ``METHOD = MethodDeclaration(...)`` from
``sparselm.method_declaration``) and its YAML, ``conf/method/<name>.yaml``. ``declared_methods``
registers every module that declares one, under the module's name (SPDF's static masks are
``method=static``, like any other). Only the MST family is written here: four names over one
nested schema with a parser of its own (``cli/mst_config.py``). The training loop never learns
a method's name, and ``tests/test_methods.py`` runs the same invariants over every entry: the
declared no-op trains exactly like dense, resume equals uninterrupted, the FLOP ledger adds up
the logged steps, and masked weights stay zero.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from omegaconf import DictConfig, OmegaConf

import sparselm.methods
import sparselm.sparsity
from sparselm.cli.common import typed
from sparselm.cli.mst_config import mst_config
from sparselm.errors import ConfigError
from sparselm.flops import DEFAULT_CONVENTION
from sparselm.hooks import TrainHook
from sparselm.method_declaration import MethodDeclaration, RunShape
from sparselm.methods import mst
from sparselm.model import GPT


@dataclass(frozen=True)
class PlainLoop:
    """``method=none``: the loop alone, no keys."""


def _plain_loop(node: DictConfig) -> PlainLoop:
    extra = sorted(k for k in node if k != "name")
    if extra:
        raise ConfigError(f"method.{extra[0]} is not a key of method=none")
    return PlainLoop()


def _fields(node: DictConfig) -> DictConfig:
    """The method's own keys: the ``method`` node less the registry's ``name``."""
    return OmegaConf.create({k: node[k] for k in node if k != "name"})


# configs with a parser of their own; every other one is flat, filled key by key by ``typed``
_PARSERS: dict[type, Callable[[DictConfig], Any]] = {
    PlainLoop: _plain_loop,
    mst.MSTConfig: mst_config,
}


def parse_method(declared: MethodDeclaration, node: DictConfig) -> Any:
    """The method's typed config from the ``method`` node; a bad key fails in one line."""
    parser = _PARSERS.get(declared.config)
    return parser(node) if parser else typed(declared.config, _fields(node), "method")


def declared_methods(packages: Iterable[ModuleType]) -> dict[str, MethodDeclaration]:
    """Every module of ``packages`` that declares ``METHOD``, by module name."""
    found = {}
    for package in packages:
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            declared = getattr(module, "METHOD", None)
            if isinstance(declared, MethodDeclaration):
                found[info.name] = declared
    return found


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


# density 1 everywhere, no mask update (so no skipped optimizer step), dense attention
_MST_NOOP = (
    "method.target_reduction=null",
    "method.sparsity.schedule=constant",
    "method.sparsity.level=0.0",
    "method.sparsity.dst.drop_fraction=0.0",
    "method.sparsity.dst.end_frac=0.0",
    "method.hsa.enabled=false",
)
_MST = MethodDeclaration(
    mst.MSTConfig,
    _build_mst,
    owns_masks=True,
    noop=_MST_NOOP,
    # an update every 3 steps costs dense gradients often: 4x is out of reach in 12 steps
    short_run=(
        "method.sparsity.dst.interval=3",
        "method.hsa.stride=8",
        "method.target_reduction=2.0",
    ),
)

METHODS: dict[str, MethodDeclaration] = {
    "none": MethodDeclaration(PlainLoop, lambda cfg, model, run: []),
    **declared_methods([sparselm.methods, sparselm.sparsity]),
    # one schema (conf/method/mst.yaml), different defaults
    "mst": _MST,
    "rigl": _MST,
    "set": _MST,
    "static_sparse": _MST,
}


def method_entry(name: Any) -> MethodDeclaration:
    if name not in METHODS:
        raise ConfigError(f"method.name={name!r} is unknown; allowed: {', '.join(METHODS)}")
    return METHODS[name]


def method_hooks(cfg: DictConfig, model: GPT, total_steps: int) -> list[TrainHook]:
    """The hooks of ``cfg.method`` (a training method on top of the loop) for this model."""
    node = cfg.get("method") or OmegaConf.create({"name": "none"})
    entry = method_entry(node.get("name"))
    parsed = parse_method(entry, node)
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
