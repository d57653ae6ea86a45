"""Block-sparse weights through PyTorch's BSR kernels: can block sparsity beat dense matmuls?

    python benchmarks/block_sparse.py [--out benchmarks/results/block_sparse.md]   # CUDA, bf16
    python benchmarks/block_sparse.py --device cpu   # small fp32 shapes: checks the script

For GPT-2 Small's linear shapes (M = 32768 tokens) and a large one, each weight keeps the
``density`` fraction of its b x b blocks (those of largest L2 norm), and y = x W^T is timed
dense and with W in BSR form through ``F.linear``; on CUDA that runs
``torch.sparse._triton_ops.bsr_dense_addmm``, a Triton kernel, on CPU MKL's sparse BLAS. For a
compute-bound shape the ideal speedup is 1 / density. Unlike 2:4, the transpose of a
block-sparse weight is block-sparse too, so the input-gradient matmul dX = dY W could use the
same kernel in training; SPDF's unstructured masks would have to become block masks.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

GPT2_TOKENS = 32 * 1024
CUDA_SHAPES = (  # (name, M, K, N): y[M, N] = x[M, K] @ W[N, K]^T
    ("gpt2 qkv", GPT2_TOKENS, 768, 2304),
    ("gpt2 attn_out", GPT2_TOKENS, 768, 768),
    ("gpt2 mlp_in", GPT2_TOKENS, 768, 3072),
    ("gpt2 mlp_out", GPT2_TOKENS, 3072, 768),
    ("large", 16384, 4096, 4096),
)
CPU_SHAPES = (("small", 512, 256, 512),)
BLOCKS = (32, 64)
DENSITIES = (0.5, 0.25, 0.1)  # SPDF's 50 % and 75 % sparsity, and 90 %


def block_mask(scores: torch.Tensor, block: int, density: float) -> torch.Tensor:
    """Boolean [N, K] mask keeping the round(density x blocks) b x b blocks whose ``scores``
    have the largest L2 norm; N and K must be multiples of ``block``."""
    n, k = scores.shape
    if n % block or k % block:
        raise ValueError(f"weight {n}x{k} is not a whole number of {block}x{block} blocks")
    norms = scores.float().reshape(n // block, block, k // block, block).norm(dim=(1, 3))
    keep = round(density * norms.numel())
    chosen = torch.zeros(norms.numel(), dtype=torch.bool, device=scores.device)
    chosen[norms.flatten().topk(keep).indices] = True
    blocks = chosen.view_as(norms)
    return blocks.repeat_interleave(block, 0).repeat_interleave(block, 1)


def timed(fn: Callable[[], Any], device: torch.device, iters: int) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(3):
        fn()
    times = []
    for _ in range(iters):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def rows(device: torch.device, iters: int) -> list[str]:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    shapes = CUDA_SHAPES if device.type == "cuda" else CPU_SHAPES
    head = ["shape (M, K -> N)", "block", "density", "dense ms", "BSR ms", "speedup"]
    head += ["ideal", "max rel err"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    g = torch.Generator(device="cpu").manual_seed(0)
    for name, m, k, n in shapes:
        x = torch.randn(m, k, generator=g).to(device, dtype)
        w_full = torch.randn(n, k, generator=g).to(device, dtype)
        for block in BLOCKS:
            for density in DENSITIES:
                w = w_full * block_mask(w_full, block, density)
                dense = timed(lambda x=x, w=w: F.linear(x, w), device, iters)
                cells = [f"{name} ({m}, {k} -> {n})", str(block), f"{density:.2f}"]
                cells.append(f"{1e3 * dense:.3f}")
                try:
                    bsr = w.to_sparse_bsr((block, block))
                    ref = F.linear(x, w).float()
                    err = float((F.linear(x, bsr).float() - ref).abs().max() / ref.abs().max())
                    sparse = timed(lambda x=x, bsr=bsr: F.linear(x, bsr), device, iters)
                    cells += [f"{1e3 * sparse:.3f}", f"{dense / sparse:.2f}x"]
                    cells += [f"{1 / density:.1f}x", f"{err:.1e}"]
                except (RuntimeError, NotImplementedError, ValueError) as e:
                    cells += [f"n/a: {str(e).splitlines()[0][:70]}", "", "", ""]
                lines.append("| " + " | ".join(cells) + " |")
    return lines


def report(device: torch.device, iters: int) -> str:
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({torch.get_num_threads()} threads), fp32 — a check of the script, not a "
        "GPU measurement"
    )
    lines = [
        f"# Block-sparse (BSR) against dense matmuls on {where}",
        "",
        f"Command: `python {shlex.join(sys.argv)}`; torch {torch.__version__}. Median of "
        f"{iters} calls; speedup = dense time / BSR time; ideal = 1 / density.",
        "",
        *rows(device, iters),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--out", type=Path, help="also write the Markdown to this file")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("block_sparse: CUDA is not available; nothing measured (--device cpu: a check)")
        return 0
    warnings.filterwarnings("ignore", message="Sparse BSR tensor support is in beta state")
    text = report(torch.device(args.device), args.iters)
    print(text, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
