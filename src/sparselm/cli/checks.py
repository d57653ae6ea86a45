"""Value checks every training and evaluation job runs on its composed config, before it
builds or writes anything: a bad value is one line naming the key, never a traceback later."""

from __future__ import annotations

import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sparselm.errors import ConfigError

# Keys read as booleans outside the typed dataclasses (whose fields ``typed`` checks). Only a
# real boolean passes: ``resume=no`` is the string "no", which Python would read as true.
BOOL_KEYS = ("resume", "overwrite", "finetune.keep_mask", "logger.enabled")
# key -> smallest allowed value; null is allowed where the config's default is null
INT_KEYS = {
    "seed": None,
    "task.subset_seed": None,
    "train.steps": 1,
    "train.max_steps": 1,
    "train.micro_batch_size": 1,
    "train.grad_accum": 1,
    "train.seq_len": 1,
    "train.log_every": 1,
    "train.eval_every": 0,
    "train.eval_batches": 1,
    "train.ckpt_every": 0,
    "train.keep_checkpoints": 0,
}
NULLABLE = ("train.steps", "train.max_steps")
POSITIVE_FLOAT_KEYS = ("train.epochs",)
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")

_UNSET = object()


def check_job(cfg: DictConfig, seq_len_within_block: bool = False) -> None:
    """Check the keys this config has; ``seq_len_within_block``: pretraining, where the
    windows are ``train.seq_len`` tokens and must fit the model's ``block_size``."""
    for key in BOOL_KEYS:
        value = _get(cfg, key)
        if value is not _UNSET and not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} must be true or false")
    for key, low in INT_KEYS.items():
        _check_int(_get(cfg, key), key, low)
    for key in POSITIVE_FLOAT_KEYS:
        value = _get(cfg, key)
        if value is _UNSET:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"{key}={value!r} must be a number > 0")
    device = _get(cfg, "device")
    if device is not _UNSET and not (isinstance(device, str) and DEVICE.fullmatch(device)):
        raise ConfigError(f"device={device!r} is unknown; allowed: auto, cpu, cuda, cuda:N, mps")
    if seq_len_within_block:
        _check_seq_len(cfg)


def _check_int(value: Any, key: str, low: int | None) -> None:
    if value is _UNSET or (value is None and key in NULLABLE):
        return
    if isinstance(value, bool) or not isinstance(value, int):
        null = " or null" if key in NULLABLE else ""
        raise ConfigError(f"{key}={value!r} must be an integer{null}")
    if low is not None and value < low:
        raise ConfigError(f"{key}={value} must be >= {low}")


def _check_seq_len(cfg: DictConfig) -> None:
    seq_len, block = _get(cfg, "train.seq_len"), _get(cfg, "model.block_size")
    if isinstance(block, int) and isinstance(seq_len, int) and seq_len > block:
        raise ConfigError(
            f"train.seq_len={seq_len} is larger than model.block_size={block} "
            "(the longest sequence the model takes)"
        )


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=_UNSET)
