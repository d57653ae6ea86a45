"""GPU throughput: matmul rate, our training step (tokens/s, MFU, memory), sparse vs dense.

    python benchmarks/gpu_throughput.py [--out benchmarks/results/gpu_throughput.md]
    python benchmarks/gpu_throughput.py --device cpu      # a tiny run that checks the script

Every training number times ``sparselm.train``'s own loop step (forward, loss, backward, hooks,
grad clip, fused AdamW on CUDA, bf16 autocast, flash SDPA, ``train.compile``). Tables:

1. the bf16 matmul rate of large square matmuls on this GPU (the MFU denominator);
2. dense GPT-2 Small: tokens/s, MFU (6N + 12·L·d·T FLOPs per token against the measured
   matmul rate) and peak memory, with the chunked LM-head loss (``--loss-chunk``) and with
   the full logits; then static 75 % sparsity (SPDF's masks) and a RaPTr path
   of half the depth, each with its FLOP-predicted speedup beside the measured one;
3. hybrid sparse attention: the same step with every layer on one pattern (local, strided,
   sparse, fixed) through the route ``auto`` picks on this device;
4. MST: the step under the dynamic-sparsity and sparse-attention hooks of the default
   three-phase sparsity variation, at one step of each phase and at a mask-update step;
5. 2:4 semi-structured matmuls (``torch.sparse.to_sparse_semi_structured``) for GPT-2 Small's
   linear shapes and a large one, against the dense bf16 matmul, for each backend.

Tables 2-4 share one dense measurement. A FLOP-predicted speedup is dense / variant of
``flops.train_flops_per_token`` with the factors the variant's hooks report to the training
loop's ledger (``TrainHook.flop_factors``) at the steps that were timed. The step timing lives in
``gpu_step_timing.py``, the rows of tables 3-4 in ``gpu_method_rows.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from gpu_method_rows import MST_DST, MST_PATTERN, MST_RUN_STEPS, MST_VARIATION, hsa_table, mst_table
from gpu_step_timing import (
    NEVER,
    HookBuilder,
    Setting,
    failed_row,
    measure,
    measure_or_none,
    speedups,
    table_head,
    timed,
)

from sparselm.flops import load_model_config
from sparselm.hooks import TrainHook
from sparselm.methods.raptr import RaptrConfig, RaptrHook
from sparselm.model import GPT, GPTConfig
from sparselm.sparsity.pruning import nm_mask
from sparselm.sparsity.static import StaticSparsity, StaticSparsityConfig
from sparselm.sparsity.variation import SparsityVariation

TARGET_MFU = 0.65
TARGET_SPARSE_OVERHEAD = 0.02


def matmul_rates(s: Setting) -> list[tuple[int, float]]:
    """(n, FLOP/s) of n x n x n matmuls: bf16 on CUDA, fp32 on CPU."""
    dtype = torch.bfloat16 if s.device.type == "cuda" else torch.float32
    out = []
    for n in s.matmul_sizes:
        a = torch.randn(n, n, device=s.device, dtype=dtype)
        b = torch.randn(n, n, device=s.device, dtype=dtype)
        out.append((n, 2 * n**3 / timed(lambda a=a, b=b: a @ b, s.device, iters=10)))
    return out


def no_hooks(model: GPT) -> list[TrainHook]:
    return []


def static_hooks(level: float) -> HookBuilder:
    def build(model: GPT) -> list[TrainHook]:
        cfg = StaticSparsityConfig(level=level)
        return [StaticSparsity.from_config(model.block_linears(), cfg)]

    return build


def raptr_hooks(model: GPT) -> list[TrainHook]:
    # one stage of half the depth (6 of 12 layers, first and last always run)
    cfg = RaptrConfig(stages=(6,), reference_depth=12)
    return [RaptrHook(cfg, model.config.n_layer, NEVER)]


def step_settings(s: Setting) -> list[tuple[str, Setting]]:
    """The dense step's other settings worth a row: what the chunked loss, compilation and
    cuDNN's attention kernels (instead of flash) each change, where they apply."""
    out = []
    if s.loss_chunk:
        out.append(("dense, full logits", dataclasses.replace(s, loss_chunk=0)))
    if s.compile:
        out.append(("dense, eager", dataclasses.replace(s, compile=False)))
    if s.device.type == "cuda":
        out.append(("dense, cuDNN attention", dataclasses.replace(s, sdpa="cudnn")))
    return out


