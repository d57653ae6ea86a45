"""GPU throughput: matmul rate, our training step (tokens/s, MFU, memory), sparse vs dense.

    python benchmarks/gpu_throughput.py [--out benchmarks/results/gpu_throughput.md]
    python benchmarks/gpu_throughput.py --device cpu      # a tiny run that checks the script

Every training number times ``sparselm.train``'s own loop step (forward, loss, backward, hooks,
grad clip, fused AdamW on CUDA, bf16 autocast, flash SDPA, ``train.compile``). Tables:

1. the bf16 matmul rate of large square matmuls on this GPU (the MFU denominator);
2. dense GPT-2 Small: tokens/s, MFU (6N + 12·L·d·T FLOPs per token against the measured
   matmul rate) and peak memory; then static 75 % sparsity and a RaPTr path of half the depth,
   each with its FLOP-predicted speedup beside the measured wall-clock speedup;
3. 2:4 semi-structured matmuls (``torch.sparse.to_sparse_semi_structured``) for GPT-2 Small's
   linear shapes and a large one, against the dense bf16 matmul, for each backend.
"""

from __future__ import annotations

import argparse
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
import torch.nn.functional as F

from sparselm.flops import ModelShape, load_model_config, train_flops_per_token
from sparselm.hooks import TrainHook
from sparselm.methods.raptr import RaptrConfig, RaptrHook
from sparselm.model import GPT, GPTConfig
from sparselm.optim import OptimConfig, build_adamw
from sparselm.sparsity.pruning import nm_mask
from sparselm.sparsity.static import StaticSparsity, StaticSparsityConfig
from sparselm.train import TrainConfig, TrainRun, open_loop

NEVER = 10**9  # a step the loop never reaches: no eval, log or checkpoint fires
TARGET_MFU = 0.65
TARGET_SPARSE_OVERHEAD = 0.02


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


def matmul_rates(s: Setting) -> list[tuple[int, float]]:
    """(n, FLOP/s) of n x n x n matmuls: bf16 on CUDA, fp32 on CPU."""
    dtype = torch.bfloat16 if s.device.type == "cuda" else torch.float32
    out = []
    for n in s.matmul_sizes:
        a = torch.randn(n, n, device=s.device, dtype=dtype)
        b = torch.randn(n, n, device=s.device, dtype=dtype)
        out.append((n, 2 * n**3 / timed(lambda a=a, b=b: a @ b, s.device, iters=10)))
    return out


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


def run_variant(s: Setting, hooks_for: Callable[[GPT], list[TrainHook]]) -> dict[str, Any]:
    """Seconds per step, peak memory and the hooks' FLOP-ledger cost for one variant."""
    torch.manual_seed(0)  # every variant starts from the same weights
    model = GPT(s.model).to(s.device)
    hooks = hooks_for(model)
    optim = OptimConfig(warmup_steps=0)
    cfg = TrainConfig(steps=NEVER, log_every=NEVER, progress=False, compile=s.compile)
    batches = FixedTokens(s.model.vocab_size, s.batch, s.seq, s.device)
    with tempfile.TemporaryDirectory() as tmp:
        run = TrainRun(model, build_adamw(model, optim), batches, cfg, optim, Path(tmp), hooks)
        loop = open_loop(run)
        for _ in range(s.warmup):  # compilation and allocator warm-up
            loop.step()
        if s.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(s.device)
        first = loop.state.step
        seconds = timed(loop.step, s.device, iters=s.steps, warmup=0)
    shape = ModelShape(
        s.model.n_layer, s.model.d_model, s.model.n_head, s.model.d_ff, s.seq, s.model.vocab_size
    )
    ledger = []
    for step in range(first, first + s.steps):
        factors: dict[str, Any] = {}
        for hook in hooks:
            factors.update(hook.flop_factors(step))
        ledger.append(train_flops_per_token(shape, **factors)["total"])
    peak = torch.cuda.max_memory_allocated(s.device) if s.device.type == "cuda" else None
    return {
        "seconds": seconds,
        "peak_bytes": peak,
        "ledger_flops": statistics.mean(ledger),
        "six_n": six_n_flops(model, s.seq),
    }


