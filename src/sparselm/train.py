"""THE training loop, shared by pretraining and fine-tuning.

Methods change training only through ``TrainHook`` objects (see ``hooks.py``); the loop never
asks which method it runs. Batches come from any object with ``train_batch(step, micro)`` and
``val_batches(n)``, both pure functions, so a resumed run sees exactly the same data.

Under torchrun (``TrainRun.dist``) each rank runs its share of a step's micro-batches, hooks
see gradients already averaged over ranks, and only rank 0 writes files (``distributed.py``).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from sparselm import distributed
from sparselm.checkpoint import TrainingState, latest_checkpoint, load_checkpoint, save_checkpoint
from sparselm.distributed import SINGLE, DistContext
from sparselm.errors import ConfigError, DataError, TrainingDivergedError
from sparselm.flops import FlopLedger
from sparselm.hooks import TrainHook
from sparselm.lm_head_loss import ChunkedHeadLoss, LabelledRowsHeadLoss
from sparselm.model import GPT, lm_loss
from sparselm.optim import OptimConfig
from sparselm.progress import Progress
from sparselm.schedules import lr_at
from sparselm.sparsity.stats import measured_sparsity
from sparselm.tracking import NullTracker, Tracker

Batch = tuple[torch.Tensor, torch.Tensor]


class BatchSource(Protocol):
    def train_batch(self, step: int, micro: int) -> Batch: ...
    def val_batches(self, n_batches: int) -> list[Batch]: ...


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    grad_accum: int = 1
    log_every: int = 1
    eval_every: int = 0  # 0: validate only at the end
    eval_batches: int = 4
    ckpt_every: int = 0  # 0: checkpoint only at the end
    keep_checkpoints: int = 2
    precision: str = "auto"  # auto (bf16 autocast on GPU) | bf16 | fp32
    # progress on stderr (rank 0): auto (a bar on a terminal, else lines) | bar | lines | off;
    # lines: one every progress_every_s seconds and, if > 0, every progress_every steps
    progress: str = "auto"
    progress_every_s: float = 30.0
    progress_every: int = 0
    parallel: str = "ddp"  # ddp | fsdp: how torchrun ranks hold the model (one process: unused)
    compile: bool = False  # torch.compile each block and the loss (the hooks see plain modules)
    # torch.compile mode: default | max-autotune-no-cudagraphs | max-autotune | reduce-overhead
    # (the last two capture CUDA graphs)
    compile_mode: str = "default"
    # tokens per chunk of the LM head + cross-entropy (lm_head_loss.py); 0: full logits. Used
    # where the loss is the plain LM loss of a sparselm GPT (no hook reads the logits)
    loss_chunk: int = 0
    # all | labelled: apply the LM head only where a label is set (fine-tuning's completions);
    # same conditions as loss_chunk, which takes precedence when both are set
    head_rows: str = "all"


@dataclass
class TrainRun:
    """Everything one training job needs, built by an entry point."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    batches: BatchSource
    cfg: TrainConfig
    optim: OptimConfig
    out_dir: Path
    hooks: Sequence[TrainHook] = ()
    tracker: Tracker = NullTracker()
    flops_per_token: Callable[[dict[str, Any]], float] | None = None
    config_yaml: str = ""
    dist: DistContext = SINGLE


def train(run: TrainRun, resume: bool = True, stop_at: int | None = None) -> dict[str, Any]:
    """Train to ``cfg.steps`` (or stop early after ``stop_at`` steps); return final metrics."""
    loop = _Loop(run)
    loop.start(resume)
    last = min(run.cfg.steps, stop_at) if stop_at is not None else run.cfg.steps
    cfg = run.cfg
    progress = Progress(
        cfg.progress if run.dist.is_main else "off",
        total=cfg.steps,
        initial=loop.state.step,
        every_s=cfg.progress_every_s,
        every_steps=cfg.progress_every,
    )
    while loop.state.step < last:
        record = loop.step()
        progress.update(record["step"], record["train_loss"], record["tokens"])
    progress.close()
    loop.checkpoint()
    return loop.metrics()


