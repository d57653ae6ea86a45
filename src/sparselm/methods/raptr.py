"""RaPTr: each step trains a random sub-path of layers; the path grows in stages (raptr.md §2).

Pure parts: ``resolve_stages`` (config -> per-stage expected path length for this model),
``inclusion_prob`` (path length -> p), ``sample_path`` (step -> layers) and ``path_plan``
(layers -> residual scales). ``RaptrHook`` only wires them to the loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sparselm.errors import ConfigError
from sparselm.method_declaration import FULL_DEPTH, depth_method
from sparselm.methods.block_path import BlockPathHook, bernoulli_path, step_rng
from sparselm.schedules import Stage, stage_at

SAMPLINGS = ("bernoulli", "fixed_count")
SCALINGS = ("inverse_p", "none")
LAYER_ALIASES = {"first": 0, "last": -1}
_SALT = 0x52A9  # keeps RaPTr's stream apart from other samplers that share a seed


@dataclass(frozen=True)
class StageScheduleConfig:
    """Stage lengths written for a model of ``reference_depth`` layers (null: this model's).

    On a model of depth L every length is multiplied by L / reference_depth, so 6-8-10-12
    (reference 12) keeps its 0.75 block-FLOP ratio on a 4- or 24-layer model.
    """

    stages: tuple[float, ...] = (6, 8, 10, 12)
    fractions: tuple[float, ...] | None = None  # None: equal stages
    reference_depth: int | None = 12


@dataclass(frozen=True)
class RaptrConfig(StageScheduleConfig):
    fixed_layers: tuple[int | str, ...] = ("first", "last")
    sampling: str = "bernoulli"
    scaling: str = "inverse_p"
    freeze_skipped_optimizer: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLINGS:
            raise ConfigError(f"method.sampling={self.sampling!r} is unknown; allowed: {SAMPLINGS}")
        if self.scaling not in SCALINGS:
            raise ConfigError(f"method.scaling={self.scaling!r} is unknown; allowed: {SCALINGS}")
        if self.seed < 0:
            raise ConfigError(f"method.seed={self.seed} must be >= 0")


def scaled_stages(cfg: StageScheduleConfig, n_layer: int) -> list[Stage]:
    """The configured stages rescaled to ``n_layer`` layers, validated (``method.*`` keys)."""
    if not cfg.stages:
        raise ConfigError("method.stages must list at least one stage")
    fractions = cfg.fractions or tuple(1.0 / len(cfg.stages) for _ in cfg.stages)
    if len(fractions) != len(cfg.stages):
        raise ConfigError(
            f"method.fractions has {len(fractions)} entries for {len(cfg.stages)} stages"
        )
    if min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ConfigError(f"method.fractions={list(fractions)} must be >= 0 and sum to 1")
    ref = cfg.reference_depth or n_layer
    if ref < 1:
        raise ConfigError(f"method.reference_depth={ref} must be >= 1")
    lengths = [float(s) * n_layer / ref for s in cfg.stages]
    if min(lengths) <= 0 or max(lengths) > n_layer + 1e-9:
        raise ConfigError(
            f"method.stages={list(cfg.stages)} (for {ref} layers) must lie in (0, {ref}]; "
            f"set method.reference_depth to the depth they are written for"
        )
    return [Stage(min(n, float(n_layer)), f) for n, f in zip(lengths, fractions, strict=True)]


def resolve_fixed_layers(spec: Sequence[int | str], n_layer: int) -> tuple[int, ...]:
    """``first``/``last`` or (possibly negative) 0-based indices -> sorted distinct layers."""
    out = set()
    for item in spec:
        index = LAYER_ALIASES.get(item, item) if isinstance(item, str) else item
        if isinstance(index, str) or isinstance(index, bool) or not -n_layer <= index < n_layer:
            raise ConfigError(
                f"method.fixed_layers has {item!r}; allowed: first, last or a layer index "
                f"in [{-n_layer}, {n_layer})"
            )
        out.add(index % n_layer)
    return tuple(sorted(out))


def resolve_stages(cfg: RaptrConfig, n_layer: int, n_fixed: int) -> list[Stage]:
    """Per-stage expected path lengths for this model: rescaled, at least the fixed layers
    (they always run), and whole numbers under ``fixed_count`` sampling."""
    stages = scaled_stages(cfg, n_layer)
    out = []
    for s in stages:
        length = max(s.path_len, float(n_fixed))
        if cfg.sampling == "fixed_count":
            length = float(max(n_fixed, min(n_layer, round(length))))
        out.append(Stage(length, s.fraction))
    return out


def inclusion_prob(path_len: float, n_layer: int, n_fixed: int) -> float:
    """p = (ℓ − |I|) / (L − |I|), the chance a non-fixed layer runs; 1 if every layer is fixed."""
    if n_fixed >= n_layer:
        return 1.0
    return min(1.0, max(0.0, (path_len - n_fixed) / (n_layer - n_fixed)))


def sample_path(
    step: int,
    seed: int,
    n_layer: int,
    path_len: float,
    fixed_layers: Sequence[int],
    mode: str = "bernoulli",
) -> list[int]:
    """The sorted layers that run at ``step``; a pure function of its arguments.

    ``bernoulli``: fixed layers always, every other layer independently with p.
    ``fixed_count``: fixed layers plus exactly ``path_len − |I|`` others, uniformly.
    """
    fixed = set(fixed_layers)
    rng = step_rng(seed, step, _SALT)
    if mode == "bernoulli":
        p = inclusion_prob(path_len, n_layer, len(fixed))
        return bernoulli_path(rng, [1.0 if i in fixed else p for i in range(n_layer)])
    if mode == "fixed_count":
        if path_len != int(path_len) or not len(fixed) <= path_len <= n_layer:
            raise ValueError(
                f"fixed_count needs a whole path_len in [{len(fixed)}, {n_layer}], got {path_len}"
            )
        free = [i for i in range(n_layer) if i not in fixed]
        chosen = rng.choice(len(free), size=int(path_len) - len(fixed), replace=False)
        return sorted(fixed | {free[int(i)] for i in chosen})
    raise ValueError(f"unknown sampling mode {mode!r}; allowed: {SAMPLINGS}")


def path_plan(
    path: Sequence[int], fixed_layers: Sequence[int], p: float, scaling: str
) -> list[tuple[int, float]]:
    """(layer, residual scale): 1/p on sampled non-fixed layers under ``inverse_p``, else 1.

    At p = 1 every scale is exactly 1.0, which the model treats as the unscaled residual.
    """
    fixed = set(fixed_layers)
    scale = 1.0 / p if scaling == "inverse_p" and p > 0 else 1.0
    return [(layer, 1.0 if layer in fixed else scale) for layer in path]


def _require_a_free_layer(spec: Sequence[int | str], fixed: Sequence[int], n_layer: int) -> None:
    """Refuse a model whose fixed layers are all its layers: every step would run the full
    model and RaPTr would silently be the dense baseline."""
    if len(fixed) < n_layer:
        return
    listed = ", ".join(str(x) for x in spec)
    raise ConfigError(
        f"method=raptr: model.n_layer={n_layer} with method.fixed_layers=[{listed}] leaves no "
        f"layer to sample (every step would train all {n_layer}); use a deeper model "
        f"(e.g. model.n_layer={n_layer + 2}) or fewer fixed layers (e.g. method.fixed_layers=[])"
    )


class RaptrHook(BlockPathHook):
    """Hands the loop the step's sampled path; evaluation (no plan) runs the full model."""

    name = "raptr"

    def __init__(self, cfg: RaptrConfig, n_layer: int, total_steps: int) -> None:
        super().__init__(n_layer, cfg.freeze_skipped_optimizer)
        self.cfg = cfg
        self.total_steps = total_steps
        self.fixed = resolve_fixed_layers(cfg.fixed_layers, n_layer)
        _require_a_free_layer(cfg.fixed_layers, self.fixed, n_layer)
        self.stages = resolve_stages(cfg, n_layer, len(self.fixed))

    def stage(self, step: int) -> tuple[int, Stage, float]:
        index, stage = stage_at(step, self.total_steps, self.stages)
        return index, stage, inclusion_prob(stage.path_len, self.n_layer, len(self.fixed))

    def plan_at(self, step: int) -> list[tuple[int, float]]:
        _, stage, p = self.stage(step)
        path = sample_path(
            step, self.cfg.seed, self.n_layer, stage.path_len, self.fixed, self.cfg.sampling
        )
        return path_plan(path, self.fixed, p, self.cfg.scaling)

    def log_fields(self, step: int) -> dict[str, Any]:
        index, stage, p = self.stage(step)
        return {
            "raptr_stage": index,
            "raptr_p": p,
            "raptr_expected_len": stage.path_len,
            "path_len": len(self.plan(step)),
        }


METHOD = depth_method(RaptrConfig, RaptrHook, noop=FULL_DEPTH)
