"""2:4 semi-structured sparsity on this GPU: where cuSPARSELt beats dense bf16, and why not.

    python benchmarks/semi_structured.py [--out benchmarks/results/semi_structured.md]
    python benchmarks/semi_structured.py --roofline-only   # the analytic tables, no GPU

For each matmul shape (M tokens, K -> N features) it measures:

* dense: ``F.linear`` in bf16 (cuBLAS);
* 2:4 through ``torch._cslt_sparse_mm`` in both layouts cuSPARSELt can be asked for:
  ``linear`` is what ``F.linear(x, to_sparse_semi_structured(W))`` runs (dense operand x.T as
  a column-major view, result transposed by cuSPARSELt into M x N), ``row-major`` passes a
  contiguous x.T and takes the N x M result; each with the default algorithm and with the
  best of an exhaustive search over (alg_id, split_k), timed here rather than trusted;
* the roofline ceiling: dense time / 2:4 time when each is max(FLOPs / matmul rate,
  bytes / memory bandwidth), with the rate and bandwidth measured in the same run. Half the
  FLOPs but the same activation traffic: a shape near the memory roof cannot gain 2x.

A second table does the same for fp8 (e4m3) against ``torch._scaled_mm``, and a third turns
the kernel speedups into what a training step's linears could gain: only the forward and
input-gradient matmuls have a 2:4 operand (the weight gradient dY^T X is dense), so a kernel
speedup s gives at most 3 / (1 + 2/s) on the linears, 1.5x at s = 2.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

# GPT-2 Small's linears at batch 32 x 1024, then larger shapes at M = 16384 (the two
# and a Llama-class MLP), as (name, M, K, N): y[M, N] = x[M, K] @ W[N, K]^T
GPT2_TOKENS = 32 * 1024
SHAPES = (
    ("gpt2 qkv", GPT2_TOKENS, 768, 2304),
    ("gpt2 attn_out", GPT2_TOKENS, 768, 768),
    ("gpt2 mlp_in", GPT2_TOKENS, 768, 3072),
    ("gpt2 mlp_out", GPT2_TOKENS, 3072, 768),
    ("large", 16384, 2048, 8192),
    ("large", 16384, 4096, 4096),
    ("large", 16384, 4096, 14336),
    ("large", 16384, 8192, 8192),
)
SPLIT_K = (1, 2, 4)
# nominal H200 SXM figures, only for --roofline-only (a model, not a measurement)
DATASHEET_H200 = {"bf16 FLOP/s": 989e12, "fp8 FLOP/s": 1979e12, "bytes/s": 4.8e12}


def roofline_seconds(
    m: int, k: int, n: int, rate: float, bandwidth: float, sparse: bool, elem_bytes: int = 2
) -> float:
    """max(compute, memory) time of y = x W^T; a 2:4 W holds half its values plus 2-bit
    indices (4 bits per group of 4), and does half the multiply-adds."""
    flops = (1 if sparse else 2) * m * k * n
    weight = n * k * elem_bytes / 2 + n * k / 8 if sparse else n * k * elem_bytes
    traffic = (m * k + m * n) * elem_bytes + weight
    return max(flops / rate, traffic / bandwidth)


def roofline_ceiling(m: int, k: int, n: int, rate: float, bandwidth: float, elem_bytes=2) -> float:
    """The most a perfect 2:4 kernel can gain over a perfect dense one for this shape."""
    dense = roofline_seconds(m, k, n, rate, bandwidth, False, elem_bytes)
    return dense / roofline_seconds(m, k, n, rate, bandwidth, True, elem_bytes)


def training_linear_speedup(kernel_speedup: float) -> float:
    """Step speedup of a linear's three matmuls when two of them run ``kernel_speedup`` faster."""
    return 3.0 / (1.0 + 2.0 / kernel_speedup)


