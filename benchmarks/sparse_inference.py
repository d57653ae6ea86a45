"""Does weight sparsity make inference faster here? Forward latency, dense vs sparse kernels.

    python benchmarks/sparse_inference.py [--repeats N] [--device cpu|cuda] [--out results.md]

Workloads, each at 50-90 % sparsity against the dense matmul of the same (masked) weight:

* one linear layer of the tiny model (mlp_in, 512x128) and of GPT-2 small (mlp_in, 3072x768)
  on 1024 tokens, with torch CSR (unstructured magnitude masks) and BSR (16x16 blocks kept by
  block norm: BSR cannot exploit unstructured zeros);
* the tiny GPT's whole forward (4 layers, d=128, 8x128 tokens) with every block linear in CSR
  (embeddings, attention and the LM head stay dense);
* greedy generation with that model (batch 1, 16-token prompt, 32 new tokens, no EOS stop):
  the evaluation harness's own decoder, where each step's matmuls are thin;
* CUDA only: 2:4 semi-structured weights (``to_sparse_semi_structured``) in fp16.

Times are medians over repeats; dense and sparse alternate order each repeat and the speedup
(dense / sparse) is the median of the per-repeat paired ratios. Numbers below 1.0x mean the
sparse kernel is slower than dense.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sparselm.model import GPT, GPTConfig
from sparselm.sparsity.mask_set import MaskSet
from sparselm.sparsity.masks import magnitude_mask
from sparselm.sparsity.pruning import nm_mask, one_shot_magnitude


@torch.no_grad()
def greedy_tokens(model: GPT, prompt: list[int], new: int) -> list[int]:
    """Arg-max decoding, one full forward per token (CSR block linears have no HF twin)."""
    ids = list(prompt)
    device = next(model.parameters()).device
    for _ in range(new):
        window = torch.tensor([ids[-model.config.block_size :]], device=device)
        ids.append(int(model(window).logits[0, -1].argmax()))
    return ids[len(prompt) :]


SPARSITIES = (0.5, 0.7, 0.8, 0.9)
LAYERS = (("tiny mlp_in", 512, 128), ("gpt2_small mlp_in", 3072, 768))
TOKENS = 1024
BLOCK = 16
# conf/model/tiny.yaml with the tiny scale's 4096-token vocabulary
TINY = GPTConfig(vocab_size=4096, n_layer=4, n_head=4, d_model=128, d_ff=512, block_size=128)
TINY_BATCH = (8, 128)


@dataclass
class Row:
    workload: str
    shape: str
    sparsity: str
    fmt: str
    dense_ms: float | None = None
    sparse_ms: float | None = None
    speedup: float | None = None
    note: str = ""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], object], device: torch.device, inner: int) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / inner * 1e3


@torch.no_grad()
def paired(
    dense: Callable[[], object],
    sparse: Callable[[], object],
    device: torch.device,
    repeats: int,
    inner: int = 3,
) -> tuple[float, float, float]:
    """(median dense ms, median sparse ms, median of per-repeat dense/sparse ratios)."""
    for fn in (dense, sparse):  # warm-up: kernel selection, allocator, MKL handles
        _time(fn, device, 1)
    d_ms, s_ms, ratios = [], [], []
    for r in range(repeats):
        if r % 2:
            s, d = _time(sparse, device, inner), _time(dense, device, inner)
        else:
            d, s = _time(dense, device, inner), _time(sparse, device, inner)
        d_ms.append(d)
        s_ms.append(s)
        ratios.append(d / s)
    return statistics.median(d_ms), statistics.median(s_ms), statistics.median(ratios)


def block_mask(weight: torch.Tensor, density: float, block: int = BLOCK) -> torch.Tensor:
    """Keep the blocks of largest Frobenius norm; the whole matrix at ~``density``."""
    rows, cols = weight.shape
    norms = weight.reshape(rows // block, block, cols // block, block).pow(2).sum((1, 3))
    keep = magnitude_mask(norms, density)
    return keep.repeat_interleave(block, 0).repeat_interleave(block, 1)


def linear_pair(
    x: torch.Tensor, w: torch.Tensor, w_sparse: torch.Tensor, bias: torch.Tensor
) -> tuple[Callable[[], torch.Tensor], Callable[[], torch.Tensor]]:
    """(dense forward, sparse forward) of one linear layer on the same input."""

    def dense() -> torch.Tensor:
        return F.linear(x, w, bias)

    def sparse() -> torch.Tensor:
        if w_sparse.layout in (torch.sparse_csr, torch.sparse_bsr):
            # sparse @ dense is torch's fast path for these layouts: y^T = W x^T
            return torch.sparse.mm(w_sparse, x.T).T + bias
        return F.linear(x, w_sparse, bias)  # 2:4 semi-structured is a tensor subclass

    return dense, sparse


def layer_rows(device: torch.device, repeats: int) -> list[Row]:
    rows: list[Row] = []
    gen = torch.Generator().manual_seed(0)
    for name, n_out, n_in in LAYERS:
        w = (torch.randn(n_out, n_in, generator=gen) * 0.02).to(device)
        b = torch.zeros(n_out, device=device)
        x = torch.randn(TOKENS, n_in, generator=gen).to(device)
        shape = f"{n_out}x{n_in}, {TOKENS} tok"
        for s in SPARSITIES:
            for fmt, mask in (
                ("CSR", magnitude_mask(w, 1 - s)),
                (f"BSR {BLOCK}x{BLOCK}", block_mask(w.cpu(), 1 - s)),
            ):
                wm = w * mask.to(device)
                row = Row(name, shape, f"{s:.0%}", fmt)
                try:
                    sp = wm.to_sparse_csr() if fmt == "CSR" else wm.to_sparse_bsr((BLOCK, BLOCK))
                    dense, sparse = linear_pair(x, wm, sp, b)
                    torch.testing.assert_close(sparse(), dense(), rtol=1e-3, atol=1e-3)
                    row.dense_ms, row.sparse_ms, row.speedup = paired(
                        dense, sparse, device, repeats
                    )
                except (RuntimeError, NotImplementedError) as err:
                    row.note = f"not supported: {str(err).splitlines()[0][:80]}"
                rows.append(row)
    return rows


class CSRLinear(nn.Module):
    """An ``nn.Linear`` whose weight is held in CSR; same function, sparse kernel."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = linear.weight.detach().to_sparse_csr()
        self.bias = linear.bias.detach() if linear.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        y = torch.sparse.mm(self.weight, flat.T).T
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], y.shape[-1])


