"""GPU throughput: matmul rate, our training step (tokens/s, MFU, memory), sparse vs dense.

    python benchmarks/gpu_throughput.py [--out benchmarks/results/gpu_throughput.md]
    python benchmarks/gpu_throughput.py --device cpu      # a tiny run that checks the script

Every training number times ``sparselm.train``'s own loop step (forward, loss, backward, hooks,
grad clip, fused AdamW on CUDA, bf16 autocast, flash SDPA, ``train.compile``). Tables:

1. the bf16 matmul rate of large square matmuls on this GPU (the MFU denominator);
2. dense GPT-2 Small: tokens/s, MFU (6N + 12·L·d·T FLOPs per token against the measured
   matmul rate) and peak memory; then static 75 % sparsity (SPDF's masks) and a RaPTr path
   of half the depth, each with its FLOP-predicted speedup beside the measured one;
3. hybrid sparse attention: the same step with every layer on one pattern (local, strided,
   sparse, fixed) through the route ``auto`` picks on this device;
4. MST: the step under the dynamic-sparsity and sparse-attention hooks of the default
   three-phase sparsity variation, at one step of each phase and at a mask-update step;
5. 2:4 semi-structured matmuls (``torch.sparse.to_sparse_semi_structured``) for GPT-2 Small's
   linear shapes and a large one, against the dense bf16 matmul, for each backend.

Tables 2-4 share one dense measurement. A FLOP-predicted speedup is dense / variant of
``flops.train_flops_per_token`` with the factors the variant's hooks report to the training
loop's ledger (``TrainHook.flop_factors``) at the steps that were timed.
"""

from __future__ import annotations

import argparse
import os
import shlex
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
import torch.nn.functional as F

from sparselm.attention import effective_pattern, pick_route
from sparselm.flops import DEFAULT_CONVENTION, ModelShape, load_model_config, train_flops_per_token
from sparselm.hooks import TrainHook
from sparselm.methods.hsa import HSAConfig, HSAHook, flop_attn_density
from sparselm.methods.raptr import RaptrConfig, RaptrHook
from sparselm.model import GPT, GPTConfig
from sparselm.optim import OptimConfig, build_adamw
from sparselm.sparsity.dst import DSTConfig, DynamicSparsity
from sparselm.sparsity.pruning import nm_mask
from sparselm.sparsity.static import StaticSparsity, StaticSparsityConfig
from sparselm.sparsity.variation import SparsityVariation, VariationConfig, schedule_flops
from sparselm.train import TrainConfig, TrainRun, open_loop

NEVER = 10**9  # a step the loop never reaches: no eval, log or checkpoint fires
TARGET_MFU = 0.65
TARGET_SPARSE_OVERHEAD = 0.02
HSA_PATTERNS = ("local", "strided", "sparse", "fixed")
# the MST run the phase rows are placed in: long enough that the last mask before the end of
# restoration is near dense at the default DST interval (100 steps)
MST_RUN_STEPS = 10_000
MST_DST = DSTConfig(grow_mix_ratio=3.0)  # MST's prune-and-grow: 3 of 4 grown by gradient
MST_VARIATION = VariationConfig()  # warm-up 10 %, ultra 75 % at s_max 0.9, restoration to 0
MST_PATTERN = "sparse"  # the default pattern of hybrid sparse attention

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
    torch.manual_seed(0)  # every variant starts from the same weights
    model = GPT(s.model).to(s.device)
    hooks = hooks_for(model)
    optim = OptimConfig(warmup_steps=0)
    cfg = TrainConfig(steps=NEVER, log_every=NEVER, progress=False, compile=s.compile)
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


def speedups(dense: dict[str, Any], r: dict[str, Any]) -> list[str]:
    """FLOP-predicted and measured speedup cells of a variant against dense."""
    return [
        f"{dense['ledger_flops'] / r['ledger_flops']:.2f}x",
        f"{dense['seconds'] / r['seconds']:.3f}x",
    ]


def table_head(head: list[str]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]