def timed(fn: Callable[[], Any], iters: int = 20, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine_rates() -> dict[str, float]:
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    rates = {"bf16 FLOP/s": 2 * n**3 / timed(lambda: a @ b)}
    big = torch.empty(2**28, device="cuda", dtype=torch.bfloat16)  # 512 MiB read + written
    out = torch.empty_like(big)
    rates["bytes/s"] = 2 * big.numel() * 2 / timed(lambda: out.copy_(big))
    try:
        a8, b8 = a.to(torch.float8_e4m3fn), b.t().contiguous().to(torch.float8_e4m3fn).t()
        one = torch.ones((), device="cuda")
        mm = lambda: torch._scaled_mm(a8, b8, one, one, out_dtype=torch.bfloat16)  # noqa: E731
        rates["fp8 FLOP/s"] = 2 * n**3 / timed(mm)
    except (RuntimeError, AttributeError):
        pass
    return rates


def two_four(n: int, k: int, dtype: torch.dtype) -> torch.Tensor:
    """A random [n, k] weight with 2 of every 4 consecutive entries of a row kept."""
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
    keep = w.abs().view(n, k // 4, 4).topk(2, dim=-1).indices
    mask = torch.zeros(n, k // 4, 4, device="cuda", dtype=torch.bool).scatter_(-1, keep, True)
    return (w * mask.view(n, k)).to(dtype)


def best_sparse(packed: torch.Tensor, dense: torch.Tensor, transpose: bool, **kw: Any):
    """(default-algorithm seconds, best seconds, its alg_id, its split_k) over the search."""

    def run(alg: int, split: int) -> float:
        extra = {"split_k": split} if split != 1 else {}  # older torch: no split_k argument
        return timed(
            lambda: torch._cslt_sparse_mm(
                packed, dense, transpose_result=transpose, alg_id=alg, **extra, **kw
            ),
            iters=10,
        )

    default = run(0, 1)
    best = (default, 0, 1)
    max_alg = getattr(torch.backends.cusparselt, "get_max_alg_id", lambda: None)() or 0
    for alg in range(max_alg + 1):
        for split in SPLIT_K:
            try:
                best = min(best, (run(alg, split), alg, split))
            except (RuntimeError, TypeError):  # not every (alg, split_k) exists everywhere
                continue
    return default, *best


def bf16_rows(rates: dict[str, float]) -> list[str]:
    head = ["shape (M, K -> N)", "dense ms", "dense TFLOP/s", "roofline ceiling"]
    head += ["layout", "2:4 default alg", "2:4 best (alg, split_k)", "best vs ceiling"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m, k, n in SHAPES:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        w = two_four(n, k, torch.bfloat16)
        dense = timed(lambda x=x, w=w: F.linear(x, w))
        ceiling = roofline_ceiling(m, k, n, rates["bf16 FLOP/s"], rates["bytes/s"])
        packed = torch._cslt_compress(w)
        ref = F.linear(x, w).float()
        layouts = (("linear", x.t(), True), ("row-major", x.t().contiguous(), False))
        for layout, operand, transpose in layouts:
            cells = [f"{name} ({m}, {k} -> {n})", f"{1e3 * dense:.3f}"]
            cells += [f"{2 * m * k * n / dense / 1e12:.0f}", f"{ceiling:.2f}x", layout]
            try:
                out = torch._cslt_sparse_mm(packed, operand, transpose_result=transpose)
                got = out if transpose else out.t()
                err = float((got.float() - ref).abs().max() / ref.abs().max())
                if err > 2e-2:
                    raise RuntimeError(f"wrong result (max rel err {err:.1e})")
                default, best, alg, split = best_sparse(packed, operand, transpose)
                cells += [
                    f"{dense / default:.2f}x",
                    f"{dense / best:.2f}x ({alg}, {split})",
                    f"{dense / best / ceiling:.0%}",
                ]
            except (RuntimeError, NotImplementedError) as e:
                cells += [f"n/a: {str(e).splitlines()[0][:70]}", "", ""]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def fp8_rows(rates: dict[str, float]) -> list[str]:
    if "fp8 FLOP/s" not in rates:
        return ["fp8 matmuls are not available on this GPU / build: not measured."]
    head = ["shape (M, K -> N)", "fp8 dense ms", "roofline ceiling", "2:4 fp8 best (alg, split_k)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    one = torch.ones((), device="cuda")
    for name, m, k, n in SHAPES:
        x = torch.randn(m, k, device="cuda").to(torch.float8_e4m3fn)
        w = two_four(n, k, torch.float8_e4m3fn)
        wt = w.t()  # _scaled_mm wants its second operand column-major
        dense = timed(
            lambda x=x, wt=wt: torch._scaled_mm(x, wt, one, one, out_dtype=torch.bfloat16)
        )
        ceiling = roofline_ceiling(m, k, n, rates["fp8 FLOP/s"], rates["bytes/s"], 1)
        cells = [f"{name} ({m}, {k} -> {n})", f"{1e3 * dense:.3f}", f"{ceiling:.2f}x"]
        try:
            packed = torch._cslt_compress(w)
            _, best, alg, split = best_sparse(packed, x.t(), True, out_dtype=torch.bfloat16)
            cells.append(f"{dense / best:.2f}x ({alg}, {split})")
        except (RuntimeError, NotImplementedError) as e:
            cells.append(f"n/a: {str(e).splitlines()[0][:70]}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def roofline_rows(rates: dict[str, float]) -> list[str]:
    head = ["shape (M, K -> N)", "bf16 ceiling", "fp8 ceiling", "linears' training ceiling (bf16)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m, k, n in SHAPES:
        bf16 = roofline_ceiling(m, k, n, rates["bf16 FLOP/s"], rates["bytes/s"])
        fp8 = roofline_ceiling(m, k, n, rates["fp8 FLOP/s"], rates["bytes/s"], 1)
        cells = [f"{name} ({m}, {k} -> {n})", f"{bf16:.2f}x", f"{fp8:.2f}x"]
        cells.append(f"{training_linear_speedup(bf16):.2f}x")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def report(roofline_only: bool) -> str:
    lines = [
        "# 2:4 semi-structured sparsity against dense matmuls",
        "",
        f"Command: `python {shlex.join(sys.argv)}`; torch {torch.__version__}.",
        "",
    ]
    if roofline_only:
        lines += [
            "**Analytic, not measured**: the roofline of nominal H200 SXM figures (989 TFLOP/s "
            "dense bf16, 1979 fp8, 4.8 TB/s). Speedups are ceilings of perfect kernels.",
            "",
            *roofline_rows(DATASHEET_H200),
        ]
        return "\n".join(lines) + "\n"
    rates = machine_rates()
    cslt = torch.backends.cusparselt
    max_alg = getattr(cslt, "get_max_alg_id", lambda: "?")()
    lines += [
        f"GPU: {torch.cuda.get_device_name()}; cuSPARSELt {cslt.version()}, algorithms "
        f"0..{max_alg}; measured bf16 {rates['bf16 FLOP/s'] / 1e12:.0f} TFLOP/s "
        f"(8192^3), fp8 {rates.get('fp8 FLOP/s', float('nan')) / 1e12:.0f} TFLOP/s, copy "
        f"{rates['bytes/s'] / 1e12:.2f} TB/s. Speedups are dense time / 2:4 time.",
        "",
        "## bf16",
        "",
        *bf16_rows(rates),
        "",
        "## fp8 (e4m3, bf16 output)",
        "",
        *fp8_rows(rates),
        "",
        "## Roofline ceilings with the measured rates",
        "",
        *(roofline_rows(rates) if "fp8 FLOP/s" in rates else ["(fp8 rate not measured)"]),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--roofline-only", action="store_true", help="analytic tables, no GPU")
    p.add_argument("--out", type=Path, help="also write the Markdown to this file")
    args = p.parse_args(argv)
    if not args.roofline_only and not torch.cuda.is_available():
        print("semi_structured: CUDA is not available; nothing measured (--roofline-only)")
        return 0
    text = report(args.roofline_only)
    print(text, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