def to_csr_model(model: GPT) -> GPT:
    for blk in model.blocks:
        blk.attn.qkv = CSRLinear(blk.attn.qkv)
        blk.attn.out = CSRLinear(blk.attn.out)
        blk.mlp.fc_in = CSRLinear(blk.mlp.fc_in)
        blk.mlp.fc_out = CSRLinear(blk.mlp.fc_out)
    return model


def model_rows(device: torch.device, repeats: int) -> list[Row]:
    rows = []
    b, t = TINY_BATCH
    x = torch.randint(0, TINY.vocab_size, (b, t), generator=torch.Generator().manual_seed(1))
    x = x.to(device)
    for s in SPARSITIES:
        torch.manual_seed(0)
        dense = GPT(TINY).to(device).eval()
        targets = dense.block_linears()
        MaskSet.from_targets(targets, one_shot_magnitude(targets, s)).apply_to_weights()
        sparse = GPT(TINY).to(device).eval()
        sparse.load_state_dict(dense.state_dict())
        to_csr_model(sparse)
        with torch.no_grad():
            torch.testing.assert_close(sparse(x).logits, dense(x).logits, rtol=1e-3, atol=1e-3)
        row = Row("tiny GPT forward", f"{b}x{t} tok", f"{s:.0%}", "CSR block linears")
        row.dense_ms, row.sparse_ms, row.speedup = paired(
            lambda dense=dense: dense(x), lambda sparse=sparse: sparse(x), device, repeats
        )
        rows.append(row)
    return rows


GEN_PROMPT, GEN_NEW = 16, 32


