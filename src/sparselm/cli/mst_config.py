"""Parse the ``method`` node of conf/method/{mst,rigl,set,static_sparse}.yaml into ``MSTConfig``.

The allowed keys come from the dataclasses they fill, so the YAML and this parser cannot drift
apart: a key the YAML gains without a field is refused by name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sparselm.cli.common import typed
from sparselm.errors import ConfigError
from sparselm.methods import mst
from sparselm.methods.hsa import HSAConfig
from sparselm.sparsity.dst_schedule import DSTConfig
from sparselm.sparsity.variation import VariationConfig


@dataclass(frozen=True)
class MaskKeys:
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


def _names(cls: type, without: tuple[str, ...] = ()) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in without)


# decay_embeddings is read by conf/optim (optim.decay_embeddings), not by the method
TOP_KEYS = ("name", "target_reduction", "solve_knob", "sparsity", "hsa", "seed", "decay_embeddings")
SPARSITY_KEYS = (*_names(MaskKeys), "dst", "variation")
# the mask keys shared with DSTConfig are written once, under method.sparsity
DST_KEYS = _names(DSTConfig, without=(*_names(MaskKeys), "seed"))
VARIATION_KEYS = _names(VariationConfig)
# HSAConfig's run-derived fields (T, convention) are filled by the method, not the YAML
HSA_KEYS = ("enabled", "window", *_names(HSAConfig, ("eval_dense", "seq_len", "flops_convention")))


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
    top = _node(node, "method", TOP_KEYS)
    sparsity = _node(top.get("sparsity"), "method.sparsity", SPARSITY_KEYS)
    scalars = {k: v for k, v in sparsity.items() if k not in ("dst", "variation")}
    masks = typed(MaskKeys, OmegaConf.create(scalars), "method.sparsity")
    dst_node = OmegaConf.create(_node(sparsity.get("dst"), "method.sparsity.dst", DST_KEYS))
    var_node = _node(sparsity.get("variation"), "method.sparsity.variation", VARIATION_KEYS)
    hsa = _node(top.get("hsa"), "method.hsa", HSA_KEYS)
    enabled = typed(_Enabled, OmegaConf.create({"enabled": hsa.pop("enabled", True)}), "method.hsa")
    window = hsa.pop("window", "ultra")
    try:
        dst = typed(
            DSTConfig,
            dst_node,
            "method.sparsity.dst",
            distribution=masks.distribution,
            init=masks.init,
            sparsify_lm_head=masks.sparsify_lm_head,
            erk_power=masks.erk_power,
            seed=top.get("seed", 0),
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
