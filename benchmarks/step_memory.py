"""Peak memory of one training step, counted tensor by tensor without running it.

    python benchmarks/step_memory.py [--batch 32 --seq 1024] [--out FILE.md]

The step (bf16 autocast forward, LM loss, backward, gradient clipping, AdamW) runs under
``FakeTensorMode``: every tensor has its real shape and dtype and no storage, so GPT-2 Small at
batch 32 x 1024 takes seconds on a laptop CPU. ``torch.distributed._tools.mem_tracker``
counts the live bytes by kind (parameters, gradients, optimizer state, activations saved for
backward, temporaries) and keeps the peak. It is the second step that is counted, so AdamW's
moments already exist, as in a long run.

What this is: eager PyTorch's own tensor accounting under the CPU autocast rules (bf16 matmuls
and attention, fp32 norms and softmax), for the plain full-logits loss against the chunked
LM-head loss (``train.loss_chunk``). What it is not: a GPU measurement. The CUDA caching
allocator adds fragmentation, ``torch.compile`` saves fewer activations (fused elementwise
ops), and CUDA autocast differs in details; ``gpu_throughput.py`` measures the real peak.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.mem_tracker import MemTracker

from sparselm.flops import load_model_config
from sparselm.lm_head_loss import ChunkedHeadLoss
from sparselm.model import GPT, GPTConfig, lm_loss

# the minimal GPT-2 trainer of the GPU target: about 21 GiB at batch 32 x 1024 on an H200
REFERENCE_PEAK_GIB = 21.0
KINDS = ("PARAM", "GRAD", "OPT", "ACT", "TEMP")


def one_step(model: GPT, optimizer: torch.optim.Optimizer, x: torch.Tensor, chunk: int) -> None:
    """The loop's step for a dense run (``train._Loop.step`` without logging and syncs)."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if chunk:
            loss = model(x, labels=x, head_loss=ChunkedHeadLoss(chunk)).loss
        else:
            loss = lm_loss(model(x).logits, x)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def peak_bytes(cfg: GPTConfig, batch: int, seq: int, chunk: int) -> dict[str, float]:
    """Peak live bytes of the second step, in total and by kind at the moment of the peak."""
    with FakeTensorMode():
        model = GPT.__new__(GPT)
        # a fake tensor has no values to draw: skip the (value-dependent) initialisation
        init, GPT.reset_parameters = GPT.reset_parameters, lambda self: None
        try:
            GPT.__init__(model, cfg)
        finally:
            GPT.reset_parameters = init
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
        x = torch.randint(0, cfg.vocab_size, (batch, seq))
        one_step(model, optimizer, x, chunk)  # creates AdamW's moments
        tracker = MemTracker()
        tracker.track_external(model, optimizer)
        with tracker:
            one_step(model, optimizer, x, chunk)
        snapshot = tracker.get_tracker_snapshot("peak")
    by_kind = next(iter(snapshot.values()))
    out = {"Total": float(by_kind["Total"])}
    for key, value in by_kind.items():
        name = getattr(key, "name", str(key))
        if name in KINDS:
            out[name] = float(value)
    return out


def report(model_name: str, vocab: int, batch: int, seq: int, chunks: list[int]) -> str:
    shape = load_model_config(model_name)
    keys = ("n_layer", "n_head", "d_model", "d_ff", "bias", "dropout")
    cfg = GPTConfig(vocab_size=vocab, block_size=seq, **{k: shape[k] for k in keys})
    gib = 2**30
    rows = []
    for chunk in [0, *chunks]:
        print(f"counting loss_chunk={chunk} ...", file=sys.stderr, flush=True)
        rows.append((chunk, peak_bytes(cfg, batch, seq, chunk)))
    plain = rows[0][1]["Total"]
    head = ["train.loss_chunk", *(f"{k} GiB" for k in KINDS), "peak GiB", "vs full logits"]
    head.append(f"vs {REFERENCE_PEAK_GIB:.0f} GiB")
    lines = [
        f"# Peak memory of one training step: {model_name}, vocab {vocab}, batch {batch} x {seq}",
        "",
        f"Command: `python {shlex.join(sys.argv)}`; torch {torch.__version__}.",
        "",
        "Eager tensor accounting under FakeTensorMode (bf16 autocast, CPU rules), not a GPU "
        "measurement: see the script's docstring. PARAM/GRAD/OPT: weights, gradients and AdamW "
        "moments (fp32); ACT: tensors saved for backward; TEMP: the rest, at the peak.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for chunk, r in rows:
        name = f"{chunk} (full logits)" if chunk == 0 else str(chunk)
        cells = [name, *(f"{r.get(k, 0.0) / gib:.2f}" for k in KINDS), f"{r['Total'] / gib:.2f}"]
        cells += [f"{r['Total'] / plain:.2f}x", f"{r['Total'] / gib / REFERENCE_PEAK_GIB:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gpt2_small", help="conf/model/<name>.yaml")
    p.add_argument("--vocab", type=int, default=50304, help="GPT-2's vocabulary padded to 64")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--chunks", type=int, nargs="+", default=[4096, 8192, 16384])
    p.add_argument("--out", type=Path, help="also write the Markdown to this file")
    args = p.parse_args(argv)
    if min(args.batch, args.seq, args.vocab, *args.chunks) < 1:
        p.error("--batch, --seq, --vocab and --chunks must be >= 1")
    return args


def main(argv: list[str] | None = None) -> Any:
    args = parse_args(argv)
    text = report(args.model, args.vocab, args.batch, args.seq, args.chunks)
    print(text, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
