"""RaPTr step time vs path length, through the real training step, beside the FLOP prediction.

    python benchmarks/raptr_step_time.py [--steps N] [--warmup N] [--repeats N]
                                         [--threads N] [--device cpu|cuda] [--out results.md]

The model is the ``tiny`` shape (d=128, 4 heads, d_ff=512, T=128, the tiny scale's 4096
vocabulary) made 12 layers deep: at 4 layers, 2L/3 is not a whole path. Each RaPTr run uses
``fixed_count`` sampling with one stage, so every step executes exactly ℓ blocks (first and
last included) and its cost does not vary from step to step; the full model runs with no hook.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from cpu_throughput import NEVER, FixedBatches, cpu_model, seconds_per_step

from sparselm.flops import ModelShape, train_flops_per_token
from sparselm.methods.raptr import RaptrConfig, RaptrHook
from sparselm.model import GPT, GPTConfig
from sparselm.optim import OptimConfig, build_adamw
from sparselm.train import TrainConfig, TrainRun, _Loop  # the loop's step, not a copy of it

N_LAYER, BATCH, SEQ, VOCAB = 12, 8, 128, 4096
MODEL = GPTConfig(
    vocab_size=VOCAB, n_layer=N_LAYER, n_head=4, d_model=128, d_ff=512, block_size=SEQ
)


@dataclass(frozen=True)
class Variant:
    label: str
    path_len: int | None  # None: the plain full model, no hook
    freeze: bool = False


VARIANTS = (
    Variant("full model (no hook)", None),
    Variant("L = 12", 12),
    Variant("2L/3 = 8", 8),
    Variant("2L/3 = 8, freeze_skipped_optimizer", 8, freeze=True),
    Variant("L/2 = 6", 6),
    Variant("L/2 = 6, freeze_skipped_optimizer", 6, freeze=True),
)


def build_loop(v: Variant, batches: FixedBatches, device: torch.device, out: Path) -> _Loop:
    torch.manual_seed(0)  # every variant starts from the same weights
    model = GPT(MODEL).to(device)
    optim = OptimConfig(warmup_steps=0)
    hooks = []
    if v.path_len is not None:
        cfg = RaptrConfig(
            stages=(v.path_len,),
            reference_depth=None,
            sampling="fixed_count",
            freeze_skipped_optimizer=v.freeze,
        )
        hooks.append(RaptrHook(cfg, N_LAYER, NEVER))
    train_cfg = TrainConfig(steps=NEVER, log_every=NEVER, progress=False)
    run = TrainRun(model, build_adamw(model, optim), batches, train_cfg, optim, out, hooks=hooks)
    loop = _Loop(run)
    loop.start(resume=False)
    return loop


def measure(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Median s/step per variant, and the median of per-repeat ratios to the full model."""
    batches = FixedBatches(VOCAB, BATCH, SEQ, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {v.label: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        loops = {
            v.label: build_loop(v, batches, device, Path(tmp) / str(i))
            for i, v in enumerate(VARIANTS)
        }
        for r in range(args.repeats):
            # rotate the order so slow drift (thermal, neighbours) hits every variant alike
            order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
            for v in order:
                seconds_per_step(loops[v.label], args.warmup, sync)
                times[v.label].append(seconds_per_step(loops[v.label], args.steps, sync))
    full = times[VARIANTS[0].label]
    return {
        v.label: {
            "s": statistics.median(times[v.label]),
            "ratio": statistics.median(t / f for t, f in zip(times[v.label], full, strict=True)),
        }
        for v in VARIANTS
    }


def predicted(path_len: int | None) -> tuple[float, float]:
    """(block-only, all-inclusive) FLOP ratio of a path of ``path_len`` blocks to the full model."""
    shape = ModelShape(N_LAYER, MODEL.d_model, MODEL.n_head, MODEL.d_ff, SEQ, VOCAB)
    frac = 1.0 if path_len is None else path_len / N_LAYER
    full = train_flops_per_token(shape)["total"]
    return frac, train_flops_per_token(shape, executed_block_frac=frac)["total"] / full


def table(results: dict[str, Any]) -> list[str]:
    head = [
        "variant",
        "executed blocks",
        "ms/step",
        "tok/s",
        "FLOP-predicted ratio, block-only",
        "FLOP-predicted ratio, all-inclusive",
        "measured step-time ratio",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in VARIANTS:
        r, (block, total) = results[v.label], predicted(v.path_len)
        cells = [
            v.label,
            str(v.path_len or N_LAYER),
            f"{1e3 * r['s']:.1f}",
            f"{BATCH * SEQ / r['s']:,.0f}",
            f"{block:.3f}",
            f"{total:.3f}",
            f"{r['ratio']:.3f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def header(args: argparse.Namespace, device: torch.device, loads: tuple[float, float]) -> list[str]:
    machine = (
        f"{cpu_model()}, torch.set_num_threads({torch.get_num_threads()}), torch "
        f"{torch.__version__}, 1-min load average {loads[0]:.2f} at start / {loads[1]:.2f} at end"
    )
    if device.type == "cuda":
        machine += f", GPU {torch.cuda.get_device_name(device)}"
    return [
        "# RaPTr step time vs path length",
        "",
        f"Command: `python {shlex.join(sys.argv)}`",
        "",
        f"Machine: {machine}",
        "",
        f"Model: the `tiny` shape made {N_LAYER} layers deep (4 layers is too shallow for "
        f"2L/3): d=128, 4 heads, d_ff=512, T={SEQ}, vocab {VOCAB}, batch {BATCH}x{SEQ}, "
        f"{GPT(MODEL).num_params() / 1e6:.2f}M params. fp32 on CPU.",
        "",
        f"Protocol: each repeat runs {args.warmup} untimed step(s) then times {args.steps} "
        "steps of `sparselm.train`'s loop step per variant (order rotated every repeat); "
        f"ms/step is the median of {args.repeats} repeats, the measured ratio the median of "
        "per-repeat ratios to the full model. RaPTr variants sample `fixed_count` paths "
        "(exactly ℓ blocks, first and last fixed).",
        "",
    ]


NOTES = [
    "",
    "Notes:",
    "",
    "- FLOP-predicted ratios are from `sparselm.flops` (megatron_full_attn): block-only is "
    "ℓ/L; all-inclusive adds the embedding/LM head, paid every step whatever the path.",
    "- Default RaPTr (`freeze_skipped_optimizer=false`) still runs AdamW on the skipped "
    "blocks (zero gradients: momentum and weight decay); with the option on, AdamW skips them.",
    "- The machine is shared (see the load average): two runs of this benchmark on it gave "
    "measured ratios up to ~0.05 apart; the freeze/default difference is within that noise.",
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3, help="timed steps per repeat")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before each repeat")
    p.add_argument("--repeats", type=int, default=7, help="rotated repeats over the variants")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, help="torch threads (default: all available cores)")
    p.add_argument("--out", type=Path, help="also write the Markdown to this file")
    args = p.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(args.threads or cores or 1)
    device = torch.device(args.device)
    load_start = os.getloadavg()[0]
    results = measure(args, device)
    loads = (load_start, os.getloadavg()[0])
    text = "\n".join(header(args, device, loads) + table(results) + NOTES) + "\n"
    print(text, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
