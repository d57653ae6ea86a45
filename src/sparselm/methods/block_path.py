"""What every depth-wise subnetwork method shares: a per-step block plan, drawn reproducibly.

RaPTr, progressive layer dropping and gradual stacking all run a subset of the blocks at each
step (``GPT.forward(plan=...)``). This module holds the parts they have in common:

* ``step_rng``: a generator seeded by (seed, step) alone, so every micro-batch and every
  data-parallel rank draws the same path, and the global RNG is never touched;
* ``bernoulli_path``: each layer kept independently with its own probability;
* ``BlockPathHook``: the thin hook that hands the plan to the loop, reports the executed
  fraction to the FLOP ledger and decides what AdamW does to the skipped blocks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from sparselm.hooks import TrainHook
from sparselm.model import BlockPlan


def step_rng(seed: int, step: int, salt: int) -> np.random.Generator:
    """A generator that depends on (seed, step, salt) only: same inputs, same draws.

    SeedSequence hashes the three integers, so neighbouring steps get unrelated streams.
    """
    if seed < 0 or step < 0:
        raise ValueError(f"seed and step must be >= 0, got seed={seed}, step={step}")
    return np.random.default_rng(np.random.SeedSequence([salt, seed, step]))


def bernoulli_path(rng: np.random.Generator, keep_probs: Sequence[float]) -> list[int]:
    """Layers kept by independent draws ``u_l < keep_probs[l]``; sorted, as the model runs them.

    One uniform is drawn per layer, fixed or not, so the stream layout does not depend on the
    probabilities and a probability of 1 always keeps its layer.
    """
    u = rng.random(len(keep_probs))
    return [layer for layer, (x, p) in enumerate(zip(u, keep_probs, strict=True)) if x < p]


class BlockPathHook(TrainHook, ABC):
    """Runs ``plan_at(step)`` and nothing else; subclasses say which blocks and at what scale.

    ``freeze_skipped_optimizer``:

    * False (default): a skipped block gets an all-zero gradient, so AdamW still applies its
      momentum and weight decay to it, as when a whole parameter tree is updated each step;
    * True: a skipped block's gradient stays ``None``, which torch's AdamW treats as "not in
      this step": weights, moments and step count are left exactly as they were.
    """

    def __init__(self, n_layer: int, freeze_skipped_optimizer: bool = False) -> None:
        self.n_layer = n_layer
        self.freeze_skipped_optimizer = freeze_skipped_optimizer
        self._block_params: list[list[nn.Parameter]] = []
        self._cache: tuple[int, list[tuple[int, float]]] | None = None

    @abstractmethod
    def plan_at(self, step: int) -> list[tuple[int, float]]:
        """The (layer, residual scale) pairs to run at ``step``: a pure function of the step."""

    def plan(self, step: int) -> list[tuple[int, float]]:
        # the loop asks several times per step (forward, grads, FLOPs, log): draw once
        if self._cache is None or self._cache[0] != step:
            self._cache = (step, self.plan_at(step))
        return self._cache[1]

    def path(self, step: int) -> list[int]:
        return [layer for layer, _ in self.plan(step)]

    def on_train_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        blocks = model.blocks
        if len(blocks) != self.n_layer:
            raise ValueError(
                f"{self.name}: built for {self.n_layer} layers, model has {len(blocks)}"
            )
        self._block_params = [list(block.parameters()) for block in blocks]

    def forward_kwargs(self, step: int) -> dict[str, BlockPlan]:
        return {"plan": self.plan(step)}

    def after_backward(self, step: int) -> None:
        if self.freeze_skipped_optimizer:
            return  # grads of skipped blocks stay None: AdamW skips them
        ran = set(self.path(step))
        for layer, params in enumerate(self._block_params):
            if layer in ran:
                continue
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)

    def flop_factors(self, step: int) -> dict[str, Any]:
        return {"executed_block_frac": len(self.plan(step)) / self.n_layer}
