"""Every training method a run can name with ``method=<name>``, in one entry shape.

A method is two files: its module under ``sparselm/methods`` or ``sparselm/sparsity`` (config
dataclass, hooks, and at its end ``METHOD = MethodDeclaration(...)`` from
``sparselm.method_declaration``) and its YAML, ``conf/method/<name>.yaml``. ``declared_methods``
registers every module that declares one, under the module's name (SPDF's static masks are
``method=static``, like any other) or the names it declares (the MST family, ``mst_family.py``:
four names over one schema). Only ``method=none`` is written here. A config is filled key by
key (``typed``) unless its type has a parser of its own (the MST family's nested schema,
``cli/mst_config.py``). The training loop never learns a method's name, and
``tests/test_methods.py`` runs the same invariants over every entry: the declared no-op trains
exactly like dense, resume equals uninterrupted, the FLOP ledger adds up the logged steps, and
masked weights stay zero.
"""

from __future__ import annotations

import importlib
import pkgutil
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
    """Every module of ``packages`` that declares ``METHOD``, by module name (or by the names
    the declaration gives)."""
    found = {}
    for package in packages:
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            declared = getattr(module, "METHOD", None)
            if isinstance(declared, MethodDeclaration):
                found.update(dict.fromkeys(declared.names or (info.name,), declared))
    return found


METHODS: dict[str, MethodDeclaration] = {
    "none": MethodDeclaration(PlainLoop, lambda cfg, model, run: []),
    **declared_methods([sparselm.methods, sparselm.sparsity]),
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
