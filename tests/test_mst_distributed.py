"""MST under data parallelism on 2 CPU processes (gloo): masks stay identical across ranks.

Each rank runs half of every step's micro-batches; DST reads the gradient after DDP's
all-reduce (the mean over ranks of the summed micro-batches) and draws its random growth from
(seed, step), so both ranks must take the same prune-and-grow decisions at every update.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import RandomTokens, toy_model
from safetensors.torch import load_file, save_file

from sparselm.distributed import SINGLE, DistContext
from sparselm.methods.hsa import HSAConfig
from sparselm.methods.mst import MSTConfig, build_hooks
from sparselm.optim import OptimConfig, build_adamw
from sparselm.sparsity.dst_schedule import DSTConfig
from sparselm.sparsity.variation import VariationConfig
from sparselm.train import TrainConfig, TrainRun, train

STEPS = 10
OPTIM = OptimConfig(lr=1e-2, min_lr=1e-3, warmup_steps=2)
# ΔT=2 with mixed growing (random draws must agree too), a warm-up / ultra / restoration
# schedule, and sparse attention in the ultra window
CFG = MSTConfig(
    dst=DSTConfig(interval=2, grow_mix_ratio=3.0, seed=5),
    variation=VariationConfig(warmup_frac=0.2, ultra_frac=0.6, s_max=0.8),
    hsa=HSAConfig(stride=4),
    target_reduction=None,
)


def _run(out: Path, ctx: DistContext = SINGLE) -> TrainRun:
    model = toy_model(seed=1)
    _, hooks = build_hooks(CFG, model, STEPS, seq_len=16)
    cfg = TrainConfig(steps=STEPS, grad_accum=4, eval_every=5, eval_batches=2, ckpt_every=5)
    optimizer = build_adamw(model, OPTIM)
    return TrainRun(model, optimizer, RandomTokens(), cfg, OPTIM, out, hooks=hooks, dist=ctx)


def _masks(run: TrainRun) -> dict[str, torch.Tensor]:
    return {name: m.to(torch.uint8) for name, m in run.hooks[0].masks.masks.items()}


def _dump(run: TrainRun, out: Path, name: str) -> None:
    save_file(_masks(run), out / f"{name}_masks.safetensors")
    weights = {
        k: v.contiguous() for k, v in run.model.state_dict().items() if k != "lm_head.weight"
    }
    save_file(weights, out / f"{name}_weights.safetensors")
    updates = [s for s in range(STEPS) if run.hooks[0].timeline.is_update_step(s)]
    (out / f"{name}.json").write_text(json.dumps({"updates": updates}))


def _worker(rank: int, world: int, port: int, root: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        run = _run(Path(root) / "ddp", DistContext(rank, world, rank))
        train(run)
        _dump(run, Path(root), f"rank{rank}")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mst_dist")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only contend with the two ranks
    try:
        save_file(_masks(_run(root / "init")), root / "initial_masks.safetensors")
        single = _run(root / "single")  # one process, the same 4 micro-batches per step
        train(single)
        _dump(single, root, "single")
        mp.spawn(_worker, args=(2, _free_port(), str(root)), nprocs=2, join=True)
    finally:
        torch.set_num_threads(threads)
    return root


def test_masks_and_weights_are_identical_on_both_ranks_after_every_update(runs):
    m0, m1 = (load_file(runs / f"rank{r}_masks.safetensors") for r in (0, 1))
    assert m0.keys() == m1.keys()
    for name in m0:
        assert torch.equal(m0[name], m1[name]), name
    w0, w1 = (load_file(runs / f"rank{r}_weights.safetensors") for r in (0, 1))
    for name in w0:
        assert torch.equal(w0[name], w1[name]), name
    updates = json.loads((runs / "rank0.json").read_text())["updates"]
    assert updates == [2, 4, 6, 8]  # prune-and-grow really ran, in every phase


def test_updates_moved_the_masks_and_hit_exact_counts(runs):
    initial = load_file(runs / "initial_masks.safetensors")
    final = load_file(runs / "rank0_masks.safetensors")
    assert any(not torch.equal(initial[n], final[n]) for n in final)
    model = toy_model(seed=1)
    _, hooks = build_hooks(CFG, model, STEPS, seq_len=16)
    dst = hooks[0]
    counts = dst.timeline.counts_at(8)  # the last update's targets
    for t, want in zip(dst.targets, counts, strict=True):
        assert int(final[t.name][t.rows].sum()) == want, t.name


def test_ranks_grow_from_the_gradient_of_all_micro_batches(runs):
    """The same masks as one process that ran every micro-batch itself, up to the rounding
    of a different summation order (a rank growing from its own half would differ a lot)."""
    single = load_file(runs / "single_masks.safetensors")
    ddp = load_file(runs / "rank0_masks.safetensors")
    same = sum(int((single[n] == ddp[n]).sum()) for n in single)
    total = sum(single[n].numel() for n in single)
    assert same / total >= 0.99