def training_table(s: Setting, peak_rate: float, dense: dict[str, Any]) -> list[str]:
    # (name, setting, hooks, whether the saved FLOPs are really not executed): masked weights
    # still run through dense kernels, while a block off the RaPTr path does not run at all
    variants = [("dense", s, no_hooks, False)]
    variants += [(name, other, no_hooks, False) for name, other in step_settings(s)]
    variants += [
        ("static 75%", s, static_hooks(0.75), False),
        ("RaPTr, path 6/12", s, raptr_hooks, True),
    ]
    results: dict[str, dict[str, Any] | None] = {"dense": dense}
    for name, setting_, build, _ in variants[1:]:
        results[name] = measure_or_none(setting_, name, build)
    tokens = s.batch * s.seq
    head = ["variant", "ms/step", "tokens/s", "MFU (6N+attn, executed)", "peak memory GiB"]
    head += ["FLOP-predicted speedup", "measured speedup"]
    lines = table_head(head)
    for name, _, _, skips in variants:
        r = results[name]
        if r is None:
            lines.append(failed_row([name], len(head)))
            continue
        tps = tokens / r["seconds"]
        executed = dense["six_n"] * (r["ledger_flops"] / dense["ledger_flops"] if skips else 1.0)
        mem = f"{r['peak_bytes'] / 2**30:.1f}" if r["peak_bytes"] is not None else "n/a"
        cells = [name, f"{1e3 * r['seconds']:.1f}", f"{tps:,.0f}"]
        cells += [f"{executed * tps / peak_rate:.1%}", mem, *speedups(dense, r)]
        lines.append("| " + " | ".join(cells) + " |")
    dense_mfu = dense["six_n"] * tokens / dense["seconds"] / peak_rate
    static = results["static 75%"]
    overhead = f"{static['seconds'] / dense['seconds'] - 1:+.1%}" if static else "not measured"
    lines += [
        "",
        f"Dense MFU {dense_mfu:.1%} (target ≥ {TARGET_MFU:.0%}); static 75 % step overhead "
        f"{overhead} (target ≤ {TARGET_SPARSE_OVERHEAD:.0%}).",
    ]
    return lines


