"""Timing one training step of a variant for benchmarks/gpu_throughput.py, and its table cells.

A variant is a list of hooks on a fresh model; ``run_variant`` times ``sparselm.train``'s own
loop step under them and reports the FLOP-ledger cost the hooks announce for the timed steps.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sparselm.flops import ModelShape, train_flops_per_token
from sparselm.hooks import TrainHook
from sparselm.model import GPT, GPTConfig
from sparselm.optim import OptimConfig, build_adamw
from sparselm.train import TrainConfig, TrainRun, open_loop

NEVER = 10**9  # a step the loop never reaches: no eval, log or checkpoint fires

HookBuilder = Callable[[GPT], list[TrainHook]]


@dataclass(frozen=True)
class Setting:
    device: torch.device
    model: GPTConfig
    batch: int
    seq: int
    steps: int
    warmup: int
    compile: bool
    matmul_sizes: tuple[int, ...]
    nm_tokens: int  # rows of the activation in the 2:4 table (batch x seq on GPU)
    stride: int  # w of the sparse attention patterns
    loss_chunk: int = 0  # train.loss_chunk: tokens per chunk of the LM head + loss; 0: full
    compile_mode: str = "default"  # train.compile_mode
    sdpa: str | None = None  # an SDPA backend to force (SDPBackend name, e.g. "cudnn"); None: auto


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, iters: int, warmup: int = 3) -> float:
    """Median seconds of ``fn`` over ``iters`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class FixedTokens:
    """Four random batches on the device, cycled: data loading is not what is measured."""

    def __init__(self, vocab: int, batch: int, seq: int, device: torch.device) -> None:
        g = torch.Generator().manual_seed(0)
        pool = [torch.randint(0, vocab, (batch, seq + 1), generator=g) for _ in range(4)]
        self.pool = [(t[:, :-1].to(device), t[:, 1:].to(device)) for t in pool]

    def train_batch(self, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pool[step % len(self.pool)]

    def val_batches(self, n_batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.pool[:n_batches]


def six_n_flops(model: GPT, seq: int) -> float:
    """Training FLOPs per token: 6N (N without position embeddings) + 12·L·d·T attention."""
    cfg = model.config
    return 6 * model.num_params(non_embedding=True) + 12 * cfg.n_layer * cfg.d_model * seq


def model_shape(s: Setting) -> ModelShape:
    m = s.model
    return ModelShape(m.n_layer, m.d_model, m.n_head, m.d_ff, s.seq, m.vocab_size)


def hook_factors(hooks: list[TrainHook], step: int) -> dict[str, Any]:
    """What the loop's FLOP ledger is told about this step (``_Loop._flops_per_token``)."""
    factors: dict[str, Any] = {}
    for hook in hooks:
        factors.update(hook.flop_factors(step))
    return factors


def run_variant(
    s: Setting,
    hooks_for: HookBuilder,
    at_step: int | None = None,
    prepare: Callable[[list[TrainHook]], None] | None = None,
) -> dict[str, Any]:
    """Seconds per step, peak memory and the hooks' FLOP-ledger cost for one variant.

    With ``at_step`` every call runs that step of the hooks' schedules (the loop's counter is
    set back before each call), so a step deep into a run is timed without running up to it;
    ``prepare(hooks)`` runs once after the loop starts, to give the hooks the state that step
    finds (e.g. its masks).
    """
    if s.sdpa is None:
        return _run_variant(s, hooks_for, at_step, prepare)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}
    with sdpa_kernel([backend[s.sdpa]]):
        return _run_variant(s, hooks_for, at_step, prepare)


def _run_variant(
    s: Setting,
    hooks_for: HookBuilder,
    at_step: int | None,
    prepare: Callable[[list[TrainHook]], None] | None,
) -> dict[str, Any]:
    torch.manual_seed(0)  # every variant starts from the same weights
    model = GPT(s.model).to(s.device)
    hooks = hooks_for(model)
    optim = OptimConfig(warmup_steps=0)
    cfg = TrainConfig(
        steps=NEVER,
        log_every=NEVER,
        progress=False,
        compile=s.compile,
        compile_mode=s.compile_mode,
        loss_chunk=s.loss_chunk,
    )
    batches = FixedTokens(s.model.vocab_size, s.batch, s.seq, s.device)
    with tempfile.TemporaryDirectory() as tmp:
        run = TrainRun(model, build_adamw(model, optim), batches, cfg, optim, Path(tmp), hooks)
        loop = open_loop(run)
        if prepare is not None:
            prepare(hooks)

        def one_step() -> None:
            if at_step is not None:
                loop.state.step = at_step
            loop.step()

        for _ in range(s.warmup):  # compilation and allocator warm-up
            one_step()
        if s.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(s.device)
        first = loop.state.step
        seconds = timed(one_step, s.device, iters=s.steps, warmup=0)
    steps = [at_step] * s.steps if at_step is not None else list(range(first, first + s.steps))
    factors = [hook_factors(hooks, step) for step in steps]
    ledger = [train_flops_per_token(model_shape(s), **f)["total"] for f in factors]
    log: dict[str, Any] = {}
    for hook in hooks:
        log.update(hook.log_fields(steps[-1]))
    peak = torch.cuda.max_memory_allocated(s.device) if s.device.type == "cuda" else None
    return {
        "seconds": seconds,
        "peak_bytes": peak,
        "ledger_flops": statistics.mean(ledger),
        "factors": factors[-1],
        "log": log,
        "six_n": six_n_flops(model, s.seq),
    }


def measure(s: Setting, name: str, build: HookBuilder, **kwargs: Any) -> dict[str, Any]:
    print(f"timing {name} ...", file=sys.stderr, flush=True)
    return run_variant(s, build, **kwargs)


def measure_or_none(
    s: Setting, name: str, build: HookBuilder, **kwargs: Any
) -> dict[str, Any] | None:
    """``measure``, or None (traceback on stderr) when the step fails to compile or run, so
    one broken route costs its row and not the rest of a GPU run's report."""
    try:
        return measure(s, name, build, **kwargs)
    except RuntimeError:
        traceback.print_exc()
        return None


def failed_row(first: list[str], width: int) -> str:
    cells = [*first, "failed (traceback on stderr)"] + [""] * (width - len(first) - 1)
    return "| " + " | ".join(cells) + " |"


def speedups(dense: dict[str, Any], r: dict[str, Any]) -> list[str]:
    """FLOP-predicted and measured speedup cells of a variant against dense."""
    return [
        f"{dense['ledger_flops'] / r['ledger_flops']:.2f}x",
        f"{dense['seconds'] / r['seconds']:.3f}x",
    ]


def table_head(head: list[str]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
