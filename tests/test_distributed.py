"""Data-parallel training on 2 CPU processes (gloo): DDP and FSDP2 against one process.

One spawn of two ranks runs every distributed scenario (starting processes is the slow part);
the tests below check what each scenario left on disk against runs of a single process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import RandomTokens, toy_model
from safetensors.torch import load_file, save_file

from sparselm.checkpoint import latest_checkpoint, load_model_weights
from sparselm.distributed import SINGLE, DistContext, shard_model
from sparselm.errors import ConfigError
from sparselm.methods.raptr import RaptrConfig, RaptrHook
from sparselm.optim import OptimConfig, build_adamw
from sparselm.sparsity.static import StaticSparsity, StaticSparsityConfig
from sparselm.train import TrainConfig, TrainRun, train

STEPS = 6
OPTIM = OptimConfig(lr=1e-2, min_lr=1e-3, warmup_steps=2)
RAPTR = RaptrConfig(
    stages=(2, 4), reference_depth=4, fixed_layers=("first",), freeze_skipped_optimizer=True
)
# The toy runs are fp64. Sums over ranks and over micro-batches differ in order, and AdamW
# divides a near-zero gradient (the key bias, GELU units that are off) by sqrt(v) + eps: in fp32
# the rounding noise (~1e-7 relative) rivals eps = 1e-8 and becomes updates of up to ~lr·1e-2,
# a size that depends on the CPU's BLAS kernels. In fp64 the noise (~1e-16) stays far below
# eps, so an update moves by at most ~lr·1e-16/eps = 1e-10 per step; measured: <= 2e-12 after
# 6 steps. A real error (a rank's micro-batch lost or averaged twice) moves weights by ~lr.
# AdamW is also blind to a gradient's scale, so the logs' gradient norms check the averaging
# over ranks.
TOL = dict(atol=1e-8, rtol=1e-6)
LOG_REL = 1e-9  # losses and gradient norms: measured <= 6e-15


def _run(
    out: Path,
    ctx: DistContext = SINGLE,
    sparse: bool = True,
    parallel: str = "ddp",
    loss_chunk: int = 0,
):
    """A 4-layer toy run with RaPTr paths (skipped blocks get no gradient) and, if ``sparse``,
    a 50% static mask; 4 micro-batches per step over all ranks; ``loss_chunk`` > 0: the
    chunked LM-head loss (its head gradient comes from a custom autograd function). In fp64,
    losses included (see ``TOL``)."""
    model = shard_model(toy_model(seed=1, n_layer=4).double(), ctx, parallel)
    hooks = [RaptrHook(RAPTR, n_layer=4, total_steps=STEPS)]
    if sparse:
        cfg = StaticSparsityConfig(level=0.5, seed=4)
        hooks.append(StaticSparsity.from_config(model.block_linears(), cfg))
    cfg = TrainConfig(
        steps=STEPS,
        grad_accum=4,
        eval_every=3,
        eval_batches=3,  # 2 ranks: one gets 2 batches, the other 1
        ckpt_every=2,
        keep_checkpoints=10,
        parallel=parallel,
        loss_chunk=loss_chunk,
    )
    optimizer = build_adamw(model, OPTIM)
    return TrainRun(model, optimizer, RandomTokens(), cfg, OPTIM, out, hooks=hooks, dist=ctx)


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(latest_checkpoint(out) / "model.safetensors")


def _dump(run: TrainRun, name: str, out: Path, rank: int) -> None:
    """What this rank ends with: weights (full, gathered for FSDP) and its masks and paths."""
    from sparselm.checkpoint import model_tensors

    weights = model_tensors(run.model)
    if weights:
        save_file(weights, out / f"{name}_rank{rank}.safetensors")
    info = {"paths": [run.hooks[0].path(s) for s in range(STEPS)]}
    if len(run.hooks) > 1:
        info["mask_nnz"] = run.hooks[1].masks.nnz()
    (out / f"{name}_rank{rank}.json").write_text(json.dumps(info))


def _worker(rank: int, world: int, port: int, root: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    ctx = DistContext(rank, world, rank)
    out = Path(root)
    try:
        ddp = _run(out / "ddp", ctx)
        train(ddp)
        _dump(ddp, "ddp", out, rank)
        train(_run(out / "two_one", ctx), stop_at=3)  # resumed on one process by the test
        train(_run(out / "one_two", ctx))  # resumes a one-process checkpoint
        train(_run(out / "ddp_chunked", ctx, loss_chunk=24))
        train(_run(out / "fsdp_chunked", ctx, sparse=False, parallel="fsdp", loss_chunk=24))
        fsdp = _run(out / "fsdp", ctx, sparse=False, parallel="fsdp")
        train(fsdp)
        _dump(fsdp, "fsdp", out, rank)
        train(_run(out / "fsdp_two_one", ctx, sparse=False, parallel="fsdp"), stop_at=3)
        train(_run(out / "fsdp_one_two", ctx, sparse=False, parallel="fsdp"))
        try:
            train(_run(out / "fsdp_sparse", ctx, parallel="fsdp"))
        except ConfigError as e:
            (out / f"fsdp_sparse_error_rank{rank}.txt").write_text(str(e))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dist")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only contend with the two ranks
    try:
        train(_run(root / "ref"))  # one process, 4 micro-batches per step
        train(_run(root / "ref_dense", sparse=False))
        train(_run(root / "one_two"), stop_at=3)
        train(_run(root / "fsdp_one_two", sparse=False), stop_at=3)
        mp.spawn(_worker, args=(2, _free_port(), str(root)), nprocs=2, join=True)
        train(_run(root / "two_one"))  # resume the 2-rank checkpoint at step 3 on one process
        train(_run(root / "fsdp_two_one", sparse=False))
    finally:
        torch.set_num_threads(threads)
    return root


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], **TOL, msg=k)


def _assert_same_log(a: list[dict], b: list[dict]) -> None:
    assert [r["step"] for r in b] == [r["step"] for r in a] == list(range(1, STEPS + 1))
    for ra, rb in zip(a, b, strict=True):
        assert rb["tokens"] == ra["tokens"]  # the tokens of every rank are counted
        for key in ("train_loss", "grad_norm", "val_loss"):
            assert (key in rb) == (key in ra), key
            if key in ra:
                assert rb[key] == pytest.approx(ra[key], rel=LOG_REL), (key, ra["step"])


def test_ddp_two_ranks_equal_one_process_with_the_same_micro_batches(runs):
    _assert_close(_weights(runs / "ddp"), _weights(runs / "ref"))
    _assert_same_log(_log(runs / "ref"), _log(runs / "ddp"))


def test_masks_paths_and_weights_are_identical_on_both_ranks(runs):
    infos = [json.loads((runs / f"ddp_rank{r}.json").read_text()) for r in (0, 1)]
    assert infos[0] == infos[1]
    assert any(len(p) < 4 for p in infos[0]["paths"])  # some steps really skipped blocks
    w0, w1 = (load_file(runs / f"ddp_rank{r}.safetensors") for r in (0, 1))
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k  # replicas never drift apart
    qkv = w0["blocks.0.attn.qkv.weight"]
    assert int((qkv == 0).sum()) == qkv.numel() // 2  # the mask held on every rank


def test_checkpoints_are_written_once_by_rank_zero(runs):
    ckpts = runs / "ddp" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == [
        "latest",
        "step_00000002",
        "step_00000004",
        "step_00000006",
    ]
    state = json.loads((ckpts / "step_00000006" / "state.json").read_text())
    assert state["extra"]["world_size"] == 2


def test_resume_across_world_sizes_continues_the_same_run(runs):
    """2 -> 1 and 1 -> 2 ranks: the same micro-batches, so the same weights up to rounding."""
    ref = _weights(runs / "ref")
    for name in ("two_one", "one_two"):
        _assert_close(_weights(runs / name), ref)
        assert [r["step"] for r in _log(runs / name)] == list(range(1, STEPS + 1))


def test_fsdp_resumes_across_world_sizes(runs):
    """FSDP saves gathered weights and AdamW moments and loads them from full tensors."""
    ref = _weights(runs / "ref_dense")
    for name in ("fsdp_two_one", "fsdp_one_two"):
        _assert_close(_weights(runs / name), ref)
        _assert_same_log(_log(runs / "ref_dense"), _log(runs / name))


def test_fsdp_equals_one_process_and_saves_full_tensors(runs):
    ref = _weights(runs / "ref_dense")
    assert ref["wte.weight"].dtype == torch.float64
    _assert_close(_weights(runs / "fsdp"), ref)
    _assert_same_log(_log(runs / "ref_dense"), _log(runs / "fsdp"))
    _assert_close(load_file(runs / "fsdp_rank0.safetensors"), ref)
    assert not (runs / "fsdp_rank1.safetensors").exists()  # rank 1 gathers nothing
    model = toy_model(n_layer=4).double()  # a one-process model loads the gathered checkpoint
    load_model_weights(latest_checkpoint(runs / "fsdp"), model)
    torch.testing.assert_close(model.wte.weight, ref["wte.weight"], **TOL)


def test_chunked_head_loss_under_ddp_and_fsdp_equals_one_process_with_full_logits(runs):
    """The chunked loss sums its head gradient in a different order than autograd does: in
    fp64 the weights still match the full-logits run to ``TOL`` (measured: <= 1e-12)."""
    for name, ref in (("ddp_chunked", "ref"), ("fsdp_chunked", "ref_dense")):
        _assert_same_log(_log(runs / ref), _log(runs / name))
        _assert_close(_weights(runs / name), _weights(runs / ref))


def test_fsdp_with_a_hook_that_needs_full_tensors_is_a_one_line_error(runs):
    for rank in (0, 1):
        msg = (runs / f"fsdp_sparse_error_rank{rank}.txt").read_text()
        assert msg.startswith("train.parallel=fsdp: the static_sparsity hook") and "\n" not in msg


def _torchrun(stage: str, args: list[str], env: dict) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run(
        [*cmd, "-m", f"sparselm.cli.{stage}", "logger=none", "device=cpu", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def cli_env(data_dir, tmp_path_factory) -> dict:
    return os.environ | {
        "SPARSELM_DATA_DIR": str(data_dir),
        "SPARSELM_PREPARED_DIR": str(tmp_path_factory.mktemp("prepared")),
        "OMP_NUM_THREADS": "1",
    }


@pytest.fixture(scope="module")
def cli_pretrained(cli_env, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("torchrun") / "pretrain"
    # the chunked LM-head loss too: the config key reaches the loop under torchrun
    args = ["scale=smoke", "method=static", "method.level=0.5", "train.steps=4"]
    args.append("train.loss_chunk=256")
    _torchrun("pretrain", [*args, "train.grad_accum=2", f"hydra.run.dir={out}"], cli_env)
    return out


@pytest.mark.slow
def test_torchrun_pretrain_cli_on_two_processes(cli_pretrained):
    out = cli_pretrained
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["tokens"] == 4 * 2 * 8 * 64  # both ranks' tokens
    state = json.loads((latest_checkpoint(out) / "state.json").read_text())
    assert state["extra"]["world_size"] == 2
    assert "loss_chunk: 256" in (latest_checkpoint(out) / "config.yaml").read_text()
    steps = [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == [4]  # logged once (smoke logs every 5 steps and at the end)


@pytest.mark.slow
def test_torchrun_finetune_cli_on_two_processes(cli_pretrained, cli_env, tmp_path):
    out = tmp_path / "finetune"
    args = [f"pretrained={cli_pretrained}", "scale=smoke", "task=e2e", "train.steps=2"]
    _torchrun("finetune", [*args, "train.grad_accum=2", f"hydra.run.dir={out}"], cli_env)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["final_val_loss"] is not None


@pytest.mark.slow
def test_torchrun_sparse_finetune_cli_on_two_processes(cli_pretrained, cli_env, tmp_path):
    """SquareHead's sparse fine-tuning on the shared distributed path: two DDP ranks train the
    student rank 0 pruned, and match one process run on the same global batches."""
    args = [f"teacher={cli_pretrained}", "scale=smoke", "task=e2e", "train.steps=2"]
    args += ["prune=sparsegpt", "prune.sparsity=0.5", "prune.calibration_samples=8"]
    args += ["distill=ce_squarehead", "train.grad_accum=2"]
    _torchrun("sparse_finetune", [*args, f"hydra.run.dir={tmp_path / 'ddp'}"], cli_env)
    one = [*args, "logger=none", "device=cpu", f"hydra.run.dir={tmp_path / 'one'}"]
    proc = subprocess.run(
        [sys.executable, "-m", "sparselm.cli.sparse_finetune", *one],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {name: tmp_path / name for name in ("ddp", "one")}
    metrics = {name: json.loads((out / "metrics.json").read_text()) for name, out in runs.items()}
    assert metrics["ddp"]["mask_zero_outside"] and metrics["ddp"]["mask_nnz_unchanged"]
    assert metrics["ddp"]["tokens"] == metrics["one"]["tokens"]
    assert metrics["ddp"]["flops_total"] == metrics["one"]["flops_total"]
    state = json.loads((latest_checkpoint(runs["ddp"]) / "state.json").read_text())
    assert state["extra"]["world_size"] == 2
    masks = {n: load_file(latest_checkpoint(out) / "hooks.safetensors") for n, out in runs.items()}
    assert masks["ddp"].keys() == masks["one"].keys()
    assert all(torch.equal(masks["ddp"][k], masks["one"][k]) for k in masks["one"])
    # fp32: the ranks' gradient sum runs in another order than one process's accumulation, and
    # AdamW magnifies that rounding on near-zero gradients (see the fp64 note at the top)
    ddp_loss, one_loss = (metrics[n]["final_val_loss"] for n in ("ddp", "one"))
    assert ddp_loss == pytest.approx(one_loss, abs=1e-3), abs(ddp_loss - one_loss)