def semi_structured_table(s: Setting) -> list[str]:
    """2:4 weight x dense activation for each linear shape, per backend, vs dense bf16."""
    if s.device.type != "cuda":
        return ["2:4 semi-structured kernels need CUDA: not measured on this device."]
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    d, f = s.model.d_model, s.model.d_ff
    shapes = [("qkv", d, 3 * d), ("attn_out", d, d), ("mlp_in", d, f), ("mlp_out", f, d)]
    shapes += [("large", 2048, 8192), ("large", 8192, 8192)]  # M = 16384
    head = ["linear (K -> N)", "M", "dense ms", "backend", "x @ W_s.T", "W_s @ x.T", "max rel err"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, k, n in shapes:
        m = 16384 if name.startswith("large") else s.nm_tokens
        x = torch.randn(m, k, device=s.device, dtype=torch.bfloat16)
        w = torch.randn(n, k, device=s.device, dtype=torch.bfloat16)
        w = w * nm_mask(w, 2, 4).to(s.device)
        ref = F.linear(x, w)
        dense = timed(lambda x=x, w=w: F.linear(x, w), s.device, iters=20)
        for backend in ("cutlass", "cusparselt", "cusparselt+search"):
            cells = [f"{name} ({k} -> {n})", str(m), f"{1e3 * dense:.3f}", backend]
            try:
                ws = _compress(w, x, backend, SparseSemiStructuredTensor, to_sparse_semi_structured)
                xt = x.t()
                second = timed(lambda x=x, ws=ws: F.linear(x, ws), s.device, iters=20)
                first = timed(lambda ws=ws, xt=xt: torch.mm(ws, xt), s.device, iters=20)
                err = (F.linear(x, ws) - ref).abs().max() / ref.abs().max()
                cells += [
                    f"{1e3 * second:.3f} ({dense / second:.2f}x)",
                    f"{1e3 * first:.3f} ({dense / first:.2f}x)",
                    f"{float(err):.1e}",
                ]
            except (RuntimeError, NotImplementedError, ValueError) as e:
                cells += [f"n/a: {str(e).splitlines()[0][:80]}", "", ""]
            lines.append("| " + " | ".join(cells) + " |")
    SparseSemiStructuredTensor._FORCE_CUTLASS = False
    return lines


def _compress(w, x, backend: str, cls, to_sparse) -> Any:
    cls._FORCE_CUTLASS = backend == "cutlass"
    ws = to_sparse(w)
    if backend == "cusparselt+search":  # cuSPARSELt's own search for this problem's algorithm
        found = torch._cslt_sparse_mm_search(ws.packed, x.t())
        ws = to_sparse(w, alg_id=found[0] if isinstance(found, tuple) else int(found))
    return ws


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


def setting(args: argparse.Namespace) -> Setting:
    device = torch.device(args.device)
    if device.type == "cpu":  # checks the script, measures nothing of interest
        model = GPTConfig(vocab_size=256, n_layer=4, n_head=2, d_model=32, d_ff=64, block_size=32)
        # w = 8 over T = 32: four chunks, so `auto` takes both CPU routes (sparse needs six)
        return Setting(device, model, 2, 32, args.steps, 1, False, (64,), 64, 8, loss_chunk=16)
    shape = load_model_config(args.model)
    keys = ("n_layer", "n_head", "d_model", "d_ff", "bias", "dropout")
    model = GPTConfig(vocab_size=args.vocab, block_size=args.seq, **{k: shape[k] for k in keys})
    compile_ = not args.no_compile
    sizes = (4096, 8192, 16384)
    return Setting(
        device,
        model,
        args.batch,
        args.seq,
        args.steps,
        args.warmup,
        compile_,
        sizes,
        args.batch * args.seq,
        args.stride,
        args.loss_chunk,
        args.compile_mode,
    )


def cpu_notice(s: Setting) -> list[str]:
    """What a CPU report is: a check that every table is produced, not a measurement."""
    if s.device.type != "cpu":
        return []
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return [
        f"**Functional check of the script, not a GPU measurement.** `--device cpu` runs a "
        f"{s.model.n_layer}-layer, {s.model.d_model}-wide model on {torch.get_num_threads()} "
        f"CPU thread(s) of a {os.cpu_count()}-core machine (1-minute load average {load:.2f} at "
        "the start), without compilation or bf16: its times and speedups say nothing about "
        "GPU throughput.",
        "",
    ]


TABLES = ("training", "hsa", "mst", "nm")


def report(s: Setting, tables: tuple[str, ...] = TABLES) -> str:
    rates = matmul_rates(s)
    peak = max(rate for _, rate in rates)
    step_tables = [t for t in ("training", "hsa", "mst") if t in tables]
    dense = measure(s, "dense", no_hooks) if step_tables else None
    dtype = "bf16" if s.device.type == "cuda" else "fp32"
    lines = [
        f"# GPU throughput on {device_name(s.device)}",
        "",
        f"Command: `python {shlex.join(sys.argv)}`; torch {torch.__version__}.",
        "",
        *cpu_notice(s),
        f"## {dtype} matmul rate (n x n x n)",
        "",
        "| n | TFLOP/s |",
        "|---|---|",
        *(f"| {n} | {rate / 1e12:.1f} |" for n, rate in rates),
        "",
    ]
    if "training" in tables:
        lines += training_section(s, peak, dense)
    if "hsa" in tables:
        lines += hsa_section(s, dense)
    if "mst" in tables:
        lines += mst_section(s, dense)
    if "nm" in tables:
        lines += ["## 2:4 semi-structured weight x dense activation (bf16)", ""]
        lines += [*semi_structured_table(s), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def training_section(s: Setting, peak: float, dense: dict[str, Any]) -> list[str]:
    return [
        f"## Training step, {s.model.n_layer} layers x {s.model.d_model}, vocab "
        f"{s.model.vocab_size}, batch {s.batch} x {s.seq}, compile={s.compile} "
        f"({s.compile_mode}), loss_chunk={s.loss_chunk}",
        "",
        f"{s.warmup} untimed steps, then the median of {s.steps} timed steps. MFU uses the "
        f"best measured matmul rate ({peak / 1e12:.1f} TFLOP/s). FLOP-predicted speedup is "
        "the dense/variant ratio of the FLOP ledger (`sparselm.flops`, megatron_full_attn): "
        "what the method saves if its skipped work cost nothing.",
        "",
        *training_table(s, peak, dense),
        "",
    ]


def hsa_section(s: Setting, dense: dict[str, Any]) -> list[str]:
    return [
        f"## Hybrid sparse attention (every layer, every step), w = {s.stride}",
        "",
        "The training step above with the HSA hook on from the first step, against the same "
        "dense run (causal SDPA). The route is what `AttentionPattern(route='auto')` takes "
        "here (FlexAttention on CUDA). FLOP-predicted speedup: the ledger with the hook's "
        "`attn_density` (attended pairs over T², megatron_full_attn); the causal-half column "
        "counts attention over the T(T+1)/2 causal pairs instead, which is what a causal flash "
        "kernel computes for dense attention.",
        "",
        *hsa_table(s, dense),
        "",
    ]


def mst_section(s: Setting, dense: dict[str, Any]) -> list[str]:
    variation = SparsityVariation(MST_VARIATION, MST_RUN_STEPS)
    start, end = variation.ultra_window()
    v = MST_VARIATION
    return [
        "## MST phases",
        "",
        f"The training step under MST's hooks (`DynamicSparsity`: {MST_DST.distribution} "
        f"allocation, interval {MST_DST.interval}, grow_mix_ratio {MST_DST.grow_mix_ratio}, "
        f"LM head sparse; `HSAHook`: {MST_PATTERN} attention, w = {s.stride}, in the ultra "
        f"phase) for a {MST_RUN_STEPS}-step run of the default variation (warm-up to step "
        f"{start} from s = {v.s_start}, ultra at s = {v.s_max} to step {end}, restoration to "
        f"s = {v.s_end}). Each row repeats one step of that run through the training loop, with "
        "the masks that step uses; the update row includes the prune-and-grow and skips the "
        "optimizer step, as training does. Masked weights run through dense kernels, so only "
        "sparse attention can save time.",
        "",
        *mst_table(s, dense),
        "",
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--model", default="gpt2_small", help="conf/model/<name>.yaml (CUDA only)")
    p.add_argument("--vocab", type=int, default=50304, help="GPT-2's vocabulary padded to 64")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps (compilation)")
    p.add_argument("--no-compile", action="store_true", help="eager blocks and loss")
    p.add_argument(
        "--compile-mode",
        default="default",
        choices=("default", "max-autotune-no-cudagraphs", "max-autotune", "reduce-overhead"),
        help="train.compile_mode (the last two capture CUDA graphs)",
    )
    p.add_argument(
        "--loss-chunk",
        type=int,
        default=4096,
        help="train.loss_chunk of every row (0: full logits); > 0 adds a full-logits dense row",
    )
    p.add_argument(
        "--stride", type=int, default=128, help="w of the sparse attention patterns (CUDA only)"
    )
    p.add_argument(
        "--tables",
        nargs="+",
        choices=TABLES,
        default=list(TABLES),
        help="which tables after the matmul rate (default: all)",
    )
    p.add_argument("--out", type=Path, help="also write the Markdown to this file")
    args = p.parse_args(argv)
    if (
        min(args.batch, args.seq, args.steps, args.stride) < 1
        or min(args.warmup, args.loss_chunk) < 0
    ):
        p.error("--batch, --seq, --steps and --stride must be >= 1, --warmup and --loss-chunk >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        # one thread: on a shared machine more threads than free cores stall the tiny ops
        torch.set_num_threads(1)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_throughput: CUDA is not available; nothing measured (--device cpu: a tiny check)"
        )
        return 0
    text = report(setting(args), tuple(args.tables))
    print(text, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