def training_table(s: Setting, peak_rate: float, dense: dict[str, Any]) -> list[str]:
    # (name, hooks, whether the saved FLOPs are really not executed): masked weights still run
    # through dense kernels, while a block off the RaPTr path does not run at all
    variants = (
        ("dense", no_hooks, False),
        ("static 75%", static_hooks(0.75), False),
        ("RaPTr, path 6/12", raptr_hooks, True),
    )
    results = {"dense": dense}
    for name, build, _ in variants[1:]:
        results[name] = measure(s, name, build)
    tokens = s.batch * s.seq
    lines = table_head(
        [
            "variant",
            "ms/step",
            "tokens/s",
            "MFU (6N+attn, executed)",
            "peak memory GiB",
            "FLOP-predicted speedup",
            "measured speedup",
        ]
    )
    for name, _, skips in variants:
        r = results[name]
        tps = tokens / r["seconds"]
        executed = dense["six_n"] * (r["ledger_flops"] / dense["ledger_flops"] if skips else 1.0)
        mem = f"{r['peak_bytes'] / 2**30:.1f}" if r["peak_bytes"] is not None else "n/a"
        cells = [name, f"{1e3 * r['seconds']:.1f}", f"{tps:,.0f}"]
        cells += [f"{executed * tps / peak_rate:.1%}", mem, *speedups(dense, r)]
        lines.append("| " + " | ".join(cells) + " |")
    overhead = results["static 75%"]["seconds"] / dense["seconds"] - 1
    dense_mfu = dense["six_n"] * tokens / dense["seconds"] / peak_rate
    lines += [
        "",
        f"Dense MFU {dense_mfu:.1%} (target ≥ {TARGET_MFU:.0%}); static 75 % step overhead "
        f"{overhead:+.1%} (target ≤ {TARGET_SPARSE_OVERHEAD:.0%}).",
    ]
    return lines


# ---------------------------------------------------------------- hybrid sparse attention


def hsa_config(s: Setting, pattern: str, convention: str = DEFAULT_CONVENTION) -> HSAConfig:
    """Every layer on ``pattern`` at every step, densities counted at this run's T."""
    return HSAConfig(
        pattern=pattern,
        stride=s.stride,
        start_step=0,
        end_step=NEVER,
        seq_len=s.seq,
        flops_convention=convention,
    )


def hsa_hooks(s: Setting, pattern: str) -> HookBuilder:
    def build(model: GPT) -> list[TrainHook]:
        return [HSAHook(hsa_config(s, pattern), s.model.n_layer, NEVER)]

    return build


def attention_route(s: Setting, pattern: str) -> str:
    """The route ``AttentionPattern(route="auto")`` takes in this setting's training step."""
    effective = effective_pattern(pattern, s.seq, s.stride)
    if effective == "dense":
        return "causal SDPA (all causal pairs at this T)"
    return pick_route(effective, "auto", s.device, s.seq, s.stride, s.model.dropout)


def causal_half_speedup(s: Setting, pattern: str) -> float:
    """Dense / pattern under ``causal_half_attn``: attention counted over the causal pairs,
    the work a causal flash kernel does, so dense attention is not charged for T² scores."""
    shape, convention = model_shape(s), "causal_half_attn"
    hook = HSAHook(hsa_config(s, pattern, convention), s.model.n_layer, NEVER)
    dense = train_flops_per_token(shape, convention=convention)["total"]
    sparse = train_flops_per_token(shape, convention=convention, **hook.flop_factors(0))
    return dense / sparse["total"]


