"""What each variant of a variant-layout study ran (RaPTr, MST, comparison), read back from its
pre-training job (files or W&B run): the lowest seed's resolved config and its first logged
step (where an MST job logs the knob value its FLOP budget solved)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.collect import parse_variant_dir, value_of
from analysis.run_store import RunStore, as_store
from sparselm.flops import DEFAULT_CONVENTION


@dataclass(frozen=True)
class RunSpec:
    """One variant's method and shape (every seed of a variant shares them)."""

    variant: str
    method: dict[str, Any] = field(default_factory=lambda: {"name": "none"})
    model: dict[str, Any] = field(default_factory=dict)
    steps: int = 1
    seq_len: int | None = None
    convention: str = DEFAULT_CONVENTION
    knob_value: float | None = None  # solved by the job (train_log.jsonl), if it solved one

    @property
    def method_name(self) -> str:
        return str(self.method.get("name", "none"))

    @property
    def n_layer(self) -> int:
        return int(self.model.get("n_layer", 1))


def in_order(names: Iterable[str], order: Iterable[str]) -> list[str]:
    """``names`` in a study's canonical ``order``; unknown ones after, alphabetically."""
    found, order = set(names), list(order)
    return [v for v in order if v in found] + sorted(found - set(order))


def spec_from_config(
    variant: str, config: dict[str, Any], log_row: dict[str, Any] | None = None
) -> RunSpec:
    model, train = config.get("model") or {}, config.get("train") or {}
    value = (log_row or {}).get("mst_knob_value")
    return RunSpec(
        variant=variant,
        method=dict(config.get("method") or {"name": "none"}),
        model=dict(model),
        steps=int(train.get("steps", 1)),
        seq_len=train.get("seq_len") or model.get("block_size"),
        convention=(config.get("flops") or {}).get("convention") or DEFAULT_CONVENTION,
        knob_value=float(value) if value is not None else None,
    )


def load_specs(runs: RunStore | Path) -> dict[str, RunSpec]:
    """variant -> RunSpec, from the finished pre-training job of its lowest seed (its config's,
    and its first logged step), in a results folder or among W&B runs."""
    store, found = as_store(runs), {}
    for key in store.keys("pretrain"):  # a fixed order
        label = parse_variant_dir(Path(key).name)
        if label is None:
            continue
        record = store.record(key)
        seed = int(value_of(record.config, "seed", record.config_at))
        if label["variant"] not in found or seed < found[label["variant"]][0]:
            found[label["variant"]] = (seed, key)
    return {
        variant: spec_from_config(
            variant, store.record(key).config, next(iter(store.history(key)), {})
        )
        for variant, (_, key) in found.items()
    }
