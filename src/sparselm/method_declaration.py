"""What a method module tells the registry: ``METHOD = MethodDeclaration(...)`` (or
``depth_method(...)``) at the end of ``sparselm/methods/<name>.py`` or
``sparselm/sparsity/<name>.py`` registers it as ``method=<name>``.

``sparselm.cli.method_registry`` finds every such module, so adding a method is its module and
its YAML (``conf/method/<name>.yaml``), and ``tests/test_methods.py`` checks the new entry like
every other one. The declaration holds typed objects only (``cfg`` stops at ``cli/``): the
registry turns the YAML's ``method`` node into ``config`` before ``build`` sees it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from sparselm.errors import ConfigError
from sparselm.flops import DEFAULT_CONVENTION
from sparselm.hooks import TrainHook


@dataclass(frozen=True)
class RunShape:
    """What a method built from the model also needs to know about the run."""

    total_steps: int
    seq_len: int
    convention: str = DEFAULT_CONVENTION


@dataclass(frozen=True)
class MethodDeclaration:
    """How a method enters training.

    ``config``: its frozen config dataclass (the YAML's keys, typed, with defaults);
    ``build(config, model, run)``: its hooks for this model and run. ``owns_masks``: the hooks
    keep masks (a ``MaskSet``) whose masked weights must stay exactly zero. ``noop``: Hydra
    overrides under which the method trains exactly like the dense loop; ``short_run``:
    overrides under which it acts within a dozen steps (both for ``tests/test_methods.py``).
    ``from_depth(config, n_layer, total_steps)``: its hook without a model, for a method that
    needs only the depth (the analysis rebuilds layer-path schedules from a run's config.yaml).
    ``names``: the ``method=`` names it answers to, each with its own YAML (one schema, other
    defaults); empty: the module's name.
    """

    config: type
    build: Callable[[Any, nn.Module, RunShape], list[TrainHook]]
    owns_masks: bool = False
    noop: tuple[str, ...] = ()
    short_run: tuple[str, ...] = ()
    from_depth: Callable[[Any, int, int], TrainHook] | None = None
    names: tuple[str, ...] = ()


def depth_method(
    config: type,
    hook: Callable[[Any, int, int], TrainHook],
    noop: tuple[str, ...],
    short_run: tuple[str, ...] = (),
) -> MethodDeclaration:
    """A method whose hook needs only the model's depth and the run's length (layer paths)."""

    def build(cfg: Any, model: nn.Module, run: RunShape) -> list[TrainHook]:
        try:
            return [hook(cfg, model.config.n_layer, run.total_steps)]
        except ValueError as e:
            raise ConfigError(f"method: {e}") from None

    return MethodDeclaration(config, build, noop=noop, short_run=short_run, from_depth=hook)


# the no-op of a staged layer-path method: one stage covering the whole depth from the first
# step, so every block runs, unscaled
FULL_DEPTH = ("method.reference_depth=1", "method.stages=[1]", "method.fractions=null")