def open_loop(run: TrainRun, resume: bool = False) -> _Loop:
    """A started loop: each ``step()`` runs one optimizer step (benchmarks time it)."""
    loop = _Loop(run)
    loop.start(resume)
    return loop


class _Loop:
    def __init__(self, run: TrainRun) -> None:
        self.run = run
        self.dist = run.dist
        self.micros = self.dist.local_micro_batches(run.cfg.grad_accum)
        self.state = TrainingState()
        self.ledger = FlopLedger()
        self.log_path = Path(run.out_dir) / "train_log.jsonl"
        self.device = next(run.model.parameters()).device
        self.bf16 = run.cfg.precision == "bf16" or (
            run.cfg.precision == "auto" and self.device.type == "cuda"
        )
        # a hook that changes the forward (a block plan) may leave parameters unused in a step
        changes_forward = any(
            type(h).forward_kwargs is not TrainHook.forward_kwargs for h in run.hooks
        )
        self.engine = distributed.wrap_model(
            run.model, self.dist, run.cfg.parallel, find_unused=changes_forward
        )
        self.loss_fn = lm_loss
        if run.cfg.compile:
            _compile_blocks(run.model, run.cfg.compile_mode)
            self.loss_fn = torch.compile(lm_loss, mode=run.cfg.compile_mode)
        self.head_loss = _head_loss(run)
        self.last_val: float | None = None
        self.last_train: float | None = None
        self.wall = 0.0

    def start(self, resume: bool) -> None:
        for hook in self.run.hooks:
            self._start_hook(hook)
        ckpt = latest_checkpoint(self.run.out_dir) if resume else None
        if ckpt is not None:
            self.state = load_checkpoint(
                ckpt, self.run.model, self.run.optimizer, {h.name: h for h in self.run.hooks}
            )
            self.ledger.load_state_dict(self.state.extra.get("ledger", {}))
            self.wall = float(self.state.extra.get("wall_time_s", 0.0))
            self.last_val = self.state.extra.get("last_val")
            self.last_train = self.state.extra.get("last_train")
            if self.dist.is_main:
                print(f"resuming from {ckpt} (step {self.state.step})", file=sys.stderr)
        if self.dist.is_main:
            _truncate_log(self.log_path, self.state.step)  # drop steps logged after the checkpoint

    def _start_hook(self, hook: TrainHook) -> None:
        if not distributed.is_sharded(self.run.model):
            hook.on_train_start(self.run.model, self.run.optimizer)
            return
        try:
            hook.on_train_start(self.run.model, self.run.optimizer)
        except RuntimeError as e:  # e.g. a full-shape mask applied to a DTensor shard
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(
                f"train.parallel=fsdp: the {hook.name} hook cannot work on sharded "
                f"parameters ({first}); use train.parallel=ddp"
            ) from e

    def step(self) -> dict[str, Any]:
        run, step = self.run, self.state.step
        t0 = time.perf_counter()
        o = run.optim
        lr = lr_at(o.lr_schedule, step, o.lr, o.min_lr, o.warmup_steps, run.cfg.steps)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        losses, tokens = self._forward_backward(step)
        for hook in run.hooks:
            hook.after_backward(step)
        grad_norm = distributed.full_tensor(
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.optim.max_grad_norm)
        )
        self._guard(step, losses["train_loss"], float(grad_norm))
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        for hook in run.hooks:
            hook.after_optimizer_step(step)
        self.state.step = step + 1
        self.wall += time.perf_counter() - t0
        self.ledger.add(tokens, self._flops_per_token(step))
        self.last_train = losses["train_loss"]
        record = {
            "step": self.state.step,
            "tokens": self.ledger.tokens,
            "flops_cum": self.ledger.total,
            "lr": lr,
            **losses,
            "grad_norm": float(grad_norm),
            "step_time_s": time.perf_counter() - t0,
        }
        self._periodic(record)
        return record

    def _forward_backward(self, step: int) -> tuple[dict[str, float], int]:
        """This rank's micro-batches; losses and tokens come back summed over all ranks."""
        run = self.run
        kwargs: dict[str, Any] = {}
        for hook in run.hooks:
            kwargs.update(hook.forward_kwargs(step))
        self.engine.train()
        sums: dict[str, torch.Tensor] = {}
        tokens = 0
        last = self.micros[-1]
        for micro in self.micros:
            x, y = (
                t.to(self.device, non_blocking=True) for t in run.batches.train_batch(step, micro)
            )
            with distributed.grad_sync(self.engine, micro == last):
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                    if self.head_loss is not None:
                        out = self.engine(x, labels=y, head_loss=self.head_loss, **kwargs)
                        terms = {"train_loss": out.loss}
                    else:
                        out = self.engine(x, **kwargs)
                        terms = {"train_loss": self.loss_fn(out.logits, y)}
                    for hook in run.hooks:
                        terms.update(hook.extra_losses(x, y, out))
                total = sum(terms.values())
                # DDP/FSDP average over ranks; dividing by this rank's count gives the mean
                (total / len(self.micros)).backward()
            if len(terms) > 1:
                terms["loss_total"] = total
            for k, v in terms.items():  # summed on the device: one sync per step, not per micro
                sums[k] = sums.get(k, 0.0) + v.detach().double()
            tokens += x.numel()
        keys = list(sums)  # the same order on every rank: the same hooks add the same terms
        count = torch.tensor(float(tokens), dtype=torch.float64, device=self.device)
        packed = torch.stack([*(sums[k] for k in keys), count])
        totals = self.dist.sum(packed).tolist()
        n = run.cfg.grad_accum
        return {k: totals[i] / n for i, k in enumerate(keys)}, int(totals[-1])

    def _guard(self, step: int, loss: float, grad_norm: float) -> None:
        if math.isfinite(loss) and math.isfinite(grad_norm):
            return
        kept = latest_checkpoint(self.run.out_dir)
        where = f"last good checkpoint kept at {kept}" if kept else "no checkpoint was written yet"
        raise TrainingDivergedError(
            f"step {step + 1}: train loss {loss} / grad norm {grad_norm} is not finite; "
            f"stopped without updating weights ({where}); try a lower optim.lr"
        )

    def _flops_per_token(self, step: int) -> float:
        if self.run.flops_per_token is None:
            return 0.0
        factors: dict[str, Any] = {}
        for hook in self.run.hooks:
            factors.update(hook.flop_factors(step))
        return self.run.flops_per_token(factors)

    def _periodic(self, record: dict[str, Any]) -> None:
        cfg, step = self.run.cfg, self.state.step
        if step == cfg.steps or (cfg.eval_every and step % cfg.eval_every == 0):
            record["val_loss"] = self.evaluate()
        if step % max(1, cfg.log_every) == 0 or "val_loss" in record or step == cfg.steps:
            self._log(record)
        if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < cfg.steps:
            self.checkpoint()

    def _log(self, record: dict[str, Any]) -> None:
        with distributed.gathered(self.run.model) as model:  # FSDP: every rank takes part
            overall, by_kind = measured_sparsity(model)
        record["sparsity_global"] = overall
        record["sparsity_by_kind"] = by_kind
        for hook in self.run.hooks:
            record.update(hook.log_fields(self.state.step - 1))
        record["tokens_per_s"] = self.ledger.tokens / self.wall if self.wall else None
        if not self.dist.is_main:
            return
        with self.log_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self.run.tracker.log(record, step=record["step"])

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss on the fixed val batches of the model as it stands: the full model with
        dense attention, unless a hook says the model is not whole yet (``eval_kwargs``: a
        method that grows the model validates only what it has grown).

        Replicas split the batches between ranks; a sharded model needs every rank in every
        forward, so each rank then runs them all.
        """
        model = self.run.model
        model.eval()
        batches = self.run.batches.val_batches(self.run.cfg.eval_batches)
        if not distributed.is_sharded(model):
            batches = batches[self.dist.rank :: self.dist.world_size]
        kwargs: dict[str, Any] = {}
        for hook in self.run.hooks:  # the step just trained
            kwargs.update(hook.eval_kwargs(max(0, self.state.step - 1)))
        losses = []
        for x, y in batches:
            x, y = x.to(self.device), y.to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                if self.head_loss is not None:
                    out = model(x, labels=y, head_loss=self.head_loss, **kwargs)
                    losses.append(float(out.loss))
                else:
                    losses.append(float(lm_loss(model(x, **kwargs).logits, y)))
        model.train()
        total, count = sum(losses), len(losses)
        if self.dist.active and not distributed.is_sharded(model):
            total, count = self.dist.sum_floats([total, count], self.device)
        self.last_val = total / count
        return self.last_val

    def checkpoint(self) -> Path:
        self.state.extra = {
            "ledger": self.ledger.state_dict(),
            "wall_time_s": self.wall,
            "last_val": self.last_val,
            "last_train": self.last_train,
            "world_size": self.dist.world_size,
        }
        path = save_checkpoint(
            self.run.out_dir,
            self.state,
            self.run.model,
            self.run.optimizer,
            {h.name: h.state_dict() for h in self.run.hooks},
            self.run.config_yaml,
            self.run.cfg.keep_checkpoints,
            write=self.dist.is_main,
        )
        self.dist.barrier()  # nobody moves on (or exits) before the checkpoint is complete
        return path

    def metrics(self) -> dict[str, Any]:
        val = self.last_val
        return {
            "steps": self.state.step,
            "tokens": self.ledger.tokens,
            "flops_total": self.ledger.total,
            "final_train_loss": self.last_train,
            "final_val_loss": val,
            "final_val_ppl": math.exp(val) if val is not None else None,
            "wall_time_s": self.wall,
            "tokens_per_s": self.ledger.tokens / self.wall if self.wall else None,
        }


def _truncate_log(path: Path, step: int) -> None:
    """Keep the records up to ``step`` (the checkpoint resumed from), atomically.

    A torn last line (a kill mid-write) is dropped: it was written after the last checkpoint.
    An unreadable line before it is damage this cannot repair: one line naming the file."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    keep = []
    for i, line in enumerate(lines):
        try:
            record_step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            if i == len(lines) - 1:
                break
            raise DataError(f"{path}: line {i + 1} is not a JSON record with a step") from None
        if record_step <= step:
            keep.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)