def generation_rows(device: torch.device, repeats: int) -> list[Row]:
    """Greedy decoding latency, dense vs CSR block linears, same masked weights."""
    rows = []
    prompt = torch.randint(
        0, TINY.vocab_size, (GEN_PROMPT,), generator=torch.Generator().manual_seed(2)
    )
    prompt = prompt.tolist()
    for s in SPARSITIES:
        torch.manual_seed(0)
        dense = GPT(TINY).to(device).eval()
        targets = dense.block_linears()
        MaskSet.from_targets(targets, one_shot_magnitude(targets, s)).apply_to_weights()
        sparse = GPT(TINY).to(device).eval()
        sparse.load_state_dict(dense.state_dict())
        to_csr_model(sparse)

        def run(model: GPT) -> list[int]:
            return greedy_tokens(model, prompt, GEN_NEW)

        if run(sparse) != run(dense):
            raise AssertionError(f"CSR and dense greedy outputs differ at sparsity {s}")
        row = Row("tiny GPT greedy generation", f"1x{GEN_PROMPT}+{GEN_NEW} tok", f"{s:.0%}",
                  "CSR block linears")  # fmt: skip
        row.dense_ms, row.sparse_ms, row.speedup = paired(
            lambda dense=dense: run(dense), lambda sparse=sparse: run(sparse), device, repeats, 1
        )
        rows.append(row)
    return rows


def semi_structured_rows(device: torch.device, repeats: int) -> list[Row]:
    """2:4 on CUDA (Ampere or newer), fp16; skipped elsewhere."""
    rows = []
    gen = torch.Generator().manual_seed(0)
    for name, n_out, n_in in LAYERS:
        w = torch.randn(n_out, n_in, generator=gen) * 0.02
        w = (w * nm_mask(w, 2, 4)).half().to(device)
        b = torch.zeros(n_out, dtype=torch.half, device=device)
        x = torch.randn(TOKENS, n_in, generator=gen).half().to(device)
        row = Row(name, f"{n_out}x{n_in}, {TOKENS} tok", "50% (2:4)", "2:4 semi-structured fp16")
        try:
            ws = torch.sparse.to_sparse_semi_structured(w)
            row.dense_ms, row.sparse_ms, row.speedup = paired(
                *linear_pair(x, w, ws, b), device, repeats
            )
        except (RuntimeError, NotImplementedError, ValueError) as err:
            row.note = f"not supported: {str(err).splitlines()[0][:80]}"
        rows.append(row)
    return rows


def table(rows: list[Row]) -> str:
    out = [
        "| workload | shape | sparsity | sparse format | dense ms | sparse ms | speedup |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.speedup is None:
            out.append(f"| {r.workload} | {r.shape} | {r.sparsity} | {r.fmt} | – | – | {r.note} |")
            continue
        mark = "faster" if r.speedup > 1.05 else ("slower" if r.speedup < 0.95 else "same")
        out.append(
            f"| {r.workload} | {r.shape} | {r.sparsity} | {r.fmt} | {r.dense_ms:.2f} | "
            f"{r.sparse_ms:.2f} | {r.speedup:.2f}x ({mark}) |"
        )
    return "\n".join(out)


def _load() -> str:
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "n/a"


def header(device: torch.device, argv: list[str], load_start: str) -> str:
    cmd = " ".join(["python", "benchmarks/sparse_inference.py", *map(shlex.quote, argv)])
    cpu = platform.processor() or platform.machine()
    machine = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{cpu}, {os.cpu_count()} cores, torch.set_num_threads({torch.get_num_threads()})"
    )
    return "\n".join(
        [
            f"# Sparse inference latency: dense vs sparse kernels ({device.type})",
            "",
            f"Command: `{cmd}`",
            "",
            f"Machine: {machine}; torch {torch.__version__}, Python {platform.python_version()}; "
            f"1-min load average {load_start} at start / {_load()} at end",
            "",
        ]
    )


NOTES = """
Notes:

- speedup = dense ms / sparse ms (median of paired per-repeat ratios); below 1.0x the sparse
  kernel loses to the dense matmul on the same, already-masked weight.
- CSR rows use unstructured magnitude masks (what SparseGPT and GMP produce); BSR rows use
  16x16 block masks at the same density, a different (coarser) pruning pattern.
- Whole-model rows replace every block linear (fused QKV, attention out, MLP in/out) by a CSR
  matmul; embeddings, attention and the tied LM head stay dense, so their time is unchanged.
- Pruning FLOP savings do not become wall-clock savings unless a sparse kernel beats the
  dense one at that density and shape; the table says where that happens on this machine.
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    load_start = _load()
    warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
    warnings.filterwarnings("ignore", message=".*Sparse BSR tensor support is in beta.*")
    rows = layer_rows(device, args.repeats) + model_rows(device, args.repeats)
    rows += generation_rows(device, args.repeats)
    if device.type == "cuda":
        rows += semi_structured_rows(device, args.repeats)
    text = header(device, argv, load_start) + "\n" + table(rows) + "\n" + NOTES
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
