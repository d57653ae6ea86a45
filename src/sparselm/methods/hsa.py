"""Hybrid sparse attention (HSA, mst.md §2.4): a fixed sparse pattern during a window of steps.

Inside the window, training forwards get ``attn_mask=`` an ``AttentionPattern`` (one for every
layer, or a per-layer list with ``None`` for dense layers); outside it, nothing, so the model
runs dense causal attention. The window is ``[start_frac, end_frac)`` of the run, with
``start_step`` / ``end_step`` overriding either bound, or a callable ``active(step)`` handed to
the hook by another component (e.g. MST's ultra-sparsification phase).

Validation is dense: ``train._Loop.evaluate`` calls ``model(x)`` without any hook's
``forward_kwargs``. The reference validates with the sparse pattern inside the window; that
is not offered (``eval_dense`` must stay true). The hook holds no state: the pattern at step t
is a function of t, so resumed runs match uninterrupted ones.

FLOPs: ``flops.forward_flops_per_token`` multiplies a convention's attention term by
``attn_density``. Under ``megatron_full_attn`` and ``chinchilla`` that term counts the full
T×T score matrix (the masked upper half included), and ``flop_basis`` says what a pattern
reports against it:

- ``full`` (default, mst.md §4 as written, the basis of MST's 4× target): its allowed pairs
  over T². Dense attention is then counted over T² but a pattern over its causal pairs only,
  so the two terms count different things (4.16× for the default schedule on GPT-2 Small);
- ``causal``: its allowed pairs over the T(T+1)/2 causal pairs, i.e. the share of the dense
  causal attention it replaces; both terms then count the same kind of pair (3.96×).

Under ``causal_half_attn`` the term counts the causal half, so a pattern always reports pairs
over T(T+1)/2 (4.17×). A dense layer reports 1 either way; the step's factor is the mean
over layers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparselm.attention.patterns import DEFAULT_STRIDE, check_pattern, check_stride, density
from sparselm.attention.routes import ROUTES, AttentionPattern
from sparselm.errors import ConfigError
from sparselm.flops import CONVENTIONS, DEFAULT_CONVENTION
from sparselm.hooks import TrainHook

ActiveFn = Callable[[int], bool]
FLOP_BASES = ("full", "causal")  # see the module docstring


@dataclass(frozen=True)
class HSAConfig:
    pattern: str = "sparse"  # local | strided | sparse | fixed | dense
    stride: int = DEFAULT_STRIDE  # w: band width, stride and block size
    # w as a share of the run's context T (w = round(T × this)); null: `stride` as written
    stride_frac: float | None = None
    # [decision] default window = the ultra-sparsification phase of mst.md §2.3 (t_w=0.1, t_u=0.75)
    start_frac: float = 0.1
    end_frac: float = 0.85
    start_step: int | None = None  # overrides start_frac
    end_step: int | None = None  # overrides end_frac
    layer_pattern: tuple[str, ...] | None = None  # per layer, tiled over depth; replaces pattern
    route: str = "auto"  # auto | mask | blocked | flex (attention.routes)
    eval_dense: bool = True
    seq_len: int | None = None  # T of the FLOP densities; None: the model's block_size
    flops_convention: str = DEFAULT_CONVENTION  # the run's flops.convention
    flop_basis: str = "full"  # full | causal: a pattern's density under a full-T×T convention

    def __post_init__(self) -> None:
        check_pattern(self.pattern)
        check_stride(self.stride)
        if self.stride_frac is not None and not 0.0 < self.stride_frac <= 1.0:
            raise ConfigError(f"hsa.stride_frac={self.stride_frac} must be in (0, 1] or null")
        for key in ("start_frac", "end_frac"):
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"hsa.{key}={value} must be in [0, 1]")
        for key in ("start_step", "end_step", "seq_len"):
            value = getattr(self, key)
            bad = isinstance(value, bool) or not isinstance(value, int) or value < 0
            if value is not None and bad:
                raise ConfigError(f"hsa.{key}={value!r} must be a non-negative integer or null")
        if self.seq_len == 0:
            raise ConfigError("hsa.seq_len=0 must be positive")
        if self.layer_pattern is not None:
            if not self.layer_pattern:
                raise ConfigError("hsa.layer_pattern=[] must list at least one pattern or be null")
            for p in self.layer_pattern:
                check_pattern(p, "hsa.layer_pattern")
        if self.route not in ROUTES:
            raise ConfigError(f"hsa.route={self.route!r} is unknown; allowed: {', '.join(ROUTES)}")
        if not self.eval_dense:
            raise ConfigError(
                "hsa.eval_dense=false is not supported: validation runs the full model "
                "with dense attention"
            )
        if self.flops_convention not in CONVENTIONS:
            raise ConfigError(
                f"hsa.flops_convention={self.flops_convention!r} is unknown; "
                f"allowed: {', '.join(CONVENTIONS)}"
            )
        if self.flop_basis not in FLOP_BASES:
            raise ConfigError(
                f"hsa.flop_basis={self.flop_basis!r} is unknown; allowed: {', '.join(FLOP_BASES)}"
            )


def step_window(cfg: HSAConfig, total_steps: int) -> tuple[int, int]:
    """[start, end) steps of the window; explicit steps win over fractions."""
    start = cfg.start_step if cfg.start_step is not None else round(cfg.start_frac * total_steps)
    end = cfg.end_step if cfg.end_step is not None else round(cfg.end_frac * total_steps)
    if end < start:
        raise ConfigError(f"hsa window: end step {end} is before start step {start}")
    return start, end


def layer_patterns(cfg: HSAConfig, n_layer: int) -> list[str]:
    """The pattern of every layer: ``layer_pattern`` tiled over depth, else ``pattern``."""
    if cfg.layer_pattern is None:
        return [cfg.pattern] * n_layer
    if n_layer % len(cfg.layer_pattern):
        raise ConfigError(
            f"hsa.layer_pattern has {len(cfg.layer_pattern)} entries, which does not "
            f"divide n_layer={n_layer}"
        )
    return [cfg.layer_pattern[i % len(cfg.layer_pattern)] for i in range(n_layer)]


def flop_attn_density(
    pattern: str, seq_len: int, stride: int, convention: str, basis: str = "full"
) -> float:
    """``attn_density`` of one layer under ``convention`` and ``basis`` (module docstring)."""
    if basis not in FLOP_BASES:
        raise ConfigError(f"hsa.flop_basis={basis!r} is unknown; allowed: {', '.join(FLOP_BASES)}")
    if pattern == "dense":
        return 1.0
    return density(
        pattern, seq_len, stride, "causal" if convention == "causal_half_attn" else basis
    )


class HSAHook(TrainHook):
    name = "hsa"

    def __init__(
        self,
        cfg: HSAConfig,
        n_layer: int,
        total_steps: int,
        active: ActiveFn | None = None,
    ) -> None:
        self.cfg = cfg
        self.patterns = layer_patterns(cfg, n_layer)
        self.window = step_window(cfg, total_steps)
        self.active = active
        self.seq_len = cfg.seq_len
        specs = [
            None if p == "dense" else AttentionPattern(p, cfg.stride, cfg.route)
            for p in self.patterns
        ]
        # one object for a uniform pattern, else one entry per layer (None: dense)
        self.attn_mask: Any = specs[0] if len(set(self.patterns)) == 1 else specs

    def on_train_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if self.seq_len is None:
            self.seq_len = int(model.config.block_size)

    def is_on(self, step: int) -> bool:
        if self.active is not None:
            return bool(self.active(step))
        start, end = self.window
        return start <= step < end

    def forward_kwargs(self, step: int) -> dict[str, Any]:
        if not self.is_on(step) or self.attn_mask is None:
            return {}
        return {"attn_mask": self.attn_mask}

    def attn_density(self) -> float:
        """Mean per-layer ``attn_density`` while the window is on."""
        if self.seq_len is None:
            raise ConfigError("hsa.seq_len=null: set it, or start training so the model gives it")
        per_layer = [
            flop_attn_density(
                p, self.seq_len, self.cfg.stride, self.cfg.flops_convention, self.cfg.flop_basis
            )
            for p in self.patterns
        ]
        return sum(per_layer) / len(per_layer)

    def flop_factors(self, step: int) -> dict[str, Any]:
        return {"attn_density": self.attn_density()} if self.is_on(step) else {}

    def log_fields(self, step: int) -> dict[str, Any]:
        on = self.is_on(step)
        return {"hsa_on": on, "attn_density": self.attn_density() if on else 1.0}