def _head_loss(run: TrainRun) -> ChunkedHeadLoss | LabelledRowsHeadLoss | None:
    """A loss that never builds the full logits, when ``train.loss_chunk`` or
    ``train.head_rows=labelled`` asks for one and it computes the same loss: the model is a
    sparselm GPT and no hook adds a loss term (those read the logits)."""
    if run.cfg.loss_chunk < 0:
        raise ConfigError(f"train.loss_chunk={run.cfg.loss_chunk} must be >= 0 (0: full logits)")
    if run.cfg.head_rows not in ("all", "labelled"):
        allowed = "all, labelled"
        raise ConfigError(f"train.head_rows={run.cfg.head_rows!r} is unknown; allowed: {allowed}")
    reads_logits = any(type(h).extra_losses is not TrainHook.extra_losses for h in run.hooks)
    if reads_logits or not isinstance(run.model, GPT):
        return None
    if run.cfg.loss_chunk > 0:
        return ChunkedHeadLoss(run.cfg.loss_chunk, compiled=run.cfg.compile)
    return LabelledRowsHeadLoss() if run.cfg.head_rows == "labelled" else None


def _compile_blocks(model: nn.Module, mode: str) -> None:
    """Compile every module of an ``nn.ModuleList`` (the blocks) in place.

    Per block rather than the whole model: a block plan that changes from step to step
    (a sampled block path) would recompile the whole graph for each new path, not the blocks.
    """
    for module in list(model.modules()):
        if isinstance(module, nn.ModuleList):
            for block in module:
                block.compile(mode=mode)
