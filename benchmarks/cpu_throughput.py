"""Training throughput, dense vs static sparsity, through the real training step.

    python benchmarks/cpu_throughput.py [--steps N] [--warmup N] [--repeats N]
                                        [--device cpu|cuda] [--out results.md]

Each timed step is ``sparselm.train``'s own loop step (lr schedule, forward, loss, backward,
hooks, grad clip, AdamW, hooks), so the sparse run pays exactly what training pays for its
masks. Masked weights are still multiplied by dense kernels, so the measured speedup is ~1.0x;
the interesting number on CPU is the masking overhead, whose target is <= 5 %.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from sparselm.flops import ModelShape, conf_dir, load_model_config, reduction, train_flops_per_token
from sparselm.hooks import TrainHook
from sparselm.model import GPT, GPTConfig
from sparselm.optim import OptimConfig, build_adamw
from sparselm.sparsity.static import StaticSparsity, StaticSparsityConfig
from sparselm.sparsity.stats import measured_sparsity
from sparselm.train import TrainConfig, TrainRun, _Loop  # the loop's step, not a copy of it

TARGET_OVERHEAD = 0.05
NEVER = 10**9  # a step count the benchmark never reaches: no eval, log or checkpoint fires


@dataclass(frozen=True)
class Size:
    name: str  # conf/model/<name>.yaml
    scale: str  # conf/scale/<scale>.yaml supplies the vocabulary it is trained with
    batch: int
    seq: int
    cuda_only: bool = False


SIZES = (
    Size("smoke", "smoke", 8, 64),
    Size("tiny", "tiny", 8, 128),
    Size("gpt2_small", "gpu", 32, 1024, cuda_only=True),
)


class FixedBatches:
    """A few pre-drawn random batches, cycled: data loading is not what is measured."""

    def __init__(self, vocab: int, batch: int, seq: int, device: torch.device) -> None:
        g = torch.Generator().manual_seed(0)
        tokens = [torch.randint(0, vocab, (batch, seq + 1), generator=g) for _ in range(4)]
        self.pool = [(t[:, :-1].to(device), t[:, 1:].to(device)) for t in tokens]

    def train_batch(self, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pool[step % len(self.pool)]

    def val_batches(self, n_batches: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.pool[:n_batches]


def model_config(size: Size) -> GPTConfig:
    """Shape from conf/model, vocabulary from the scale that trains it, context = size.seq."""
    cfg = load_model_config(size.name)
    # plain YAML: the GPU benchmarks import this module where OmegaConf is not installed
    scale = yaml.safe_load((conf_dir() / "scale" / f"{size.scale}.yaml").read_text())
    vocab = (scale.get("tokenizer") or {}).get("vocab_size", cfg["vocab_size"])
    keys = ("n_layer", "n_head", "d_model", "d_ff", "bias", "dropout")
    return GPTConfig(vocab_size=int(vocab), block_size=size.seq, **{k: cfg[k] for k in keys})


class TimedHook(TrainHook):
    """Delegates to a hook and times its per-step work: the masking cost, measured directly.

    Only the points a static-sparsity step uses are forwarded; the benchmark never reaches a
    log, eval or checkpoint, so log_fields/state_dict are never asked for.
    """

    def __init__(self, inner: TrainHook, sync: Callable[[], None]) -> None:
        self.inner, self.name, self.sync = inner, inner.name, sync
        self.seconds, self.steps = 0.0, 0

    def _timed(self, fn: Callable[[int], None], step: int) -> None:
        self.sync()  # on CUDA, do not bill earlier queued kernels to the hook
        t0 = time.perf_counter()
        fn(step)
        self.sync()
        self.seconds += time.perf_counter() - t0

    def on_train_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.inner.on_train_start(model, optimizer)

    def after_backward(self, step: int) -> None:
        self._timed(self.inner.after_backward, step)

    def after_optimizer_step(self, step: int) -> None:
        self._timed(self.inner.after_optimizer_step, step)
        self.steps += 1

    def flop_factors(self, step: int) -> dict[str, Any]:
        return self.inner.flop_factors(step)


def build_loop(
    cfg: GPTConfig,
    batches: FixedBatches,
    level: float,
    device: torch.device,
    out_dir: Path,
    sync: Callable[[], None],
) -> _Loop:
    torch.manual_seed(0)  # dense and sparse start from the same weights
    model = GPT(cfg).to(device)
    optim = OptimConfig(warmup_steps=0)
    hooks = []
    if level > 0:
        static = StaticSparsity.from_config(
            model.block_linears(), StaticSparsityConfig(level=level)
        )
        hooks.append(TimedHook(static, sync))
    train_cfg = TrainConfig(steps=NEVER, log_every=NEVER, progress=False)
    run = TrainRun(
        model, build_adamw(model, optim), batches, train_cfg, optim, out_dir, hooks=hooks
    )
    loop = _Loop(run)
    loop.start(resume=False)
    return loop


def seconds_per_step(loop: _Loop, steps: int, sync: Callable[[], None]) -> float:
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        loop.step()
    sync()
    return (time.perf_counter() - t0) / max(1, steps)


def measure(size: Size, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Median s/step of interleaved dense/sparse repeats and their paired ratios."""
    cfg = model_config(size)
    batches = FixedBatches(cfg.vocab_size, size.batch, size.seq, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {"dense": [], "sparse": []}
    with tempfile.TemporaryDirectory() as tmp:
        loops = {
            "dense": build_loop(cfg, batches, 0.0, device, Path(tmp) / "dense", sync),
            "sparse": build_loop(cfg, batches, args.level, device, Path(tmp) / "sparse", sync),
        }
        for r in range(args.repeats):
            # alternate who goes first so slow drift (thermal, neighbours) hits both equally
            for kind in ("dense", "sparse") if r % 2 == 0 else ("sparse", "dense"):
                seconds_per_step(loops[kind], args.warmup, sync)  # re-warm after the other ran
                times[kind].append(seconds_per_step(loops[kind], args.steps, sync))
        zeros = measured_sparsity(loops["sparse"].run.model)[0]
        params = loops["dense"].run.model.num_params()
        timed = loops["sparse"].run.hooks[0]
    ratios = [s / d for s, d in zip(times["sparse"], times["dense"], strict=True)]
    shape = ModelShape(cfg.n_layer, cfg.d_model, cfg.n_head, cfg.d_ff, size.seq, cfg.vocab_size)
    return {
        "size": size,
        "cfg": cfg,
        "shape": shape,
        "zeros": zeros,
        "params": params,
        "mask_s": timed.seconds / max(1, timed.steps),
        "dense_s": statistics.median(times["dense"]),
        "sparse_s": statistics.median(times["sparse"]),
        "ratio": statistics.median(ratios),
        "ratio_lo": min(ratios),
        "ratio_hi": max(ratios),
        "flop_speedup": reduction(shape, args.level),
    }


def bf16_matmul_peak(device: torch.device, n: int = 8192, iters: int = 20) -> float:
    """FLOP/s of a large bf16 matmul on this GPU: the MFU denominator, measured, not quoted."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * iters / (time.perf_counter() - t0)


def table(results: list[dict[str, Any]], level: float, peak: float | None) -> list[str]:
    head = (
        "model|batch BxT|vocab|params|sparsity|dense ms/step|sparse ms/step|dense tok/s|"
        f"sparse tok/s|overhead (target ≤ {TARGET_OVERHEAD:.0%})|paired range|"
        "mask ops ms/step (% of dense step)|FLOP-predicted speedup|measured speedup"
    ).split("|")
    if peak is not None:
        head += ["MFU dense", "MFU sparse"]
    lines = [
        f"## Masking overhead of {level:.0%} static sparsity "
        f"(target: overhead ≤ {TARGET_OVERHEAD:.0%} on CPU)",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in results:
        s, tokens = r["size"], r["size"].batch * r["size"].seq
        dense_tps, sparse_tps = tokens / r["dense_s"], tokens / r["sparse_s"]
        over = r["ratio"] - 1
        cells = [
            s.name,
            f"{s.batch}x{s.seq}",
            str(r["cfg"].vocab_size),
            f"{r['params'] / 1e6:.2f}M",
            f"{r['zeros']:.1%}",
            f"{1e3 * r['dense_s']:.1f}",
            f"{1e3 * r['sparse_s']:.1f}",
            f"{dense_tps:,.0f}",
            f"{sparse_tps:,.0f}",
            f"{over:+.1%} {'✅' if over <= TARGET_OVERHEAD else '❌'}",
            f"{r['ratio_lo'] - 1:+.1%} … {r['ratio_hi'] - 1:+.1%}",
            f"{1e3 * r['mask_s']:.1f} ({r['mask_s'] / r['dense_s']:.1%})",
            f"{r['flop_speedup']:.2f}x",
            f"{1 / r['ratio']:.2f}x",
        ]
        if peak is not None:
            # hardware-executed FLOPs: dense kernels do every multiply, masked or not
            flops = train_flops_per_token(r["shape"])["total"]
            cells += [f"{flops * dense_tps / peak:.1%}", f"{flops * sparse_tps / peak:.1%}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def header(args: argparse.Namespace, device: torch.device, loads: tuple[float, float]) -> list[str]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    machine = (
        f"{cpu_model()}, {cores} cores available, torch.set_num_threads"
        f"({torch.get_num_threads()}), torch {torch.__version__}, "
        f"Python {platform.python_version()}"
    )
    # other processes on the same cores are the main source of noise; say how busy it was
    # (the end value includes this run's own threads)
    machine += f", 1-min load average {loads[0]:.2f} at start / {loads[1]:.2f} at end"
    if device.type == "cuda":
        machine += f", GPU {torch.cuda.get_device_name(device)}"
    return [
        "# Training throughput: dense vs static sparsity",
        "",
        f"Command: `python {shlex.join(sys.argv)}`",
        "",
        f"Machine: {machine}",
        "",
        f"Protocol: each repeat runs {args.warmup} untimed warmup steps then times "
        f"{args.steps} steps of `sparselm.train`'s loop step (forward, backward, grad clip, "
        "AdamW, sparsity hooks; fp32 on CPU, bf16 autocast on CUDA); dense and sparse runs "
        f"alternate order every repeat; times are the median of {args.repeats} repeats, and "
        "overhead = sparse/dense - 1 is the median of the per-repeat paired ratios "
        "(paired range = min … max).",
        "",
    ]


def notes(level: float, device: torch.device, peak: float | None) -> list[str]:
    lines = [
        "",
        "Notes:",
        "",
        "- FLOP-predicted speedup is dense/sparse training FLOPs from `sparselm.flops` "
        f"(megatron_full_attn convention, {level:.0%} sparsity on every block linear, "
        "embeddings/head dense). The measured speedup (dense/sparse, median of the paired "
        "ratios) is ~1.0x (slightly below, by the "
        "masking overhead) because masked weights still run through dense matmul kernels; "
        "realizing the FLOP saving needs sparse kernels or hardware.",
        "- params excludes position embeddings; sparsity is the measured fraction of "
        "zeros over the block linears of the sparse run after timing.",
    ]
    if peak is not None:
        lines.append(
            f"- MFU = train FLOPs/token (dense count: dense kernels execute every "
            f"multiply) x tokens/s / {peak / 1e12:.0f} TFLOP/s, the bf16 8192^3 "
            "matmul rate measured in this run."
        )
    if device.type != "cuda":
        lines.append("- gpt2_small (32x1024, MFU vs bf16 matmul): skipped, needs `--device cuda`.")
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4, help="timed steps per repeat")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before each repeat")
    p.add_argument("--repeats", type=int, default=15, help="interleaved dense/sparse repeats")
    p.add_argument("--level", type=float, default=0.75, help="static sparsity level")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument(
        "--sizes",
        default=",".join(s.name for s in SIZES),
        help="comma-separated subset of " + ", ".join(s.name for s in SIZES),
    )
    p.add_argument("--out", type=Path, help="also write the Markdown to this file")
    args = p.parse_args(argv)
    if min(args.steps, args.repeats) < 1 or args.warmup < 0:
        p.error("--steps and --repeats must be >= 1, --warmup >= 0")
    if not 0.0 < args.level < 1.0:
        p.error(f"--level {args.level}: must be in (0, 1)")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available on this machine")
    unknown = set(args.sizes.split(",")) - {s.name for s in SIZES}
    if unknown:
        p.error(f"--sizes: unknown {sorted(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(cores or 1)
    device = torch.device(args.device)
    wanted = set(args.sizes.split(","))
    results = []
    load_start = os.getloadavg()[0]
    for size in SIZES:
        if size.name in wanted and (device.type == "cuda" or not size.cuda_only):
            print(f"measuring {size.name} ...", file=sys.stderr, flush=True)
            results.append(measure(size, args, device))
    peak = bf16_matmul_peak(device) if device.type == "cuda" else None
    loads = (load_start, os.getloadavg()[0])
    text = (
        "\n".join(
            header(args, device, loads)
            + table(results, args.level, peak)
            + notes(args.level, device, peak)
        )
        + "\n"
    )
    print(text, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