def hsa_table(s: Setting, dense: dict[str, Any]) -> list[str]:
    lines = table_head(
        [
            "pattern",
            "route (auto)",
            "attended pairs / T²",
            "ms/step",
            "tokens/s",
            "FLOP-predicted speedup",
            "predicted, causal-half attention",
            "measured speedup",
        ]
    )
    for pattern in HSA_PATTERNS:
        name = f"HSA {pattern}"
        r = measure_or_none(s, name, hsa_hooks(s, pattern))
        if r is None:
            lines.append(failed_row([name, attention_route(s, pattern)], 8))
            continue
        predicted, measured = speedups(dense, r)
        cells = [
            name,
            attention_route(s, pattern),
            f"{r['factors']['attn_density']:.3f}",
            f"{1e3 * r['seconds']:.1f}",
            f"{s.batch * s.seq / r['seconds']:,.0f}",
            predicted,
            f"{causal_half_speedup(s, pattern):.2f}x",
            measured,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


# ---------------------------------------------------------------- MST phases


def mst_hooks(s: Setting) -> HookBuilder:
    """MST's masks and attention: DST with the default variation as its target, sparse
    attention on in the ultra phase (s_max as written, not solved for a FLOP budget)."""

    def build(model: GPT) -> list[TrainHook]:
        variation = SparsityVariation(MST_VARIATION, MST_RUN_STEPS)
        start, end = variation.ultra_window()
        hsa = HSAConfig(
            pattern=MST_PATTERN, stride=s.stride, start_step=start, end_step=end, seq_len=s.seq
        )
        return [
            DynamicSparsity.from_config(model, MST_DST, variation, MST_RUN_STEPS),
            HSAHook(hsa, s.model.n_layer, MST_RUN_STEPS, active=variation.is_ultra),
        ]

    return build


def masks_for(step: int) -> Callable[[list[TrainHook]], None]:
    """Bring the DST masks to the counts ``step``'s forward uses by running the update of its
    mask point (which weights survive does not change the cost; how many does)."""

    def prepare(hooks: list[TrainHook]) -> None:
        for hook in hooks:
            if isinstance(hook, DynamicSparsity):
                point = hook.timeline.mask_point(step)
                if point > 0:
                    hook.update(point)

    return prepare


def mst_steps() -> list[int]:
    """One step inside each phase and one mask-update step: mid first interval (masks still
    at s_start), mid ultra just after an update (s_max, sparse attention on), that update
    step itself (prune-and-grow from the dense gradient), and the last interval (near dense)."""
    variation = SparsityVariation(MST_VARIATION, MST_RUN_STEPS)
    every = MST_DST.interval
    half = max(1, every // 2)
    start, end = variation.ultra_window()
    update = (start + end) // 2 // every * every
    return [half, update + half, update, MST_RUN_STEPS - half]


def mst_table(s: Setting, dense: dict[str, Any]) -> list[str]:
    variation = SparsityVariation(MST_VARIATION, MST_RUN_STEPS)
    lines = table_head(
        [
            "MST phase",
            "step",
            "target sparsity",
            "mask sparsity",
            "sparse attention",
            "ms/step",
            "FLOP-predicted speedup",
            "measured speedup",
        ]
    )
    for step in mst_steps():
        r = measure_or_none(
            s, f"MST step {step}", mst_hooks(s), at_step=step, prepare=masks_for(step)
        )
        if r is None:
            lines.append(failed_row([variation.phase_at(step), str(step)], 8))
            continue
        log = r["log"]
        phase = variation.phase_at(step) + (", DST update" if log["dst_update"] else "")
        cells = [
            phase,
            str(step),
            f"{log['dst_target_sparsity']:.3f}",
            f"{log['dst_sparsity']:.3f}",
            "on" if log["hsa_on"] else "off",
            f"{1e3 * r['seconds']:.1f}",
            *speedups(dense, r),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    density = flop_attn_density(MST_PATTERN, s.seq, s.stride, DEFAULT_CONVENTION)
    whole = schedule_flops(
        model_shape(s), MST_RUN_STEPS, MST_VARIATION, MST_DST, ultra_attn_density=density
    )
    lines += [
        "",
        f"Whole run, FLOP-predicted: {whole['reduction']:.2f}x fewer training FLOPs than dense "
        "(`sparsity.variation.schedule_flops`, the sum of the same per-step ledger).",
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
        return Setting(device, model, 2, 32, args.steps, 1, False, (64,), 64, 8)
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


def report(s: Setting) -> str:
    rates = matmul_rates(s)
    peak = max(rate for _, rate in rates)
    dense = measure(s, "dense", no_hooks)
    variation = SparsityVariation(MST_VARIATION, MST_RUN_STEPS)
    start, end = variation.ultra_window()
    v = MST_VARIATION
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
        f"## Training step, {s.model.n_layer} layers x {s.model.d_model}, vocab "
        f"{s.model.vocab_size}, batch {s.batch} x {s.seq}, compile={s.compile}",
        "",
        f"{s.warmup} untimed steps, then the median of {s.steps} timed steps. MFU uses the "
        f"best measured matmul rate ({peak / 1e12:.1f} TFLOP/s). FLOP-predicted speedup is "
        "the dense/variant ratio of the FLOP ledger (`sparselm.flops`, megatron_full_attn): "
        "what the method saves if its skipped work cost nothing.",
        "",
        *training_table(s, peak, dense),
        "",
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
    p.add_argument(
        "--stride", type=int, default=128, help="w of the sparse attention patterns (CUDA only)"
    )
    p.add_argument("--out", type=Path, help="also write the Markdown to this file")
    args = p.parse_args(argv)
    if min(args.batch, args.seq, args.steps, args.stride) < 1 or args.warmup < 0:
        p.error("--batch, --seq, --steps and --stride must be >= 1, --warmup >= 0")
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
    text = report(setting(args))
    print(text, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
