"""Data parallelism under ``torchrun``: the process group, rank rules and model wrapping.

``torchrun`` sets RANK, WORLD_SIZE and LOCAL_RANK. Without them (or with WORLD_SIZE=1)
``session`` yields the single-process context and nothing here touches ``torch.distributed``.

Rank rules the training loop relies on:

* ``train.grad_accum`` counts the micro-batches of one optimizer step over *all* ranks; rank r
  runs global micro-batches ``r·a .. r·a + a − 1`` with ``a = grad_accum / world_size``. The
  batches of a step, and so the run's data order and token budget, do not depend on how many
  processes share them.
* Rank 0 writes every file (logs, checkpoints, metrics, W&B); the others wait at a barrier.
* ``ddp`` wraps the model in ``DistributedDataParallel`` inside the loop; ``fsdp`` shards it
  in place with FSDP2 ``fully_shard``, which must happen before the optimizer and the hooks
  are built, because both keep references to the parameters it replaces.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from sparselm.errors import ConfigError

PARALLEL_MODES = ("ddp", "fsdp")


@dataclass(frozen=True)
class DistContext:
    """Where this process sits among the ranks; the default is a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: torch.device) -> torch.device:
        """Under torchrun a CUDA request means this rank's own GPU (``cuda:LOCAL_RANK``)."""
        if self.active and requested.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return requested

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks (in place; the tensor must live on the model's device)."""
        if self.active:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def sum_floats(self, values: Sequence[float], device: torch.device) -> list[float]:
        if not self.active:
            return [float(v) for v in values]
        return self.sum(torch.tensor(values, dtype=torch.float64, device=device)).tolist()

    def from_main(self, tensors: Sequence[torch.Tensor]) -> None:
        """Rank 0's values into every rank's tensors, in place: a computation whose float
        results could differ by rank (pruning's solves) then agrees everywhere."""
        if not self.active:
            return
        with torch.no_grad():  # parameters are overwritten in place, outside autograd
            for tensor in tensors:
                if tensor.dtype == torch.bool:  # gloo broadcasts no bool tensors
                    carrier = tensor.to(torch.uint8)
                    dist.broadcast(carrier, src=0)
                    tensor.copy_(carrier.bool())
                else:
                    dist.broadcast(tensor, src=0)

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (it may fill a cache); the other ranks follow after."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def local_micro_batches(self, grad_accum: int) -> range:
        """The global micro-batch indices this rank runs in every step."""
        if grad_accum % self.world_size:
            raise ConfigError(
                f"train.grad_accum={grad_accum} is not divisible by the world size "
                f"{self.world_size}; it counts micro-batches over all ranks, so pick a multiple "
                f"of {self.world_size} (and scale train.micro_batch_size to keep the batch)"
            )
        per_rank = grad_accum // self.world_size
        return range(self.rank * per_rank, (self.rank + 1) * per_rank)


SINGLE = DistContext()


def context_from_env() -> DistContext:
    """Rank, world size and local rank as torchrun sets them (single process otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    rank = int(os.environ["RANK"])
    return DistContext(rank, world, int(os.environ.get("LOCAL_RANK", rank)))


@contextmanager
def session(device: str = "auto") -> Iterator[DistContext]:
    """Join the torchrun process group for the block (NCCL on CUDA, gloo on CPU)."""
    ctx = context_from_env()
    if not ctx.active or dist.is_initialized():
        yield ctx
        return
    use_cuda = torch.cuda.is_available() and not str(device).startswith("cpu")
    if use_cuda:
        if ctx.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK={ctx.local_rank} but only {torch.cuda.device_count()} CUDA devices "
                "are visible; start at most one process per GPU (torchrun --nproc_per_node)"
            )
        torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", ctx.local_rank))
    else:
        dist.init_process_group("gloo")
    try:
        yield ctx
    finally:
        dist.destroy_process_group()


def check_parallel(parallel: str) -> None:
    if parallel not in PARALLEL_MODES:
        raise ConfigError(
            f"train.parallel={parallel!r} is unknown; allowed: {', '.join(PARALLEL_MODES)}"
        )


def is_sharded(model: nn.Module) -> bool:
    """True when FSDP2 has sharded ``model`` (its parameters are DTensors)."""
    if not dist.is_available():  # builds without torch.distributed cannot shard anything
        return False
    if "torch.distributed.fsdp" not in sys.modules:
        return False  # nothing imported FSDP, so nothing was sharded (its import costs ~1.5 s)
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def shard_model(model: nn.Module, ctx: DistContext, parallel: str) -> nn.Module:
    """FSDP2 under ``parallel=fsdp`` with several ranks: every module of an ``nn.ModuleList``
    (the transformer blocks) is one shard group, the rest (embeddings, final norm and the tied
    head, which must stay together) the root group. Other cases return ``model`` untouched.

    Sharding happens in place and replaces the parameters: build the optimizer and the hooks
    after this call.
    """
    check_parallel(parallel)
    if parallel != "fsdp" or not ctx.active:
        return model
    from torch.distributed.fsdp import fully_shard

    for module in list(model.modules()):
        if isinstance(module, nn.ModuleList):
            for block in module:
                fully_shard(block)
    fully_shard(model)
    return model


def wrap_model(model: nn.Module, ctx: DistContext, parallel: str, find_unused: bool) -> nn.Module:
    """The module the loop calls for training: DDP around ``model`` when ranks replicate it.

    ``find_unused`` must be true when a step may skip parameters (a block plan): DDP then
    marks them ready after the forward pass, and a parameter that no rank used keeps
    ``grad = None`` exactly as on one process.
    """
    check_parallel(parallel)
    if not ctx.active:
        return model
    if parallel == "fsdp":
        if not is_sharded(model):
            raise ConfigError(
                "train.parallel=fsdp but the model was not sharded before the optimizer was "
                "built (call distributed.shard_model first)"
            )
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)


def grad_sync(engine: nn.Module, sync: bool) -> Any:
    """Context for one micro-batch's backward: reduce gradients over ranks only if ``sync``.

    Non-final micro-batches accumulate locally (DDP ``no_sync``; FSDP skips the
    reduce-scatter), so a step communicates once however many micro-batches it has.
    """
    if sync:
        if is_sharded(engine):
            engine.set_requires_gradient_sync(True)
        return nullcontext()
    if is_sharded(engine):
        engine.set_requires_gradient_sync(False)
        return nullcontext()
    no_sync = getattr(engine, "no_sync", None)
    return no_sync() if no_sync is not None else nullcontext()


@contextmanager
def gathered(model: nn.Module) -> Iterator[nn.Module]:
    """Full parameters on every rank for the block (FSDP all-gathers; a collective)."""
    if not is_sharded(model):
        yield model
        return
    from torch.distributed.fsdp import FSDPModule

    groups = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for m in groups:
        m.unshard()
    try:
        yield model
    finally:
        for m in groups:
            m.reshard()


def full_tensor(value: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a DTensor (e.g. FSDP's gradient norm); others pass through."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value