def static_hooks(level: float) -> Callable[[GPT], list[TrainHook]]:
    def build(model: GPT) -> list[TrainHook]:
        cfg = StaticSparsityConfig(level=level)
        return [StaticSparsity.from_config(model.block_linears(), cfg)]

    return build


def raptr_hooks(model: GPT) -> list[TrainHook]:
    # one stage of half the depth (6 of 12 layers, first and last always run)
    cfg = RaptrConfig(stages=(6,), reference_depth=12)
    return [RaptrHook(cfg, model.config.n_layer, NEVER)]


def training_table(s: Setting, peak_rate: float) -> list[str]:
    # (name, hooks, whether the saved FLOPs are really not executed): masked weights still run
    # through dense kernels, while a block off the RaPTr path does not run at all
    variants = (
        ("dense", lambda model: [], False),
        ("static 75%", static_hooks(0.75), False),
        ("RaPTr, path 6/12", raptr_hooks, True),
    )
    results = {}
    for name, build, _ in variants:
        print(f"timing {name} ...", file=sys.stderr, flush=True)
        results[name] = run_variant(s, build)
    dense = results["dense"]
    tokens = s.batch * s.seq
    head = [
        "variant",
        "ms/step",
        "tokens/s",
        "MFU (6N+attn, executed)",
        "peak memory GiB",
        "FLOP-predicted speedup",
        "measured speedup",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, _, skips in variants:
        r = results[name]
        tps = tokens / r["seconds"]
        executed = dense["six_n"] * (r["ledger_flops"] / dense["ledger_flops"] if skips else 1.0)
        mem = f"{r['peak_bytes'] / 2**30:.1f}" if r["peak_bytes"] is not None else "n/a"
        lines.append(
            f"| {name} | {1e3 * r['seconds']:.1f} | {tps:,.0f} | {executed * tps / peak_rate:.1%} "
            f"| {mem} | {dense['ledger_flops'] / r['ledger_flops']:.2f}x | "
            f"{dense['seconds'] / r['seconds']:.3f}x |"
        )
    overhead = results["static 75%"]["seconds"] / dense["seconds"] - 1
    dense_mfu = dense["six_n"] * tokens / dense["seconds"] / peak_rate
    lines += [
        "",
        f"Dense MFU {dense_mfu:.1%} (target ≥ {TARGET_MFU:.0%}); static 75 % step overhead "
        f"{overhead:+.1%} (target ≤ {TARGET_SPARSE_OVERHEAD:.0%}).",
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
        return Setting(device, model, 2, 32, args.steps, 1, False, (64,), 64)
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
    )


def report(s: Setting) -> str:
    rates = matmul_rates(s)
    peak = max(rate for _, rate in rates)
    dtype = "bf16" if s.device.type == "cuda" else "fp32"
    lines = [
        f"# GPU throughput on {device_name(s.device)}",
        "",
        f"Command: `python {shlex.join(sys.argv)}`; torch {torch.__version__}.",
        "",
        f"## {dtype} matmul rate (n x n x n)",
        "",
        "| n | TFLOP/s |",
        "|---|---|",
        *(f"| {n} | {rate / 1e12:.1f} |" for n, rate in rates),
        "",
        f"## Training step, {s.model.n_layer} layers x {s.model.d_model}, vocab "
        f"{s.model.vocab_size}, batch {s.batch} x {s.seq}, compile={s.compile}",
        "",
        f"{s.warmup} untimed steps, then the median of {s.steps} timed steps. MFU uses the "
        f"best measured matmul rate ({peak / 1e12:.1f} TFLOP/s). FLOP-predicted speedup is "
        "the dense/variant ratio of the FLOP ledger (`sparselm.flops`, megatron_full_attn): "
        "what the method saves if its skipped work cost nothing.",
        "",
        *training_table(s, peak),
        "",
        "## 2:4 semi-structured weight x dense activation (bf16)",
        "",
        *semi_structured_table(s),
    ]
    return "\n".join(lines) + "\n"


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
    p.add_argument("--out", type=Path, help="also write the Markdown to this file")
    args = p.parse_args(argv)
    if min(args.batch, args.seq, args.steps) < 1 or args.warmup < 0:
        p.error("--batch, --seq and --steps must be >= 1, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_throughput: CUDA is not available; nothing measured (--device cpu: a tiny check)"
        )
        return 0
    text = report(setting(args))
    print(text, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
